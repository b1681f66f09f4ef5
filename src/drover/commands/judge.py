"""LLM-as-judge evaluations.

  drover judge vicuna      --judge SPEC --model-outputs FILE [--reference gpt35|FILE]
  drover judge alpaca-eval --judge SPEC --model-outputs FILE [--version v1|v2]
  drover judge mt-bench    --judge SPEC --model-outputs FILE [--mode single|pairwise --baseline-outputs FILE]
  drover judge rank        --judge SPEC --model-outputs A B [C ...]
  drover judge meta        --judge SPEC --strategy vanilla|rules|metrics|reference|metrics-reference-rules|swap
  drover judge bias        --annotations FILE [FILE ...]

SPEC is an LLM spec (openai:gpt-4, http://127.0.0.1:8000/v1#model, ...). Every call goes
through the run's LLM cache, so a re-run costs no new requests; per-call records (raw
output, parsed verdict, prompt id, judge, decoding) go to RUN/eval/judge-<name>.examples.jsonl
and the result to RUN/eval/judge-<name>.json.
"""

from __future__ import annotations

import argparse
import math
import re
import time
from pathlib import Path
from typing import Any

KINDS = ("vicuna", "alpaca-eval", "mt-bench", "rank", "meta", "bias")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run-dir", default="runs/judge", help="run directory (results in RUN/eval/)")
    common.add_argument("--name", help="result name: RUN/eval/judge-<name>.json (default: from the inputs)")
    common.add_argument("--limit", type=int, help="judge only the first N items (quick checks)")
    with_judge = argparse.ArgumentParser(add_help=False, parents=[common])
    with_judge.add_argument("--judge", required=True, help="the judge LLM spec, e.g. openai:gpt-4")
    with_judge.add_argument("--concurrency", type=int, help="parallel requests to the judge (default: the client's)")
    with_judge.add_argument("--max-judge-tokens", type=int,
                            help="cap every judge call's max_tokens (cost control; recorded in each record's decoding)")
    sub = parser.add_subparsers(dest="kind", required=True, metavar="{" + ",".join(KINDS) + "}")

    p = sub.add_parser("vicuna", parents=[with_judge], help="Vicuna-80 pairwise 1-10 scores, relative score")
    p.add_argument("--model-outputs", required=True, help="answers: FastChat answer JSONL or Conversation JSONL")
    p.add_argument("--reference", default="gpt35",
                   help="reference answers: a shipped set (gpt35, bard, ...) or a file")
    p.add_argument("--one-order", action="store_true", help="judge only with the reference as Assistant 1")

    p = sub.add_parser("alpaca-eval", parents=[with_judge], help="AlpacaEval win rate against a reference model")
    p.add_argument("--model-outputs", required=True, help="alpaca_eval model_outputs.json or Conversation JSONL")
    p.add_argument("--version", choices=("v1", "v2"), default="v2")
    p.add_argument("--annotator", help="a shipped alpaca_eval annotator config (default: the version's)")
    p.add_argument("--baseline", help="reference generator (default: text_davinci_003 for v1, gpt4_1106_preview for v2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-instruction position coin (alpaca_eval: 0)")
    p.add_argument("--instruction-difficulty", help="alpaca_eval instruction_difficulty.csv, for the LC GLM")
    p.add_argument("--gamed-baselines", help="alpaca_eval df_gamed.csv: with it (v2), the LC win rate is computed "
                                             "the official way (lc_win_rate), else it is an estimate")

    p = sub.add_parser("mt-bench", parents=[with_judge], help="MT-bench single-answer grading or pairwise")
    p.add_argument("--model-outputs", required=True, help="FastChat answer JSONL or Conversation JSONL (2 turns)")
    p.add_argument("--mode", choices=("single", "pairwise"), default="single")
    p.add_argument("--baseline-outputs", help="the other model's answers (pairwise)")

    p = sub.add_parser("rank", parents=[with_judge], help="listwise ranking of K systems (Tuna's judge)")
    p.add_argument("--model-outputs", required=True, nargs="+", help="K >= 2 output files, same instructions")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("meta", parents=[with_judge], help="LLMBar meta-evaluation of a judge")
    p.add_argument("--strategy", default="vanilla",
                   help="vanilla, rules, metrics, reference, metrics-reference-rules, swap")
    p.add_argument("--sets", nargs="+", default=["Natural", "Neighbor", "GPTInst", "GPTOut", "Manual"])

    p = sub.add_parser("bias", parents=[common], help="length / unique-token bias of win rates")
    p.add_argument("--annotations", required=True, nargs="+",
                   help="alpaca_eval annotations.json files (or drover's judge-*.annotations.json)")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "model"


