"""The run directory: one place for everything a run produces.

    runs/<name>/config.yaml  data/*.jsonl  llm-cache.sqlite  checkpoints/  eval/*.json
               stages/<stage>.json  report.html  log.jsonl

A stage marks itself done by writing `stages/<stage>.json` (atomically) with the hash
of its resolved config; a re-run with the same config skips it, a changed config
re-runs it, and an interrupted stage (no marker) resumes from its own partial outputs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drover.atomic import write_json, write_text
from drover.config import config_hash, dump_yaml
from drover.errors import ConfigError


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
        """Append one JSON line to log.jsonl (training metrics, stage events)."""
        self.ensure()
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"time": time.time(), "event": event, **fields}, default=str) + "\n")

    def _marker(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage.replace(' ', '-').replace('/', '-')}.json"

    def stage_done(self, stage: str, config: Any) -> bool:
        marker = self._marker(stage)
        if not marker.exists():
            return False
        try:
            return json.loads(marker.read_text())["config_hash"] == config_hash(config)
        except (ValueError, KeyError):
            return False

    def mark_done(self, stage: str, config: Any, summary: dict[str, Any] | None = None) -> None:
        write_json(self._marker(stage), {"stage": stage, "config_hash": config_hash(config),
                                         "finished": time.time(), "summary": summary or {}})

    def stage_summary(self, stage: str) -> dict[str, Any] | None:
        marker = self._marker(stage)
        if not marker.exists():
            return None
        return json.loads(marker.read_text()).get("summary")
