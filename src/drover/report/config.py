"""The report stage's one typed config (every default in one place)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from drover.errors import ConfigError, DroverError


@dataclass
class ReportConfig:
    runs: list[str] = field(default_factory=list)  # run directories, their models side by side
    baseline: str | None = None   # the model row differences and tests are taken against (default: first row)
    out: str | None = None        # where report.html/.md/.json go (default: the first run)
    leaderboard: bool = False     # also leaderboard.csv and leaderboard.md

    def validate(self) -> None:
        if not self.runs:
            raise ConfigError("report: name at least one run directory")
        for root in self.runs:
            if not Path(root).is_dir():
                raise DroverError(f"{root}: run directory not found")

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path(self.runs[0])