def _open_llm(args: argparse.Namespace, run_dir: Any) -> Any:
    from drover.llm.client import LLM
    from drover.llm.config import LLMConfig

    overrides = {"concurrency": args.concurrency} if args.concurrency else {}
    config = LLMConfig.from_spec(args.judge, **overrides)
    return LLM(config, cache_path=run_dir.llm_cache)


def run(args: argparse.Namespace) -> int:
    from drover.errors import ConfigError
    from drover.runs import RunDir

    for option in ("limit", "concurrency", "max_judge_tokens"):
        value = getattr(args, option, None)
        if value is not None and value < 1:
            raise ConfigError(f"--{option.replace('_', '-')} must be at least 1 (got {value})")
    run_dir = RunDir(args.run_dir).ensure()
    start = time.time()
    handler = {"vicuna": _vicuna, "alpaca-eval": _alpaca_eval, "mt-bench": _mt_bench, "rank": _rank,
               "meta": _meta, "bias": _bias}[args.kind]
    result = handler(args, run_dir)
    result["time_s"] = round(time.time() - start, 3)
    _write(run_dir, result)
    return 0


def _judged(args: argparse.Namespace, run_dir: Any, name: str, build: Any) -> tuple[Any, list[Any], Path, dict]:
    """Open the judge, run `build(llm, examples_path)`, return (llm config, judgments, path, usage)."""
    examples = run_dir.eval / f"judge-{name}.examples.jsonl"
    with _open_llm(args, run_dir) as llm:
        judgments = build(llm, examples)
        usage = llm.stats.to_dict()
        model = llm.config.model
    return model, judgments, examples, usage


def _capped(calls: list[Any], args: argparse.Namespace) -> list[Any]:
    """Apply --max-judge-tokens to every call's decoding."""
    if args.max_judge_tokens:
        for call in calls:
            call.decoding["max_tokens"] = min(call.decoding.get("max_tokens", args.max_judge_tokens),
                                              args.max_judge_tokens)
    return calls


def _result(task: str, name: str, model: str, judge: str, summary: dict[str, Any], primary: str,
            settings: dict[str, Any], n_examples: int, examples: Path | None, usage: dict[str, Any],
            judgments: list[Any] | None = None) -> dict[str, Any]:
    from drover.judges.runner import failures

    breakdown = dict(summary.get("breakdown", {}))
    if judgments is not None:
        failed = failures(judgments)
        breakdown["failures"] = failed
        summary["metrics"].setdefault("n_failed", float(len(failed)))
    metrics = {k: float(v) for k, v in summary["metrics"].items()}
    return {"task": task, "kind": "judge", "name": name, "model": model, "judge": judge, "metrics": metrics,
            "primary_metric": primary, "breakdown": breakdown, "settings": settings, "n_examples": n_examples,
            "examples_file": examples.name if examples else None, "usage": usage}


def _vicuna(args: argparse.Namespace, run_dir: Any) -> dict[str, Any]:
    from drover.judges import vicuna
    from drover.judges.runner import run_calls

    model, answers = vicuna.load_answers(args.model_outputs)
    ref_name, reference = vicuna.load_answers(args.reference)
    questions = vicuna.load_questions()[: args.limit] if args.limit else vicuna.load_questions()
    orders = ("ab",) if args.one_order else vicuna.ORDERS
    calls = vicuna.build_calls(questions, answers, reference, orders)
    if not calls:
        from drover.errors import DroverError

        raise DroverError(f"{args.model_outputs}: none of its {len(answers)} answers matches a Vicuna-80 question "
                          f"id also answered by {ref_name!r} (ids seen: {', '.join(list(answers)[:5])})")
    name = args.name or f"vicuna80-{_slug(model)}-vs-{_slug(ref_name)}"
    judge, judgments, examples, usage = _judged(
        args, run_dir, name,
        lambda llm, path: run_calls(llm, _capped(calls, args), llm.config.model, path, desc="vicuna80"))
    summary = vicuna.summarize(judgments)
    print(f"Vicuna-80 ({summary['breakdown']['label']}): {model} vs {ref_name}, judge {judge}")
    return _result("vicuna80", name, model, judge, summary, "relative_score",
                   {"reference": ref_name, "orders": list(orders)}, len({c.meta["question_id"] for c in calls}),
                   examples, usage, judgments)


