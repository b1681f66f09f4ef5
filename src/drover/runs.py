"""The run directory: one place for everything a run produces.

    runs/<name>/config.yaml  data/*.jsonl  llm-cache.sqlite  checkpoints/  eval/*.json
               stages/<stage>.json  report.html  log.jsonl

A stage marks itself done by writing `stages/<stage>.json` (atomically) with the digest
of its resolved config and the content fingerprints of its inputs. A re-run skips it only
when the config is the same, every recorded input still has the same fingerprint and its
recorded outputs still exist; anything else re-runs it. A stage whose items failed is
marked "failed" with the count, never "done", so a re-run retries exactly those items.
An interrupted stage (no marker) resumes from its own partial outputs.

A command run as a recipe stage reports what it read and what failed through
`report_stage(...)` (a JSON file named by `$DROVER_STAGE_STATUS`, set by the recipe runner);
run on its own it reports nothing and behaves the same.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drover.atomic import strict_dumps, write_json, write_text
from drover.config import config_hash, dump_yaml, to_dict
from drover.errors import ConfigError
from drover.identity import digest, path_fingerprint

STATUS_ENV = "DROVER_STAGE_STATUS"


def report_stage(inputs: list[str | Path] | None = None, failed: int = 0,
                 outputs: list[str | Path] | None = None) -> None:
    """Tell the recipe runner (if any) which files this stage read, which it wrote below the
    run directory (results: a deleted one makes the stage "missing"), and how many items failed.

    Repeated calls add up (paths are merged, failures summed); a no-op outside a recipe."""
    target = os.environ.get(STATUS_ENV)
    if not target:
        return
    path = Path(target)
    try:
        current = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        current = {}
    names = list(dict.fromkeys([*current.get("inputs", []), *(str(p) for p in inputs or [])]))
    written = list(dict.fromkeys([*current.get("outputs", []), *(str(p) for p in outputs or [])]))
    write_json(path, {"inputs": names, "outputs": written, "failed": int(current.get("failed", 0)) + int(failed)})


def read_stage_report(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"inputs": [], "outputs": [], "failed": 0}
    return {"inputs": list(data.get("inputs", [])), "outputs": list(data.get("outputs", [])),
            "failed": int(data.get("failed", 0))}


def fingerprints(paths: list[str | Path]) -> dict[str, str]:
    """{path: content fingerprint} of the paths that exist."""
    return {str(p): path_fingerprint(p) for p in paths if Path(p).exists()}


@dataclass
class RunDir:
    root: Path

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def llm_cache(self) -> Path:
        return self.root / "llm-cache.sqlite"

    @property
    def log_path(self) -> Path:
        return self.root / "log.jsonl"

    def ensure(self) -> "RunDir":
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ConfigError(f"run directory {self.root}: a file is in the way (give a folder name)") from None
        return self

    def save_config(self, config: Any, name: str = "config.yaml") -> Path:
        """Record a resolved config (never holds secrets: configs name env vars only)."""
        path = self.root / name
        write_text(path, dump_yaml(config))
        return path

    def log(self, event: str, **fields: Any) -> None:
        """Append one strict JSON line to log.jsonl (training metrics, stage events)."""
        self.ensure()
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(strict_dumps({"time": time.time(), "event": event, **fields}, default=str) + "\n")

    def truncate_log(self, after_step: int, events: tuple[str, ...] = ("train", "eval")) -> None:
        """Drop `events` logged after `after_step` (a resume redoes those steps and logs them
        again), so log.jsonl keeps exactly one line per step however often a run resumes."""
        if not self.log_path.exists():
            return
        kept = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a torn line from a kill mid-write
            if isinstance(event, dict) and event.get("event") in events and int(event.get("step", 0)) > after_step:
                continue
            kept.append(line + "\n")
        write_text(self.log_path, "".join(kept))

    def _marker(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage.replace(' ', '-').replace('/', '-')}.json"

    def status_file(self, stage: str) -> Path:
        """Where a recipe stage's command reports its inputs and failures (`report_stage`)."""
        marker = self._marker(stage)
        return marker.with_name(f".{marker.stem}.status.json")

    def stage_marker(self, stage: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self._marker(stage).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def stage_state(self, stage: str, config: Any) -> str:
        """"todo" (never finished), "stale" (finished under another config, or an input's
        content changed since), "failed" (finished with failed items), "missing" (finished,
        but an output is gone) or "done"."""
        marker = self.stage_marker(stage)
        if marker is None:
            return "todo"
        inputs = marker.get("inputs") or {}
        if marker.get("key") != digest(to_dict(config)) or fingerprints(list(inputs)) != inputs:
            return "stale"  # (a marker from before inputs were recorded has no key: stale too)
        if marker.get("status", "done") != "done":
            return "failed"
        if not all(Path(p).exists() for p in marker.get("outputs") or []):
            return "missing"
        return "done"

    def stage_done(self, stage: str, config: Any) -> bool:
        """Done with this config, on inputs whose content is unchanged, outputs still present."""
        return self.stage_state(stage, config) == "done"

    def mark_done(self, stage: str, config: Any, summary: dict[str, Any] | None = None,
                  inputs: dict[str, str] | None = None, outputs: list[str] | None = None, failed: int = 0) -> None:
        """Record a finished stage ("failed" with the count when items failed: not done)."""
        write_json(self._marker(stage), {"stage": stage, "status": "failed" if failed else "done",
                                         "failed": failed, "key": digest(to_dict(config)),
                                         "config_hash": config_hash(config), "inputs": inputs or {},
                                         "outputs": outputs or [], "finished": time.time(),
                                         "summary": summary or {}})

    def stage_summary(self, stage: str) -> dict[str, Any] | None:
        marker = self.stage_marker(stage)
        return None if marker is None else marker.get("summary")
