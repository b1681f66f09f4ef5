"""LLM judges: a contract and registry over the one LLM client, prompts, typed verdict parsers.

`judge.py` is the contract (what a judge asks, how it parses, how it aggregates, the
Constraint of its verdict), `registry.py` names every judge, `stage.py` runs one and writes
its result through `drover.results`, `runner.py` is the resumable call loop. Each judge
module also exposes its `build_prompt`/`parse` functions as plain functions (prompt texts
live in `resources/`), so data generation (`drover generate feedback|rank`) and evaluation
(`drover judge`) share them. Keep this package import-light: no torch, no HTTP clients at
import time.
"""
