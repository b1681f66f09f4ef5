"""drover.metrics.rouge against the reference package (rouge-score 0.1.2) on shipped data."""

from __future__ import annotations

import json
import random
from importlib import resources

import pytest

from drover.metrics.rouge import NearDuplicateIndex, dedup, lcs_length, rouge_l, tokenize

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")

DATA = resources.files("drover").joinpath("resources", "data")


def _codealpaca() -> list[dict]:
    return json.loads(DATA.joinpath("codealpaca", "code_alpaca_2k.json").read_text(encoding="utf-8"))


def _alpaca_eval_outputs(name: str) -> list[dict]:
    path = DATA.joinpath("alpaca_eval", "results", name, "model_outputs.json")
    return json.loads(path.read_text(encoding="utf-8"))


def _pairs() -> list[tuple[str, str]]:
    rng = random.Random(0)
    code = _codealpaca()
    instructions = [r["instruction"] for r in code]
    pairs = [(instructions[i], instructions[i + 1]) for i in range(0, 1500)]
    pairs += [(r["instruction"] + " " + r["input"], r["output"]) for r in code[:500]]
    davinci = _alpaca_eval_outputs("text_davinci_003")
    gpt4 = _alpaca_eval_outputs("gpt4_1106_preview")
    # Long, multilingual texts (AlpacaEval has Spanish, Chinese, code, emoji...).
    pairs += [(a["output"], b["output"]) for a, b in zip(davinci[:120], gpt4[:120])]
    pairs += [(a["instruction"], rng.choice(instructions)) for a in davinci[:300]]
    pairs += [("", "x"), ("x", ""), ("", ""), ("!!!", "a b"), ("Ünïcode ÄÖÜ ß İstanbul", "unicode istanbul")]
    return pairs


def test_tokenize_matches_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    for a, b in _pairs()[:800]:
        assert tokenize(a) == scorer._tokenizer.tokenize(a)
        assert tokenize(b) == scorer._tokenizer.tokenize(b)


def test_rouge_l_identical_to_rouge_score_on_shipped_pairs():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pairs = _pairs()
    assert len(pairs) > 2300
    nonzero = 0
    for prediction, reference in pairs:
        expected = scorer.score(reference, prediction)["rougeL"].fmeasure
        got = rouge_l(prediction, reference)
        assert got == expected, (prediction[:80], reference[:80], got, expected)
        nonzero += expected > 0
    assert nonzero > 2000  # the comparison is not a pile of zeros


def test_rouge_l_with_stemmer_identical():
    """nltk is a runtime dependency: stemming works on a plain install and equals rouge-score's."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for prediction, reference in _pairs()[:400]:
        assert rouge_l(prediction, reference, use_stemmer=True) == \
            scorer.score(reference, prediction)["rougeL"].fmeasure


def test_lcs_bit_parallel_matches_dynamic_programming():
    rng = random.Random(1)
    for _ in range(500):
        a = [rng.randrange(6) for _ in range(rng.randrange(0, 90))]
        b = [rng.randrange(6) for _ in range(rng.randrange(0, 90))]
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                table[i][j] = table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
        assert lcs_length(a, b) == table[-1][-1]


def _perturbed_pool(n_base: int = 75) -> list[str]:
    """Real instructions plus edited copies, so that many pairs are near the 0.7 threshold."""
    rng = random.Random(2)
    base = [r["instruction"] for r in _codealpaca()[:n_base]]
    out = list(base)
    for text in base:
        words = text.split()
        for _ in range(2):
            w = list(words)
            for _ in range(rng.randrange(1, 4)):
                op = rng.randrange(3)
                if op == 0 and len(w) > 1:
                    del w[rng.randrange(len(w))]
                elif op == 1:
                    w.insert(rng.randrange(len(w) + 1), rng.choice(["the", "a", "given", "list", "code"]))
                else:
                    w[rng.randrange(len(w))] = rng.choice(["write", "number", "string", "it"])
            out.append(" ".join(w))
    rng.shuffle(out)
    return out


def test_near_duplicate_index_is_exact_against_brute_force():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    texts = _perturbed_pool()
    index = NearDuplicateIndex(threshold=0.7)
    kept: list[str] = []
    dropped = 0
    for text in texts:
        scores = [scorer.score(text, other)["rougeL"].fmeasure for other in kept]
        best = max(scores, default=0.0)
        match = index.add_if_novel(text)
        if best > 0.7:
            dropped += 1
            assert match is not None and match.score == best
            assert scores[match.index] == best
        else:
            assert match is None
            kept.append(text)
    assert dropped > 30 and len(kept) > 60
    # The prefilter is what makes it fast: far fewer LCS computations than pairs.
    assert index.pairs_checked < len(texts) * len(kept) / 20


def test_dedup_keeps_first_of_near_duplicates_and_respects_seed_pool():
    texts = ["Give three tips for staying healthy.", "Give three tips for staying very healthy.",
             "Translate the sentence into French.", "What is the capital of France?"]
    assert dedup(texts) == [0, 2, 3]
    assert dedup(texts, pool=["what is the capital of france"]) == [0, 2]
    assert dedup(texts, threshold=1.0) == [0, 1, 2, 3]
