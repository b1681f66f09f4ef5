"""Datasets by name or path, and seeded mixtures of them.

    data: [runs/x/data/answers.jsonl, alpaca]          # whole datasets
    mixture:                                            # sampled datasets
      answers: {count: 1000}                            # exactly 1000 records
      runs/y/data/ranked.jsonl: {fraction: 0.5}         # half of the records

A name that is not an existing file is looked up as `<dir>/<name>.jsonl` in the config's
`data_dirs` and then the run directory's `data/`; every name is resolved (or rejected with
the list of known names) before anything is loaded or trained. Sampling is without
replacement, seeded by (seed, name), and keeps the file order of the sampled records.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from drover.errors import ConfigError, DataError
from drover.records import Record, read_records


@dataclass
class DataSource:
    name: str
    path: Path
    count: int | None = None
    fraction: float | None = None


def _known_names(dirs: list[Path]) -> list[str]:
    return sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.jsonl")})


def resolve(name: str, dirs: list[Path]) -> Path:
    """A dataset name or path -> an existing JSONL file (ConfigError listing known names)."""
    from drover.errors import did_you_mean

    path = Path(name)
    if path.is_file():
        return path
    for d in dirs:
        candidate = d / f"{name}.jsonl"
        if candidate.is_file():
            return candidate
    known = _known_names(dirs)
    where = ", ".join(str(d) for d in dirs) or "(no data_dirs)"
    listing = f"; known names: {', '.join(known)}" if known else ""
    raise ConfigError(f"dataset {name!r} is neither a file nor a name found in {where}"
                      f"{did_you_mean(name, known)}{listing}")


def sources(data: list[str], mixture: dict, dirs: list[Path]) -> list[DataSource]:
    """Resolve every dataset of a config (no file is read yet beyond existence)."""
    out = [DataSource(name, resolve(name, dirs)) for name in data]
    for name, entry in mixture.items():
        out.append(DataSource(name, resolve(name, dirs), entry.count, entry.fraction))
    if not out:
        raise ConfigError("no training data: give `data: [FILE, ...]` or a `mixture:` (or --data FILE)")
    return out


def load(source: DataSource, seed: int) -> list[Record]:
    """All records of one source, or its seeded sample."""
    records = list(read_records(source.path))
    n = len(records)
    if source.count is None and source.fraction is None:
        return records
    if source.count is not None:
        if source.count > n:
            raise DataError(f"mixture: {source.name}: count {source.count} but the dataset has only {n} records "
                            f"(use `fraction: 1.0` for all of it)")
        k = source.count
    else:
        k = max(1, round(source.fraction * n))
    keep = sorted(random.Random(f"{seed}:{source.name}").sample(range(n), k))
    return [records[i] for i in keep]
