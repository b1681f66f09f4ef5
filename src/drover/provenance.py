"""Provenance: what produced a result or a saved model, recorded beside it.

One function, `provenance(...)`, builds the record every result file and saved model
carries: drover's version (and git commit when drover runs from a checkout), the versions
of Python and of the libraries that can change numbers (torch, transformers, accelerate,
peft), the device and precision, the fingerprints of the inputs and the resolved config.
Library versions are read from package metadata, so recording them imports nothing heavy.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from drover.identity import stamp_dir

LIBRARIES = ("torch", "transformers", "accelerate", "peft")
PROVENANCE_FILE = "provenance.json"


@functools.lru_cache(maxsize=1)
def _git_commit() -> str | None:
    """The commit of the checkout drover is imported from (None for an installed wheel)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return None
    return commit + ("-dirty" if dirty.stdout.strip() else "")


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str | None]:
    """drover, Python and library versions (None for a library that is not installed)."""
    from drover import __version__

    out: dict[str, str | None] = {"drover": __version__, "drover_git": _git_commit(),
                                  "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance(config: Any = None, inputs: dict[str, str | None] | None = None, device: str | None = None,
               precision: str | None = None) -> dict[str, Any]:
    """The provenance record: versions, device, precision, input fingerprints, resolved config."""
    from drover.config import to_dict

    return {"versions": versions(), "device": device, "precision": precision,
            "inputs": dict(inputs or {}), "config": to_dict(config) if config is not None else None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def stamp_model(model_dir: str | Path, record: dict[str, Any]) -> str:
    """Write `provenance.json` beside a saved model and fingerprint it; returns the fingerprint."""
    from drover.atomic import write_json

    model_dir = Path(model_dir)
    fingerprint = stamp_dir(model_dir)
    write_json(model_dir / PROVENANCE_FILE, {**record, "fingerprint": fingerprint})
    return fingerprint
