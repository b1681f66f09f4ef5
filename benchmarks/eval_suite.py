"""The whole benchmark suite (all 16 tasks) on the tiny model on this CPU, timed per task.

Runs `drover eval` twice into one run directory: a fresh run, then a forced re-run whose
model calls all come from the run's LLM cache (what an interrupted eval pays on resume).
Prints the per-task breakdown of both and the ratio fresh / cached (the baseline measured
in the same run). TyDi QA, Super-NI and Unnatural Instructions read the small official-
format files the tests write; ToxiGen uses a randomly initialised classifier and
TruthfulQA generation uses the tiny model as its own judge.

Paper-sized runs (MMLU's 14,042 questions x 4 scorings, 20 HumanEval samples of up to
512 tokens...) take hours on a CPU; by default each task is capped with --limit (per
subject/task/language/group for grouped benchmarks) and --max-tokens. --limit 0 and
--max-tokens 0 keep the tasks' own defaults.

    .venv/bin/python benchmarks/eval_suite.py [--limit 5] [--max-tokens 32] [--model DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from drover.evaluate.registry import TASKS
from drover.evaluate.runner import evaluate
from drover.evaluate.config import EvalConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_eval_suite import build_classifier, write_superni, write_tydiqa, write_unnatural  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--model", default=None, help="a local model dir (default: build the tiny model)")
    parser.add_argument("--samples", type=int, default=10, help="HumanEval samples per problem (paper: 20)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="drover-eval-bench-"))
    if args.model:
        model = args.model
    else:
        from drover.models import build_tiny

        model = str(build_tiny(work / "tiny"))
    data = work / "data"
    data.mkdir()
    write_tydiqa(data)
    write_superni(data)
    write_unnatural(data)
    classifier = build_classifier(Path(model), work / "classifier")
    options: dict[str, object] = {"codex_pass1.n": args.samples, "codex_pass10.n": max(10, args.samples)}
    if args.max_tokens:
        options["max_tokens"] = args.max_tokens
    names = TASKS.names()
    config = EvalConfig(model=model, tasks=names, limit=args.limit or None, chat_format="tulu", run_dir=str(work / "run"),
                        data_dir=str(data), toxigen_classifier=str(classifier), truthfulqa_judge=model, options=options)
    quiet = lambda _msg: None  # noqa: E731

    start = time.perf_counter()
    fresh = evaluate(config, log=quiet)
    fresh_s = time.perf_counter() - start
    start = time.perf_counter()
    cached = evaluate(dataclasses.replace(config, force=True), log=quiet)
    cached_s = time.perf_counter() - start

    print(f"eval suite on {model}: {len(names)} tasks, --limit {args.limit}, max_tokens {args.max_tokens or 'default'}")
    print(f"{'task':<18} {'n':>5} {'fresh s':>9} {'cached s':>9} {'tokens':>8}  primary metric")
    for a, b in zip(fresh, cached):
        tokens = int(a["usage"]["prompt_tokens"] + a["usage"]["completion_tokens"])
        value = a["metrics"].get(a["primary_metric"], float("nan"))
        print(f"{a['task']:<18} {a['n_examples']:>5} {a['time_s']:>9.2f} {b['time_s']:>9.2f} {tokens:>8}  "
              f"{a['primary_metric']} = {value:.2f}")
    print(f"total: fresh {fresh_s:.1f} s, re-run from the LLM cache {cached_s:.1f} s; "
          f"ratio fresh/cached = {fresh_s / max(cached_s, 1e-9):.1f}x")
    print(f"outputs: {run}/eval/")


if __name__ == "__main__":
    main()
