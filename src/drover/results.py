"""The one result writer: benchmark and judge results, per model, keyed by content.

Layout (one folder per model, so base, SFT and DPO results sit side by side and nothing
overwrites another model's numbers):

    RUN/eval/<model-slug>/<name>.json             the result record
    RUN/eval/<model-slug>/<name>.examples.jsonl   one line per example / judgment

A record is a dict with at least:

    {"kind": "benchmark" | "judge", "name": str,
     "model": {"label": str, "spec": str, "fingerprint": str | None,
               "source": str},  # optional: where the model lives (eval refuses another source under one label)
     "key": str,            # identity.digest of (input fingerprints + resolved settings)
     "metrics": {name: float | None}, "settings": {...}, "n_examples": int,
     "failures": int,       # items that produced no verdict / no answer (never guessed)
     "examples_file": "eval/<model-slug>/<name>.examples.jsonl"}

Every JSON written here is strict (NaN and Infinity become null) and the record is
written after its examples, so an existing record means a finished result. `find_result`
returns a previous record only when its `key` equals the new one: a resume by content.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from drover.atomic import strict, write_json
from drover.errors import InputError
from drover.records import write_jsonl

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def model_label(spec: str, run_root: str | Path, name: str = "") -> str:
    """`name` if given; a local model directory relative to the run (`train/sft/model`), else
    as given; an endpoint's served model name (its URL and port change between runs)."""
    if name:
        return name
    path = Path(spec.removeprefix("hf:"))
    if "://" not in spec and path.is_dir():
        try:
            return path.resolve().relative_to(Path(run_root).resolve()).as_posix()
        except ValueError:
            return str(path)
    for sep in ("#", "openai:"):
        if sep in spec:
            return spec.rsplit(sep, 1)[1]
    return spec.partition("@")[0] or spec


def model_slug(label: str) -> str:
    """A file-system-safe folder name for a model label ("train/sft/model" -> "train-sft-model")."""
    slug = _UNSAFE.sub("-", label).strip("-.")
    return slug or "model"


def result_path(run_root: str | Path, model_label: str, name: str) -> Path:
    return Path(run_root) / "eval" / model_slug(model_label) / f"{name}.json"


def examples_path(run_root: str | Path, model_label: str, name: str) -> Path:
    return Path(run_root) / "eval" / model_slug(model_label) / f"{name}.examples.jsonl"


def read_result(path: str | Path) -> dict[str, Any]:
    """A result record, or an InputError naming the file (a corrupt result is never skipped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(path, None, None, "is not UTF-8 text; expected a drover result (JSON)") from None
    except OSError as exc:
        raise InputError(path, None, None, f"cannot read ({exc.strerror or exc})") from None
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise InputError(path, getattr(exc, "lineno", None), None, f"not valid JSON ({exc})") from None
    if not isinstance(record, dict):
        raise InputError(path, None, None, "expected a JSON object (a drover result)")
    return record


def find_result(run_root: str | Path, model_label: str, name: str, key: str) -> dict[str, Any] | None:
    """The finished record for (model, name) if it was computed from the same inputs and settings."""
    path = result_path(run_root, model_label, name)
    if not path.exists():
        return None
    try:
        record = read_result(path)
    except InputError:
        return None  # a torn or foreign file is recomputed, then replaced
    return record if record.get("key") == key and not record.get("failures") else None


def write_result(run_root: str | Path, record: dict[str, Any], examples: Iterable[dict[str, Any]]) -> Path:
    """Write examples, then the record (strict JSON); returns the record's path."""
    label = record["model"]["label"]
    name = record["name"]
    ex_path = examples_path(run_root, label, name)
    write_jsonl(ex_path, [strict(e) for e in examples])
    record = {**record, "examples_file": str(ex_path.relative_to(Path(run_root)))}
    path = result_path(run_root, label, name)
    write_json(path, strict(record))
    return path


def iter_results(run_root: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Every result record under RUN/eval (all models), optionally of one kind; corrupt files raise."""
    root = Path(run_root) / "eval"
    out = []
    for path in sorted(root.glob("*/*.json")):
        record = read_result(path)
        if kind is None or record.get("kind") == kind:
            out.append(record)
    return out
