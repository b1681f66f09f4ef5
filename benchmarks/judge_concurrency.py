"""Judging 805 AlpacaEval pairs x 2 orders through the one LLM client, against a local
OpenAI-compatible server with simulated latency.

Shows that judging uses the client's concurrency (wall time against the sequential
lower bound: requests x latency) and that a re-run costs zero new requests (every answer
comes from the run's LLM cache, and the examples file already holds every judgment).

    .venv/bin/python benchmarks/judge_concurrency.py [--latency 0.05] [--concurrency 8 32 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from drover.judges import alpaca_eval as ae
from drover.judges.runner import JudgeCall, run_calls
from drover.llm.client import LLM
from drover.llm.config import LLMConfig
from drover.llm.testing import FakeOpenAIServer

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "alpaca_eval"


def both_order_calls() -> list[JudgeCall]:
    _, outputs = ae.load_outputs(DATA / "alpaca-7b" / "model_outputs.json")
    pairs = ae.make_pairs(outputs, "text_davinci_003")
    annotator = ae.load_annotator("alpaca_eval_gpt4")
    calls = []
    for pair in pairs:
        if pair.output_1 == pair.output_2:
            continue  # a tie without asking the judge, as `ae.build_calls` does
        for order, shown in (("ab", (pair.output_1, pair.output_2)), ("ba", (pair.output_2, pair.output_1))):
            calls.append(JudgeCall(id=f"{pair.index}/{order}", messages=annotator.messages(pair.instruction, *shown),
                                   prompt_id=annotator.prompt_id, parse=annotator.parse,
                                   decoding=dict(annotator.decoding), meta={"index": pair.index, "order": order}))
    return calls


def judge(server: FakeOpenAIServer, calls: list[JudgeCall], concurrency: int, run_dir: Path) -> tuple[float, dict]:
    config = LLMConfig.from_spec(f"{server.base_url}#fake", concurrency=concurrency)
    start = time.perf_counter()
    with LLM(config, cache_path=run_dir / "llm-cache.sqlite", progress=False) as llm:
        judgments = run_calls(llm, calls, "fake", run_dir / "examples.jsonl")
        stats = llm.stats.to_dict()
    assert len(judgments) == len(calls)
    return time.perf_counter() - start, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.05, help="simulated seconds per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--sequential-sample", type=int, default=40,
                        help="requests measured at concurrency 1 (the full sequential run would take n x latency)")
    args = parser.parse_args()

    calls = both_order_calls()
    n = len(calls)
    bound = n * args.latency
    rows = []
    with FakeOpenAIServer(delay=args.latency) as server, tempfile.TemporaryDirectory() as tmp:
        sample = calls[: args.sequential_sample]
        seconds, _ = judge(server, sample, 1, Path(tmp) / "seq")
        per_request = seconds / len(sample)
        rows.append(("1 (sampled)", f"{per_request * n:.1f} (est.)", n, len(sample), bound / (per_request * n)))
        for c in args.concurrency:
            run_dir = Path(tmp) / f"c{c}"
            run_dir.mkdir()
            seconds, stats = judge(server, calls, c, run_dir)
            rows.append((str(c), f"{seconds:.2f}", n, stats["misses"], bound / seconds))
            if c == args.concurrency[-1]:
                before = len(server.requests)
                seconds, stats = judge(server, calls, c, run_dir)
                rows.append((f"{c} re-run", f"{seconds:.2f}", n, len(server.requests) - before, bound / seconds))
                seconds, stats = judge_without_examples(server, calls, c, run_dir)
                rows.append((f"{c} re-run, cache only", f"{seconds:.2f}", n, stats["misses"], bound / seconds))

    print(f"{n} judge calls (805 AlpacaEval pairs x 2 orders; pairs with identical outputs are ties, not sent), "
          f"{args.latency * 1000:.0f} ms simulated latency; "
          f"sequential lower bound {bound:.1f} s")
    print(f"{'concurrency':<24}{'wall s':>14}{'calls':>8}{'new requests':>14}{'bound / wall':>14}")
    for name, wall, calls_n, new, speedup in rows:
        print(f"{name:<24}{wall:>14}{calls_n:>8}{new:>14}{speedup:>14.1f}")


def judge_without_examples(server: FakeOpenAIServer, calls: list[JudgeCall], concurrency: int,
                           run_dir: Path) -> tuple[float, dict]:
    """A re-run that lost its examples file: every answer must come from the LLM cache."""
    (run_dir / "examples.jsonl").unlink()
    return judge(server, calls, concurrency, run_dir)


if __name__ == "__main__":
    main()
