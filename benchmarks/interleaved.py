"""Run benchmark workers in fresh processes, alternating, and keep each one's fastest run.

On a shared machine, one trainer measured during a busy stretch looks slower than it is;
alternating the trainers and keeping the best of N makes the ratio the number to read.
A worker prints one line `RESULT {json}` with at least a `seconds` field.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def run_worker(cmd: list[str], name: str) -> dict | None:
    """One worker process; its RESULT line, or None (with its stderr shown) if it failed."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        print(f"{name} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1][7:])


def fastest_runs(commands: dict[str, list[str]], repeats: int) -> dict[str, dict]:
    """name -> the result of its fastest run, running every command `repeats` times in turn."""
    best: dict[str, dict] = {}
    for _ in range(repeats):
        for name, cmd in commands.items():
            result = run_worker(cmd, name)
            if result and (name not in best or result["seconds"] < best[name]["seconds"]):
                best[name] = result
    return best


def add_harness_arguments(parser: Any) -> None:
    """The flags every trainer benchmark shares: precision, threads, repeats, and the hidden
    worker flags the parent passes to each fresh process."""
    parser.add_argument("--precision", choices=["auto", "no", "bf16"], default="auto",
                        help="every trainer: bf16 autocast or fp32 (auto: bf16 where the CPU computes it natively)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per trainer (1: CPU time then measures work, not spinning; 0: torch's default)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs per trainer, interleaved; the fastest counts (robust to a shared machine)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)


def parse_harness(parser: Any) -> Any:
    """Parsed arguments with `--precision auto` resolved as drover's engine resolves it."""
    args = parser.parse_args()
    if args.precision == "auto":
        from drover.train.engine import resolve_precision

        args.precision = resolve_precision("auto") or "no"
    return args


def tiny_model(prefix: str, hidden: int, layers: int) -> tuple[Path, Path]:
    """(a fresh temporary directory, a tiny Llama saved in it) shared by every trainer of a run."""
    from drover.models import build_tiny

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    return tmp, build_tiny(tmp / "model", hidden=hidden, layers=layers, heads=max(1, hidden // 64))
