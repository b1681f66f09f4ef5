"""Every judge by name (one registration site): the `drover judge` subcommands.

Each entry is a `drover.judges.judge.Judge` (lazy "module:attr", so `drover judge --help`
imports none of them until asked).
"""

from __future__ import annotations

from drover.registry import Registry

_J = "drover.judges"

JUDGES: Registry = Registry("judge", {
    "vicuna": f"{_J}.vicuna:JUDGE",
    "alpaca-eval": f"{_J}.alpaca_eval:JUDGE",
    "mt-bench": f"{_J}.mt_bench:JUDGE",
    "rank": f"{_J}.listwise_eval:JUDGE",
    "meta": f"{_J}.llmbar:JUDGE",
    "bias": f"{_J}.bias:JUDGE",
    "truthfulqa": f"{_J}.truthfulqa:JUDGE",
})
