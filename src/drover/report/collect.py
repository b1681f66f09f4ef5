"""Gather what one or more run directories hold into one plain structure for the report.

Results come through `drover.results` (RUN/eval/<model-slug>/<name>.json, every model
of every run): a corrupt result file is an InputError naming it, never skipped. Run
directories written before results lived per model (RUN/eval/<name>.json, the model a
plain string) are read too, through the same reader, and shown the same way.

Besides results: `config.yaml` files (a recipe's is shown resolved), `stages/*.json`,
every `log.jsonl` (training curves: every numeric field of every logged step),
`stats/**` (data statistics and their figures) and the LLM caches (tokens and cost).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drover.errors import InputError
from drover.results import read_result, result_path

_NOT_SERIES = {"step", "epoch", "time"}
JUDGED_KINDS = ("judge", "human")


@dataclass
class TrainingCurve:
    """One training stage's log: `series[event/field]` = [(step, value)]."""

    name: str                                  # the training stage (directory relative to its run)
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return max((len(v) for v in self.series.values()), default=0)


def legacy_label(spec: str, root: Path) -> str:
    """A readable name for an old record's model spec: "hf:runs/q/train/sft/model" -> "train/sft/model"."""
    path = spec.split(":", 1)[1] if ":" in spec and not spec.startswith(("/", "http")) else spec
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return spec


@dataclass
class Result:
    """One result record of one model, with where it came from."""

    record: dict[str, Any]
    root: Path                                 # its run directory
    path: Path                                 # the record file
    row: str = ""                              # the model's name in tables (set by `collect`)
    _examples: list[dict[str, Any]] | None = None
    _values: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.record.get("kind", "benchmark"))

    @property
    def judged(self) -> bool:
        """A judge's or human raters' result (per-judgment examples), not a benchmark's."""
        return self.kind in JUDGED_KINDS

    @property
    def name(self) -> str:
        return str(self.record.get("name") or self.record.get("task") or self.path.stem)

    @property
    def task(self) -> str:
        """The benchmark or judge protocol (e.g. mmlu_0shot, alpaca_eval_v2), for grouping models."""
        return str(self.record.get("task") or self.name)

    @property
    def model(self) -> dict[str, Any]:
        model = self.record.get("model")
        if isinstance(model, dict):
            return model
        return {"label": legacy_label(str(model or "?"), self.root), "spec": str(model or "?"), "fingerprint": None}

    @property
    def label(self) -> str:
        return str(self.model.get("label") or self.model.get("spec") or "?")

    @property
    def metrics(self) -> dict[str, float | None]:
        return dict(self.record.get("metrics") or {})

    def _declared(self, field_name: str, task_attr: str) -> Any:
        """A record field, else what the benchmark's registered task declares, else None."""
        if field_name in self.record:
            return self.record[field_name]
        if self.kind == "benchmark":
            from drover.evaluate.registry import TASKS

            if self.task in TASKS:
                return getattr(TASKS.get(self.task), task_attr, None)
        return None

    @property
    def primary(self) -> str:
        metric = self._declared("primary_metric", "primary_metric")
        return str(metric) if metric else next(iter(self.metrics), "")

    @property
    def higher_is_better(self) -> bool:
        declared = self._declared("higher_is_better", "higher_is_better")
        return True if declared is None else bool(declared)

    @property
    def title(self) -> str:
        return str(self._declared("title", "title") or self.task)

    @property
    def failure_list(self) -> list[dict[str, Any]]:
        listed = (self.record.get("breakdown") or {}).get("failures")
        return listed if isinstance(listed, list) else []

    @property
    def failures(self) -> int:
        count = self.record.get("failures")
        if isinstance(count, list):
            return len(count)
        if isinstance(count, (int, float)) and not isinstance(count, bool):
            return int(count)
        if self.failure_list:
            return len(self.failure_list)
        n_failed = self.metrics.get("n_failed")
        return int(n_failed) if isinstance(n_failed, (int, float)) else 0

    @property
    def examples_path(self) -> Path | None:
        name = self.record.get("examples_file")
        if not name:
            return None
        for candidate in (self.root / name, self.path.parent / name):
            if candidate.exists():
                return candidate
        return self.root / name

    def examples(self) -> list[dict[str, Any]]:
        """The per-example lines ([] when the file is missing); a corrupt line is an InputError."""
        if self._examples is None:
            path = self.examples_path
            rows: list[dict[str, Any]] = []
            if path is not None and path.is_file():
                with open(path, encoding="utf-8", errors="replace") as handle:
                    for lineno, line in enumerate(handle, 1):
                        if not line.strip():
                            continue
                        try:
                            row = json.loads(line)
                        except ValueError as exc:
                            raise InputError(path, lineno, None, f"not valid JSON ({exc})") from None
                        if not isinstance(row, dict):
                            raise InputError(path, lineno, None, "expected a JSON object per line")
                        rows.append(row)
            if self.judged:
                _add_judged_outputs(rows, self.record)
            self._examples = rows
        return self._examples

    def values(self, metric: str) -> Any:
        """The per-example values behind `metric` (a `scores.MetricValues`, or None), computed once."""
        if metric not in self._values:
            from drover.report.scores import metric_values

            self._values[metric] = metric_values(self.record, self.examples(), metric)
        return self._values[metric]


