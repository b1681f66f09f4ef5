"""Inspect the persistent LLM cache of a run: hits, misses, errors, tokens, cost.

    drover cache stats runs/my-run          # reads runs/my-run/llm-cache.sqlite
    drover cache stats path/to/cache.sqlite --json

Hits and misses accumulate over every job that used the cache; entries, tokens and cost
are summed over the stored answers (per backend and model).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    stats = sub.add_parser("stats", help="show hits, misses, tokens and cost")
    stats.add_argument("run_dir", help="a run directory (or a cache .sqlite file)")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")


def cache_path(target: str) -> Path:
    from drover.errors import CacheError
    from drover.runs import RunDir

    path = Path(target)
    if path.is_dir():
        path = RunDir(path).llm_cache
    if not path.is_file():
        raise CacheError(f"{path}: no LLM cache here (a run directory holds llm-cache.sqlite once an LLM was called)")
    return path


def format_stats(stats: dict) -> str:
    lines = [f"cache:             {stats['path']}",
             f"entries:           {stats['entries']}",
             f"hits:              {stats['hits']}",
             f"misses:            {stats['misses']}",
             f"errors:            {stats['errors']}",
             f"prompt tokens:     {stats['prompt_tokens']}",
             f"completion tokens: {stats['completion_tokens']}",
             f"cost:              ${stats['cost']:.4f}"]
    if stats["models"]:
        lines.append("")
        lines.append(f"{'backend':<8} {'model':<32} {'kind':<10} {'entries':>8} {'prompt tok':>11} "
                     f"{'compl. tok':>11} {'cost $':>9} {'latency s':>9}")
        for m in stats["models"]:
            lines.append(f"{m['backend']:<8} {m['model'][:32]:<32} {m['kind']:<10} {m['entries']:>8} "
                         f"{m['prompt_tokens']:>11} {m['completion_tokens']:>11} {m['cost']:>9.4f} "
                         f"{m['mean_latency']:>9.3f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from drover.llm.cache import LLMCache

    with LLMCache(cache_path(args.run_dir)) as cache:
        stats = cache.stats()
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0
