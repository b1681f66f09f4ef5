"""Best-of-n with a reward model: sample n responses per prompt, score, rank, keep the best.

    drover rerank --policy runs/sft/model --prompts prompts.jsonl --reward-model runs/rm/model -n 8 --run-dir runs/bon
    drover rerank --input candidates.ranked.jsonl --reward-model runs/rm/model --run-dir runs/prm

Writes RUN/data/ranked.jsonl (every prompt's responses as `Ranked`, best first, score =
reward) and RUN/data/best.jsonl (the top response as a `Conversation`, ready for SFT).
`--input` re-ranks an existing Ranked file instead of sampling (Tuna's proxy ranking
model). Sampling is cached in RUN/llm-cache.sqlite and outputs are appended per prompt:
re-running the same command resumes.

`--select rso` also writes RUN/data/rso.jsonl: RSO (Liu et al. 2023) rejection-samples
--rso-k of the n scored responses from pi_sft * exp(r / beta) and pairs them
(first-round ranking), ready for `drover tune --objective dpo|slic --data rso.jsonl`.

Sharded over N GPUs or nodes (`drover.shards`, by record: the merge equals one process):
    drover rerank ... --shard 0/2 & drover rerank ... --shard 1/2 & wait
    drover rerank ... --merge-shards 2        # writes ranked.jsonl / best.jsonl in input order
    accelerate launch --num_processes 2 -m drover rerank ...   # shards itself; rank 0 merges
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reward-model", required=True, help="a reward model directory saved by `drover reward`")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompts", help="Conversation or Ranked JSONL whose prompts are sampled (with --policy)")
    source.add_argument("--input", help="a Ranked JSONL file to re-rank (no sampling)")
    parser.add_argument("--policy", help="the sampling model: a local directory, hf:PATH or http://host:port/v1#MODEL")
    parser.add_argument("-n", type=int, default=8, help="responses sampled per prompt (default 8)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0, help="only the first N records (0 = all)")
    parser.add_argument("--batch-size", type=int, default=8, help="reward-model scoring batch size")
    parser.add_argument("--run-dir", default="runs/rerank")
    parser.add_argument("--out", help="ranked output (default RUN/data/ranked.jsonl)")
    parser.add_argument("--best", help="top-1 output (default RUN/data/best.jsonl)")
    parser.add_argument("--select", choices=("best", "rso"), default="best",
                        help="best: ranking + top-1 only (default); rso: also RSO preference pairs "
                             "sampled from the reward-tilted policy (Liu et al. 2023)")
    parser.add_argument("--rso-k", type=int, default=8, help="RSO: responses accepted per prompt (clipped to n)")
    parser.add_argument("--rso-beta", type=float, default=0.5,
                        help="RSO: temperature of exp(r / beta); small = best-of-n pairs, large = uniform")
    parser.add_argument("--rso-pairs", choices=("first-round", "tournament", "all"), default="first-round",
                        help="RSO: (y1,y2),(y3,y4)... as 2-response records (paper's best), a single-elimination "
                             "tournament (k-1 pairs), or all k in one record")
    parser.add_argument("--rso-out", help="RSO output (default RUN/data/rso.jsonl)")
    parser.add_argument("--shard", metavar="I/N", help="rank only records k with k mod N = I, into "
                        "<output>.shard-I-of-N.jsonl (default under accelerate launch: RANK/WORLD_SIZE)")
    parser.add_argument("--merge-shards", type=int, metavar="N", help="merge the N finished shards' parts "
                        "into the outputs (in input order), then continue (RSO)")


def run(args: argparse.Namespace) -> int:
    import itertools
    import math

    from drover.errors import ConfigError
    from drover.records import read_ranked, read_records
    from drover.runs import RunDir

    if args.prompts and not args.policy:
        raise ConfigError("rerank: --prompts needs --policy (the model to sample from)")
    if args.n < 1:
        raise ConfigError(f"rerank: -n must be >= 1, got {args.n}")
    if args.select == "rso" and args.rso_k < 2:
        raise ConfigError(f"rerank: --rso-k must be >= 2 (pairs need two responses), got {args.rso_k}")
    if args.select == "rso" and not (args.rso_beta > 0 and math.isfinite(args.rso_beta)):
        raise ConfigError(f"rerank: --rso-beta must be a positive number, got {args.rso_beta}")
    from drover.shards import RecordShards

    run_dir = RunDir(args.run_dir).ensure()
    ranked_path = args.out or run_dir.data / "ranked.jsonl"
    best_path = args.best or run_dir.data / "best.jsonl"
    if args.limit is not None and args.limit < 0:
        raise ConfigError(f"--limit must be >= 0 (0: all records), got {args.limit}")
    limit = args.limit or None
    reader = (lambda: read_ranked(args.input)) if args.input else (lambda: read_records(args.prompts))
    shards = RecordShards.resolve(args.shard, args.merge_shards, "rerank")
    if not shards.merge:
        records = (r for k, r in enumerate(itertools.islice(reader(), limit)) if shards.owns(k))
        _rank(args, run_dir, records, *shards.outputs([ranked_path, best_path]), shards.cache(run_dir.llm_cache, "rerank"))
    if not shards.finish([ranked_path, best_path], lambda: [r.id for r in itertools.islice(reader(), limit)]):
        return 0  # a shard: the merge writes the outputs
    if args.select == "rso":
        from drover.infer.rso import rso_file

        rso_path = args.rso_out or run_dir.data / "rso.jsonl"
        rso = rso_file(read_ranked(ranked_path), rso_path, args.rso_k, args.rso_beta, args.seed, args.rso_pairs)
        run_dir.log("rerank-rso", k=args.rso_k, beta=args.rso_beta, pairing=args.rso_pairs, **vars(rso))
        print(f"  rso:     {rso_path} ({rso.written} records written, {rso.skipped_done} already there, "
              f"{rso.no_pairs} prompts without a pair; mean reward accepted {rso.mean_accepted:.3f} "
              f"vs all {rso.mean_all:.3f})")
    return 0


def _rank(args: argparse.Namespace, run_dir: Any, records: Any, out_ranked: Path, out_best: Path, cache: Path) -> None:
    """Sample (or read) and rank `records` into the given outputs (a shard's parts, or the whole)."""
    import time

    from drover.infer.best_of_n import SampleOptions, best_of_n, rerank_file
    from drover.infer.reward_scorer import load_reward_scorer

    scorer = load_reward_scorer(args.reward_model, batch_size=args.batch_size)
    start = time.monotonic()
    if args.input:
        summary = rerank_file(records, scorer, out_ranked, out_best)
    else:
        from drover.llm.client import LLM
        from drover.llm.config import LLMConfig

        options = SampleOptions(args.n, args.temperature, args.top_p, args.max_tokens, args.seed)
        with LLM(LLMConfig.from_spec(args.policy), cache) as llm:
            summary = best_of_n(llm, records, scorer, out_ranked, out_best, options, policy_name=args.policy)
    run_dir.log("rerank", output=str(out_ranked), **vars(summary))
    print(f"drover rerank: {summary.written} prompts ranked ({summary.skipped_done} already done, "
          f"{summary.no_samples} without samples) in {time.monotonic() - start:.1f}s; "
          f"mean reward best {summary.mean_best:.3f} vs all {summary.mean_all:.3f}")
    print(f"  ranking: {out_ranked}\n  best:    {out_best}")
