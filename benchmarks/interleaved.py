"""Run benchmark workers in fresh processes, alternating, and keep each one's fastest run.

On a shared machine, one trainer measured during a busy stretch looks slower than it is;
alternating the trainers and keeping the best of N makes the ratio the number to read.
A worker prints one line `RESULT {json}` with at least a `seconds` field.
"""

from __future__ import annotations

import json
import subprocess
import sys


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
