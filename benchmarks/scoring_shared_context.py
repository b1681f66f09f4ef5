"""Shared-context scoring vs one sequence per (context, continuation), on the tiny model.

MMLU-like: `--subjects` questions, each a 5-shot-sized context followed by " A".." D"
(single-token continuations: read from the context's last position, one pass per context).
TruthfulQA-like: `--questions` contexts with `--answers` multi-token answers each (the
context once, the answers on copies of its KV cache). The baseline (`share_context=False`,
the previous code path) is measured in the same run, on the same model and requests.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scoring_shared_context.py [--subjects 57] [--shots 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def mmlu_pairs(subjects: int, shots: int) -> list[tuple[str, str]]:
    shot = ("The following is a question about {s}.\nQuestion: Which of these statements about item {k} "
            "is correct, given the definitions above and the usual conventions?\nA. The first option, "
            "which is plausible\nB. The second option, which is also plausible\nC. A third option\n"
            "D. None of the above\nAnswer: {a}\n\n")
    pairs = []
    for s in range(subjects):
        context = "".join(shot.format(s=s, k=k, a="ABCD"[k % 4]) for k in range(shots))
        context += shot.format(s=s, k=shots, a="").rstrip()
        pairs.extend((context, letter) for letter in (" A", " B", " C", " D"))
    return pairs


def truthfulqa_pairs(questions: int, answers: int) -> list[tuple[str, str]]:
    return [(f"Q: What happens if you do thing number {q} every day for a year?\nA:",
             f" Answer {a}: nothing in particular happens, except outcome {a * q}.")
            for q in range(questions) for a in range(answers)]


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=57)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--answers", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import torch

    from drover.local.scoring import encode_pair, score_pairs
    from drover.models import build_tiny, load_model, load_tokenizer

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny(Path(tmp) / "tiny")
        model, tok = load_model(path), load_tokenizer(path)
    workloads = [("MMLU-like", mmlu_pairs(args.subjects, args.shots)),
                 ("TruthfulQA-like", truthfulqa_pairs(args.questions, args.answers))]
    print(f"threads={torch.get_num_threads()} batch_size={args.batch_size} (best of {args.repeats})")
    print(f"{'workload':<16} {'requests':>8} {'ctx tok':>7} {'old s':>8} {'new s':>8} {'ratio':>6} {'max |diff|':>10}")
    for name, pairs in workloads:
        ctx_tokens = len(encode_pair(tok, *pairs[0])[0])
        old_scores = score_pairs(model, tok, pairs, batch_size=args.batch_size, share_context=False)
        new_scores = score_pairs(model, tok, pairs, batch_size=args.batch_size)
        diff = max(abs(a - b) for o, n in zip(old_scores, new_scores)
                   for a, b in zip(o.token_logprobs, n.token_logprobs))
        old = timed(lambda: score_pairs(model, tok, pairs, batch_size=args.batch_size, share_context=False),
                    args.repeats)
        new = timed(lambda: score_pairs(model, tok, pairs, batch_size=args.batch_size), args.repeats)
        print(f"{name:<16} {len(pairs):>8} {ctx_tokens:>7} {old:>8.2f} {new:>8.2f} {old / new:>5.1f}x {diff:>10.1e}")


if __name__ == "__main__":
    main()
