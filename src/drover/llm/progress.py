"""A one-line progress display for long batch jobs: done/total, rate, ETA, tokens, cost.

On a terminal it redraws one line (at most 10 times a second); when stderr is a file or
a pipe (CI, nohup) it prints a full line every `interval` seconds instead, so logs show
progress without a flood of carriage returns.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def _fmt_count(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.1f}{unit}"
    return f"{x:.0f}"


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    def __init__(self, desc: str, total: int | None, stream: TextIO | None = None, interval: float = 30.0,
                 enabled: bool = True):
        self.desc = desc or "llm"
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if not self.tty else 0.1
        self.enabled = enabled
        self.start = time.monotonic()
        self.last = 0.0
        self.done = 0
        self.extra: dict[str, float] = {}

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self.done}" + (f"/{self.total} {100 * self.done / max(1, self.total):.0f}%"
                                                  if self.total else "")]
        parts.append(f"{rate:.1f}/s")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"ETA {_fmt_time((self.total - self.done) / rate)}")
        else:
            parts.append(f"elapsed {_fmt_time(elapsed)}")
        tokens = self.extra.get("tokens", 0)
        if tokens:
            parts.append(f"{_fmt_count(tokens)} tok")
        if self.extra.get("cost"):
            parts.append(f"${self.extra['cost']:.2f}")
        if self.extra.get("hits"):
            parts.append(f"{_fmt_count(self.extra['hits'])} cached")
        if self.extra.get("errors"):
            parts.append(f"{int(self.extra['errors'])} errors")
        return " | ".join(parts)

    def update(self, done: int, extra: Callable[[], dict[str, float]] | None = None, **values: float) -> None:
        """Record progress; `extra` (tokens, cost, hits, errors) is only computed when a line is drawn."""
        self.done = done
        self.extra.update(values)
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            if extra is not None:
                self.extra.update(extra())
            self._write()

    def _write(self, final: bool = False) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and (self.done or self.tty):
            self._write(final=True)