def _judged_outputs(path: Path) -> dict[str, tuple[str, str]]:
    """{id: (prompt, answer)} of a Conversation JSONL of judged answers ({} when it cannot be read)."""
    from drover.errors import DroverError
    from drover.records import Conversation, read_records

    out = {}
    try:
        for record in read_records(path):
            if isinstance(record, Conversation) and record.last_assistant is not None:
                prompt = "\n".join(m.content for m in record.prompt_messages if m.role == "user")
                out[record.id] = (prompt, record.last_assistant)
    except (DroverError, OSError, ValueError):
        return {}
    return out


def _add_judged_outputs(rows: list[dict[str, Any]], record: dict[str, Any]) -> None:
    """Give judge examples without `output` the judged answer and its prompt, from the answers file
    the judge's settings name (`model_outputs`), matched by question id ("1" ~ "vicuna_1")."""
    from drover.report.scores import pair_id

    source = (record.get("settings") or {}).get("model_outputs")
    if not isinstance(source, str) or not source.endswith(".jsonl") or not Path(source).is_file():
        return
    answers = _judged_outputs(Path(source))
    by_suffix = {key.rsplit("_", 1)[-1]: value for key, value in answers.items()}
    for row in rows:
        if "output" in row:
            continue
        key = pair_id(row, "judge")
        found = answers.get(key) or by_suffix.get(key)
        if found is not None:
            row.setdefault("instruction", found[0])
            row["output"] = found[1]


@dataclass
class RunContents:
    root: Path
    configs: dict[str, Any] = field(default_factory=dict)         # relative path -> resolved text
    stages: list[dict[str, Any]] = field(default_factory=list)    # stage markers
    curves: list[TrainingCurve] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)     # {"name", "summary", "images": [paths]}
    llm_usage: list[dict[str, Any]] = field(default_factory=list)  # per cache file and model


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
            if not isinstance(event, dict):
                continue
            kind = str(event.get("event", ""))
            if kind == "summary" or kind == "train_end":
                curve.summary = {k: v for k, v in event.items() if k not in ("event", "time")}
            elif isinstance(event.get("step"), int):
                for key, value in event.items():
                    if key in _NOT_SERIES or isinstance(value, bool) or not isinstance(value, (int, float)):
                        continue
                    name = key if kind == "train" else f"{kind}/{key}"
                    curve.series.setdefault(name, []).append((event["step"], float(value)))
        if curve.series:
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


def resolved_recipe(text: str) -> str | None:
    """A recipe's config.yaml as the commands it ran, every ${var} substituted; None if not a recipe."""
    import yaml

    from drover.config import from_dict
    from drover.errors import DroverError
    from drover.recipes import Recipe, base_variables, resolve

    try:
        data = yaml.safe_load(text)
        if not isinstance(data, dict) or "stages" not in data:
            return None
        recipe = from_dict(Recipe, data, where="config.yaml")
        variables = base_variables(recipe)
    except (DroverError, yaml.YAMLError, TypeError, ValueError):
        return None
    for name in recipe.services:
        variables.setdefault(f"services.{name}.url", f"<URL of service {name}, chosen at start>")
    lines = [f"# recipe {recipe.name}: run_dir = {variables['run_dir']}"]
    for stage in recipe.stages:
        try:
            args = [resolve(str(a), variables, f"stage {stage.name}") for a in stage.args]
        except DroverError:
            return None
        lines.append(f"{stage.name}: drover {stage.command} " + " ".join(args))
    return "\n".join(lines)


