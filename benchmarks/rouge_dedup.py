"""Near-duplicate filtering of a 50,000-instruction pool: drover vs rouge-score.

Wall seconds depend on what else shares the machine; CPU seconds (one process, one thread)
measure the work itself.

The Self-Instruct/Alpaca filter keeps an instruction only if its ROUGE-L against every
instruction kept so far is <= 0.7. The original code scores every pair with
`rouge_score`; drover's `NearDuplicateIndex` gives the same decisions (see
tests/test_rouge.py) while computing few pairs.

Baseline: rouge-score's per-pair cost is measured on a random sample of the pairs the
greedy filter compares, then multiplied by the number of pairs it compares
(sum over queries of the pool size at that time); running it in full would take hours.

    .venv/bin/python benchmarks/rouge_dedup.py [--n 50000] [--baseline-pairs 20000]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import time
from importlib import resources

from drover.metrics.rouge import NearDuplicateIndex


def _instructions() -> list[str]:
    data = resources.files("drover").joinpath("resources", "data")
    out: list[str] = []
    out += [r["instruction"] for r in json.loads(data.joinpath("codealpaca/code_alpaca_2k.json").read_text())]
    for name in ("self_instruct/seed_tasks.jsonl", "self_instruct/user_oriented_instructions.jsonl"):
        out += [json.loads(line)["instruction"] for line in data.joinpath(name).read_text().splitlines()]
    out += [r["instruction"] for r in json.loads(
        data.joinpath("alpaca_eval/results/text_davinci_003/model_outputs.json").read_text())]
    for name in ("gsm8k/train.jsonl", "gsm8k/test.jsonl"):
        out += [json.loads(line)["question"] for line in data.joinpath(name).read_text().splitlines()]
    for folder in ("mmlu/test", "mmlu/dev"):
        for path in sorted(data.joinpath(folder).iterdir()):
            with path.open(encoding="utf-8") as handle:
                out += [row["question"] for row in csv.DictReader(handle)]
    for path in sorted(data.joinpath("bbh/bbh").iterdir()):
        out += [ex["input"].split("\n")[0] for ex in json.loads(path.read_text())["examples"]]
    with gzip.open(str(data.joinpath("hh_rlhf/harmless-base/test.jsonl.gz")), "rt") as handle:
        for line in handle:
            out.append(json.loads(line)["chosen"].split("\n\nAssistant:")[0].replace("\n\nHuman: ", ""))
    return [t for t in out if t.strip()]


def build_pool(n: int, seed: int = 0) -> list[str]:
    """Real instructions, topped up with lightly edited copies (near duplicates) to `n`."""
    rng = random.Random(seed)
    real = _instructions()
    rng.shuffle(real)
    pool = real[:n]
    while len(pool) < n:
        words = rng.choice(real).split()
        for _ in range(rng.randrange(1, 4)):
            if len(words) > 1 and rng.random() < 0.5:
                del words[rng.randrange(len(words))]
            else:
                words.insert(rng.randrange(len(words) + 1), rng.choice(["the", "given", "please", "now"]))
        pool.append(" ".join(words))
    rng.shuffle(pool)
    return pool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--baseline-pairs", type=int, default=20_000)
    args = parser.parse_args()

    pool = build_pool(args.n)
    print(f"pool: {len(pool)} instructions")

    start, cpu = time.perf_counter(), time.process_time()
    index = NearDuplicateIndex(args.threshold)
    pairs_compared = 0  # what the original greedy loop would score
    kept_at: list[int] = []
    for text in pool:
        kept_at.append(len(index))
        pairs_compared += len(index)
        index.add_if_novel(text)
    drover_s, drover_cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"drover: kept {len(index)} of {len(pool)} in {drover_s:.1f} s wall, {drover_cpu:.1f} CPU-s "
          f"({index.pairs_checked} exact LCS computations of {pairs_compared} pairs)")

    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = random.Random(1)
    kept = index.texts
    sample = []
    for _ in range(args.baseline_pairs):
        i = rng.randrange(1, len(pool))
        while kept_at[i] == 0:
            i = rng.randrange(1, len(pool))
        sample.append((pool[i], kept[rng.randrange(kept_at[i])]))
    start = time.perf_counter()
    for new, old in sample:
        scorer.score(new, old)
    per_pair_si = (time.perf_counter() - start) / len(sample)
    # Alpaca's variant pre-tokenises the pool and calls the LCS scorer directly.
    tokenized = [(scorer._tokenizer.tokenize(new), scorer._tokenizer.tokenize(old)) for new, old in sample]
    start = time.perf_counter()
    for new, old in tokenized:
        rouge_scorer._score_lcs(new, old)
    per_pair = (time.perf_counter() - start) / len(sample)
    baseline_s = per_pair * pairs_compared
    print(f"rouge-score: {per_pair_si * 1e6:.1f} us/pair with tokenisation (Self-Instruct), "
          f"{per_pair * 1e6:.1f} us/pair pre-tokenised (Alpaca)")
    print(f"rouge-score, pre-tokenised: {pairs_compared} pairs = {baseline_s / 3600:.1f} h single-process "
          f"(the original code's Pool divides this by the cores)")
    print(f"speed ratio drover / rouge-score (pre-tokenised, same process count): {baseline_s / drover_s:.0f}x")


if __name__ == "__main__":
    main()