def _alpaca_eval(args: argparse.Namespace, run_dir: Any) -> dict[str, Any]:
    from drover.atomic import write_json
    from drover.judges import alpaca_eval as ae
    from drover.judges.runner import run_calls
    from drover.metrics.winrate import read_difficulty, read_gamed

    default_annotator, default_baseline = ae.VERSIONS[args.version]
    if args.gamed_baselines and args.version != "v2":
        from drover.errors import ConfigError

        raise ConfigError("--gamed-baselines: the length-controlled win rate is defined for AlpacaEval 2 only "
                          "(--version v2)")
    gamed = read_gamed(args.gamed_baselines) if args.gamed_baselines else None
    annotator = ae.load_annotator(args.annotator or default_annotator)
    baseline = args.baseline or default_baseline
    model, outputs = ae.load_outputs(args.model_outputs)
    pairs = ae.make_pairs(outputs, baseline, args.limit)
    calls = ae.build_calls(pairs, annotator, args.seed)
    name = args.name or f"alpaca-eval-{args.version}-{_slug(model)}"
    judge, judgments, examples, usage = _judged(
        args, run_dir, name,
        lambda llm, path: run_calls(llm, _capped(calls, args), llm.config.model, path, desc="alpaca-eval"))
    prefs = ae.preferences(pairs, judgments)
    difficulty = read_difficulty(args.instruction_difficulty) if args.instruction_difficulty else None
    summary = ae.summarize(pairs, prefs, difficulty, version=args.version, gamed=gamed)
    write_json(run_dir.eval / f"judge-{name}.annotations.json",
               ae.annotations(pairs, prefs, baseline, model, annotator.name), indent=None)
    m = summary["metrics"]
    print(f"AlpacaEval {args.version}: {model} vs {baseline}, judge {judge} ({annotator.name}): "
          f"win rate {m['win_rate']:.2f} ± {m['standard_error']:.2f}"
          + (f"; LC win rate {m['lc_win_rate']:.2f}" if "lc_win_rate" in m else "")
          + (f"; LC win rate (estimate) {m['lc_win_rate_estimate']:.2f}" if "lc_win_rate_estimate" in m else ""))
    return _result(f"alpaca_eval_{args.version}", name, model, judge, summary, "win_rate",
                   {"reference": baseline, "annotator": annotator.name, "seed": args.seed,
                    "lc_uses_instruction_difficulty": difficulty is not None,
                    "lc_method": None if args.version != "v2" else "official" if gamed is not None else "estimate"},
                   len(pairs), examples, usage,
                   judgments)


def _mt_bench(args: argparse.Namespace, run_dir: Any) -> dict[str, Any]:
    from drover.errors import ConfigError
    from drover.judges import mt_bench
    from drover.judges.runner import run_calls

    model, answers = mt_bench.load_answers(args.model_outputs)
    if args.limit:
        keep = {str(q["question_id"]) for q in mt_bench.load_questions()[: args.limit]}
        answers = {k: v for k, v in answers.items() if k in keep}
    if args.mode == "single":
        calls = mt_bench.build_single_calls(answers)
        name = args.name or f"mt-bench-{_slug(model)}"
        settings: dict[str, Any] = {"mode": "single"}
    else:
        if not args.baseline_outputs:
            raise ConfigError("mt-bench --mode pairwise needs --baseline-outputs FILE")
        other, other_answers = mt_bench.load_answers(args.baseline_outputs)
        calls = mt_bench.build_pairwise_calls(answers, other_answers)
        name = args.name or f"mt-bench-pair-{_slug(model)}-vs-{_slug(other)}"
        settings = {"mode": "pairwise", "reference": other}
    judge, judgments, examples, usage = _judged(
        args, run_dir, name,
        lambda llm, path: run_calls(llm, _capped(calls, args), llm.config.model, path, desc="mt-bench"))
    if args.mode == "single":
        summary, primary = mt_bench.summarize_single(judgments), "score"
    else:
        summary, primary = mt_bench.summarize_pairwise(judgments), "win_rate"
    print(f"MT-bench ({args.mode}): {model}, judge {judge}")
    return _result("mt_bench" if args.mode == "single" else "mt_bench_pairwise", name, model, judge, summary,
                   primary, settings, len({c.meta["question_id"] for c in calls}), examples, usage, judgments)


