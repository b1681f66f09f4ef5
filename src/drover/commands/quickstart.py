"""The embedded end-to-end demo: `drover run quickstart` into runs/quickstart.

Builds a tiny local model, serves it as teacher and judge, generates answers to
shipped instructions, fine-tunes a tiny base model on them, runs a subset of the
benchmarks and judges, and writes an HTML report. CPU only, nothing downloaded.
Outputs are gibberish (the models are tiny and random); what it shows is every stage
of the pipeline working end to end. Re-running continues where it stopped.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the quickstart recipe")
    parser.add_argument("--force", action="store_true", help="re-run every stage")


def run(args: argparse.Namespace) -> int:
    from drover.commands import run as run_command

    ns = argparse.Namespace(recipe="quickstart", overrides=args.overrides, only="", force=args.force, list=False)
    return run_command.run(ns)
