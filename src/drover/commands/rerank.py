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

Every setting is a key of `drover.infer.rerank_config.RerankConfig`: `--config FILE.yaml`
and `key=value` overrides work as on every stage.

Sharded over N GPUs or nodes (`drover.shards`, by record: the merge equals one process):
    drover rerank ... --shard 0/2 & drover rerank ... --shard 1/2 & wait
    drover rerank ... --merge-shards 2        # writes ranked.jsonl / best.jsonl in input order
    accelerate launch --num_processes 2 -m drover rerank ...   # shards itself; rank 0 merges
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

FRESH_FLAG = "--force"  # what a recipe passes when this stage's inputs or settings changed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of RerankConfig keys")
    parser.add_argument("--reward-model", help="a reward model directory saved by `drover reward`")
    parser.add_argument("--prompts", help="Conversation or Ranked JSONL whose prompts are sampled (with --policy)")
    parser.add_argument("--input", help="a Ranked JSONL file to re-rank (no sampling)")
    parser.add_argument("--policy", help="the sampling model: a local directory, hf:PATH or http://host:port/v1#MODEL")
    parser.add_argument("-n", type=int, help="responses sampled per prompt (default 8)")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--limit", type=int, help="only the first N records (0 = all)")
    parser.add_argument("--batch-size", type=int, help="reward-model scoring batch size")
    parser.add_argument("--run-dir", help="run directory (default runs/rerank)")
    parser.add_argument("--out", help="ranked output (default RUN/data/ranked.jsonl)")
    parser.add_argument("--best", help="top-1 output (default RUN/data/best.jsonl)")
    parser.add_argument("--select", choices=("best", "rso"),
                        help="best: ranking + top-1 only (default); rso: also RSO preference pairs "
                             "sampled from the reward-tilted policy (Liu et al. 2023)")
    parser.add_argument("--rso-k", type=int, help="RSO: responses accepted per prompt (clipped to n; default 8)")
    parser.add_argument("--rso-beta", type=float,
                        help="RSO: temperature of exp(r / beta); small = best-of-n pairs, large = uniform (default 0.5)")
    parser.add_argument("--rso-pairs", choices=("first-round", "tournament", "all"),
                        help="RSO: (y1,y2),(y3,y4)... as 2-response records (paper's best), a single-elimination "
                             "tournament (k-1 pairs), or all k in one record")
    parser.add_argument("--rso-out", help="RSO output (default RUN/data/rso.jsonl)")
    parser.add_argument("--force", action="store_true", help="start the outputs fresh instead of resuming them")
    parser.add_argument("--shard", metavar="I/N", help="rank only records k with k mod N = I, into "
                        "<output>.shard-I-of-N.jsonl (default under accelerate launch: RANK/WORLD_SIZE)")
    parser.add_argument("--merge-shards", type=int, metavar="N", help="merge the N finished shards' parts "
                        "into the outputs (in input order), then continue (RSO)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="RerankConfig overrides (win over flags)")


def config_from_args(args: argparse.Namespace):
    from drover.config import stage_config
    from drover.infer.rerank_config import RerankConfig

    names = ("reward_model", "prompts", "input", "policy", "n", "temperature", "top_p", "max_tokens", "seed", "limit",
             "batch_size", "run_dir", "out", "best", "select", "rso_k", "rso_beta", "rso_pairs", "rso_out",
             "shard", "merge_shards")
    return stage_config(RerankConfig, args.config, {k: getattr(args, k) for k in names}, args.overrides,
                        where="drover rerank")


def run(args: argparse.Namespace) -> int:
    import itertools

    from drover.generate.stage import claim_output, job_key
    from drover.records import read_ranked, read_records
    from drover.runs import RunDir, report_stage

    from drover.shards import RecordShards

    cfg = config_from_args(args)
    run_dir = RunDir(cfg.run_dir).ensure()
    ranked_path = Path(cfg.out) if cfg.out else run_dir.data / "ranked.jsonl"
    best_path = Path(cfg.best) if cfg.best else run_dir.data / "best.jsonl"
    rso_path = Path(cfg.rso_out) if cfg.rso_out else run_dir.data / "rso.jsonl"
    limit = cfg.limit or None
    reader = (lambda: read_ranked(cfg.input)) if cfg.input else (lambda: read_records(cfg.prompts))
    shards = RecordShards.resolve(cfg.shard, cfg.merge_shards, "rerank")
    if not shards.merge:
        # Read (and so check) the input before claiming the output or loading any model.
        wanted = list(itertools.islice(reader(), limit))
        part_ranked, part_best = shards.outputs([ranked_path, best_path])
        claim_output(cfg, force=args.force, output=part_ranked, also=(part_best, rso_path))
        report_stage(inputs=[cfg.reward_model, cfg.input or cfg.prompts])
        records = (r for k, r in enumerate(wanted) if shards.owns(k))
        _rank(cfg, run_dir, records, part_ranked, part_best, shards.cache(run_dir.llm_cache, "rerank"))
    if not shards.finish([ranked_path, best_path], lambda: [r.id for r in itertools.islice(reader(), limit)],
                         job_key(cfg)):
        return 0  # a shard: the merge writes the outputs
    if cfg.select == "rso":
        from drover.infer.rso import rso_file

        rso = rso_file(read_ranked(ranked_path), rso_path, cfg.rso_k, cfg.rso_beta, cfg.seed, cfg.rso_pairs)
        run_dir.log("rerank-rso", k=cfg.rso_k, beta=cfg.rso_beta, pairing=cfg.rso_pairs, **vars(rso))
        print(f"  rso:     {rso_path} ({rso.written} records written, {rso.skipped_done} already there, "
              f"{rso.no_pairs} prompts without a pair; mean reward accepted {rso.mean_accepted:.3f} "
              f"vs all {rso.mean_all:.3f})")
    return 0


def _rank(cfg: Any, run_dir: Any, records: Any, out_ranked: Path, out_best: Path, cache: Path) -> None:
    """Sample (or read) and rank `records` into the given outputs (a shard's parts, or the whole)."""
    import time

    from drover.infer.best_of_n import SampleOptions, best_of_n, rerank_file
    from drover.local.reward import load_reward_scorer

    scorer = load_reward_scorer(cfg.reward_model, batch_size=cfg.batch_size)
    start = time.monotonic()
    if cfg.input:
        summary = rerank_file(records, scorer, out_ranked, out_best)
    else:
        from drover.llm.client import LLM
        from drover.llm.config import LLMConfig

        options = SampleOptions(cfg.n, cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.seed)
        with LLM(LLMConfig.from_spec(cfg.policy), cache) as llm:
            summary = best_of_n(llm, records, scorer, out_ranked, out_best, options, policy_name=cfg.policy)
    run_dir.log("rerank", output=str(out_ranked), **vars(summary))
    print(f"drover rerank: {summary.written} prompts ranked ({summary.skipped_done} already done, "
          f"{summary.no_samples} without samples) in {time.monotonic() - start:.1f}s; "
          f"mean reward best {summary.mean_best:.3f} vs all {summary.mean_all:.3f}")
    print(f"  ranking: {out_ranked}\n  best:    {out_best}")