def _rank(args: argparse.Namespace, run_dir: Any) -> dict[str, Any]:
    from drover.errors import ConfigError
    from drover.judges import alpaca_eval as ae
    from drover.judges import listwise_eval
    from drover.judges.runner import run_calls

    if len(args.model_outputs) < 2:
        raise ConfigError("rank needs at least two --model-outputs files")
    systems, outputs = [], []
    for path in args.model_outputs:
        system, by_instruction = ae.load_outputs(path)
        systems.append(system)
        outputs.append(by_instruction)
    common = [i for i in outputs[0] if all(i in o for o in outputs[1:])]
    if not common:
        raise ConfigError("rank: the output files share no instruction")
    common = common[: args.limit] if args.limit else common
    keys = {instruction: str(n) for n, instruction in enumerate(common)}
    calls = listwise_eval.build_calls([(keys[i], i) for i in common],
                                      [{keys[i]: o[i] for i in common} for o in outputs], args.seed)
    name = args.name or "rank-" + "-".join(_slug(s) for s in systems)
    judge, judgments, examples, usage = _judged(
        args, run_dir, name,
        lambda llm, path: run_calls(llm, _capped(calls, args), llm.config.model, path, desc="rank"))
    summary = listwise_eval.summarize(judgments, systems)
    print(f"Listwise ranking of {len(systems)} systems on {len(common)} prompts, judge {judge}")
    return _result("listwise_rank", name, ",".join(systems), judge, summary, f"{systems[0]}/avg_rank",
                   {"systems": systems, "seed": args.seed}, len(common), examples, usage, judgments)


def _meta(args: argparse.Namespace, run_dir: Any) -> dict[str, Any]:
    from drover.judges import llmbar

    strategy = llmbar.get_strategy(args.strategy)
    for s in args.sets:
        llmbar.load_set(s, 1)  # validate names before any request
    name = args.name or f"llmbar-{strategy.name}"
    judge, judgments, examples, usage = _judged(
        args, run_dir, name,
        lambda llm, path: llmbar.judge_sets(llm, llm.config.model, strategy, args.sets, path, args.limit,
                                           args.max_judge_tokens))
    summary = llmbar.summarize(judgments, args.sets)
    print(f"LLMBar meta-evaluation: judge {judge}, strategy {strategy.name}")
    return _result("llmbar", name, judge, judge, summary, "accuracy",
                   {"strategy": strategy.name, "sets": args.sets}, len(judgments) // 2, examples, usage, judgments)


def _bias(args: argparse.Namespace, run_dir: Any) -> dict[str, Any]:
    from drover.errors import InputError
    from drover.judges.bias import SystemAnnotations, analyze
    from drover.judges.files import read_json

    systems = []
    for path in args.annotations:
        rows = read_json(path)
        if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict) or "output_2" not in rows[0]:
            raise InputError(path, None, None, "expected an alpaca_eval annotations list "
                                               "{output_1, output_2, generator_2, preference}")
        rows = rows[: args.limit] if args.limit else rows
        systems.append(SystemAnnotations(str(rows[0].get("generator_2") or Path(path).stem),
                                         [r["output_1"] for r in rows], [r["output_2"] for r in rows],
                                         [r.get("preference") for r in rows]))
    summary = analyze(systems)
    name = args.name or "bias"
    print(f"Length bias across {len(systems)} systems")
    result = _result("judge_bias", name, ",".join(s.name for s in systems), "-", summary,
                     "pearson_winrate_unique_tokens", {"annotations": [str(p) for p in args.annotations]},
                     sum(len(s.model_outputs) for s in systems), None, {})
    return result


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.0f}" if value.is_integer() and abs(value) >= 1 else f"{value:.4g}"
    return str(value)


def _write(run_dir: Any, result: dict[str, Any]) -> None:
    from drover.atomic import write_json

    path = run_dir.eval / f"judge-{result['name']}.json"
    write_json(path, result)
    width = max(len(k) for k in result["metrics"]) if result["metrics"] else 10
    print(f"{'metric':<{width}}  value")
    for key, value in result["metrics"].items():
        print(f"{key:<{width}}  {_fmt(value)}")
    failed = result["breakdown"].get("failures") or []
    if failed:
        print(f"{len(failed)} failed judgments (listed under breakdown.failures), e.g. {failed[0]['id']}: "
              f"{failed[0]['reason']}")
    usage = result.get("usage") or {}
    if usage:
        print(f"requests: {usage.get('misses', 0)} new, {usage.get('hits', 0)} cached; "
              f"tokens {usage.get('prompt_tokens', 0)} in / {usage.get('completion_tokens', 0)} out")
    print(f"result: {path}")
