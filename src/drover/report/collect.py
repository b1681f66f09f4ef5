"""Gather what a run directory holds into one plain structure for the report.

Reads only files the stages write: `config.yaml`, `stages/*.json`, every `log.jsonl`
(training curves), `eval/*.json` (benchmarks and judges), `stats/*.json` + `*.png`
(data statistics) and the LLM cache (tokens and cost).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainingCurve:
    name: str                                  # the training stage (relative directory)
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    tokens_per_s: list[float] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContents:
    root: Path
    configs: dict[str, str] = field(default_factory=dict)        # relative path -> YAML text
    stages: list[dict[str, Any]] = field(default_factory=list)    # stage markers
    curves: list[TrainingCurve] = field(default_factory=list)
    benchmarks: list[dict[str, Any]] = field(default_factory=list)
    judges: list[dict[str, Any]] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)     # {"name", "summary", "images": [paths]}
    llm_usage: list[dict[str, Any]] = field(default_factory=list)  # per cache file


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _curves(root: Path) -> list[TrainingCurve]:
    curves = []
    for log in sorted(root.rglob("log.jsonl")):
        curve = TrainingCurve(name=str(log.parent.relative_to(root)) or ".")
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "train" and "step" in event and "loss" in event:
                curve.steps.append(int(event["step"]))
                curve.loss.append(float(event["loss"]))
                curve.lr.append(float(event.get("lr", float("nan"))))
                curve.tokens_per_s.append(float(event.get("tokens_per_s", float("nan"))))
            elif event.get("event") in ("train_end", "summary"):
                curve.summary = {k: v for k, v in event.items() if k not in ("event", "time")}
        if curve.steps:
            curves.append(curve)
    return curves


def _llm_usage(root: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(root.rglob("llm-cache*.sqlite")):
        try:
            from drover.llm.cache import LLMCache

            with LLMCache(path) as cache:
                stats = cache.stats()
        except Exception as exc:  # a report must render even if one cache is unreadable
            stats = {"error": str(exc)}
        for model in stats.pop("models", None) or [{}]:
            rows.append({"cache": f"{path.relative_to(root)} {model.get('model', '')} {model.get('kind', '')}".strip(),
                         **stats, **model})
    return rows


def collect(root: str | Path) -> RunContents:
    root = Path(root)
    run = RunContents(root=root)
    for cfg in sorted(root.rglob("config*.yaml")):
        if "checkpoints" in cfg.parts:
            continue
        run.configs[str(cfg.relative_to(root))] = cfg.read_text(encoding="utf-8", errors="replace")
    for marker in sorted((root / "stages").glob("*.json"), key=lambda p: p.stat().st_mtime):
        data = _read_json(marker)
        if isinstance(data, dict):
            run.stages.append(data)
    run.curves = _curves(root)
    for result in sorted([*(root / "eval").glob("*.json"), *(root / "eval").glob("*/*.json")]):
        data = _read_json(result)
        if not isinstance(data, dict) or "metrics" not in data:
            continue
        data["_file"] = str(result.relative_to(root))
        if isinstance(data.get("model"), dict):  # per-model results (drover.results): shown by label
            data["model_info"], data["model"] = data["model"], data["model"].get("label", "?")
        if isinstance(data["metrics"], dict):  # strict JSON writes NaN as null; the tables' arithmetic wants NaN
            data["metrics"] = {k: math.nan if v is None else v for k, v in data["metrics"].items()}
        (run.judges if data.get("kind") == "judge" else run.benchmarks).append(data)
    for summary in sorted(root.glob("stats/**/*.json")):
        data = _read_json(summary)
        if isinstance(data, dict):
            images = sorted(str(p) for p in summary.parent.glob("*.png"))
            run.stats.append({"name": str(summary.relative_to(root)), "summary": data, "images": images})
    run.llm_usage = _llm_usage(root)
    return run