def _checked(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """The fields a report reads, with the types the result writers give them (a hand-edited
    or damaged record is named, never rendered as a wrong number or a traceback)."""
    metrics = record.get("metrics")
    if not isinstance(metrics, dict):
        raise InputError(path, None, "metrics", "expected an object {name: number or null}")
    for name, value in metrics.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InputError(path, None, f"metrics.{name}", f"expected a number or null, got {value!r:.60}")
    model = record.get("model")
    if isinstance(model, dict):
        for key in ("label", "spec"):
            if model.get(key) is not None and not isinstance(model[key], str):
                raise InputError(path, None, f"model.{key}", "expected a string")
    elif model is not None and not isinstance(model, str):
        raise InputError(path, None, "model", "expected an object {label, spec, fingerprint} or a string")
    for key in ("breakdown", "standard_errors"):
        if record.get(key) is not None and not isinstance(record[key], dict):
            raise InputError(path, None, key, "expected an object")
    for key in ("name", "task", "kind", "primary_metric", "title"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise InputError(path, None, key, "expected a string")
    return record


def _results(root: Path) -> list[Result]:
    out = []
    for path in sorted((root / "eval").glob("*/*.json")):
        record = _checked(read_result(path), path)
        label = record["model"]["label"] if isinstance(record.get("model"), dict) else str(record.get("model"))
        out.append(Result(record, root, result_path(root, label, str(record.get("name")))))
    # Run directories from before per-model results: RUN/eval/<name>.json.
    for path in sorted((root / "eval").glob("*.json")):
        if path.name.endswith(".annotations.json"):
            continue
        out.append(Result(_checked(read_result(path), path), root, path))
    return out


def collect_run(root: str | Path) -> RunContents:
    root = Path(root)
    run = RunContents(root=root)
    for cfg in sorted(root.rglob("config*.yaml")):
        if "checkpoints" in cfg.parts:
            continue
        text = cfg.read_text(encoding="utf-8", errors="replace")
        run.configs[str(cfg.relative_to(root))] = resolved_recipe(text) or text
    for marker in sorted((root / "stages").glob("*.json"), key=lambda p: p.stat().st_mtime):
        data = _read_json(marker)
        if isinstance(data, dict):
            run.stages.append(data)
    run.curves = _curves(root)
    run.results = _results(root)
    for summary in sorted(root.glob("stats/**/*.json")):
        data = _read_json(summary)
        if isinstance(data, dict):
            images = sorted(str(p) for p in summary.parent.glob("*.png"))
            run.stats.append({"name": str(summary.relative_to(root)), "summary": data, "images": images})
    run.llm_usage = _llm_usage(root)
    return run


def run_names(roots: list[Path]) -> dict[Path, str]:
    """The shortest trailing part of each run's path that tells the runs apart
    (runs/a/quickstart and runs/b/quickstart -> "a/quickstart", "b/quickstart")."""
    unique = list(dict.fromkeys(roots))
    parts = {root: root.resolve().parts for root in unique}
    for depth in range(1, max((len(p) for p in parts.values()), default=1) + 1):
        names = {root: "/".join(parts[root][-depth:]) for root in unique}
        if len(set(names.values())) == len(unique):
            return names
    return {root: str(root.resolve()) for root in unique}


def name_rows(results: list[Result]) -> None:
    """Give every result its row name: the model label, suffixed with the run's name where the
    same label appears in two runs (two rows, never one merged row or bar)."""
    roots_of: dict[str, list[Path]] = {}
    for r in results:
        if r.root not in roots_of.setdefault(r.label, []):
            roots_of[r.label].append(r.root)
    for r in results:
        roots = roots_of[r.label]
        r.row = r.label if len(roots) == 1 else f"{r.label} ({run_names(roots)[r.root]})"
    # One model judged twice on one protocol (two judges, two references, under two --name):
    # each result keeps its own row, named by the result, instead of the last one read winning.
    seen: dict[tuple[str, str], int] = {}
    for r in results:
        seen[(r.row, r.task)] = seen.get((r.row, r.task), 0) + 1
    for r in results:
        if seen[(r.row, r.task)] > 1:
            r.row = f"{r.row} ({r.name})"


def collect(roots: list[str | Path]) -> list[RunContents]:
    """Every run, results named for the tables; a corrupt result raises InputError."""
    runs = [collect_run(root) for root in roots]
    name_rows([r for run in runs for r in run.results])
    return runs
