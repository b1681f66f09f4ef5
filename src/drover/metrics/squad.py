"""SQuAD exact match and F1 (used for TyDi QA GoldP and closed-book).

Reference implementation: the official SQuAD v1.1 evaluation script (as wrapped by
Hugging Face `evaluate.load("squad")`, which open-instruct's TyDi QA evaluation uses):
lowercase, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace; F1
over whitespace tokens with multiset overlap; the best score over the gold answers;
percentages.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace.

    >>> normalize_answer("The  Eiffel-Tower!")
    'eiffeltower'
    >>> normalize_answer("an apple, a pear")
    'apple pear'
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def f1_score(prediction: str, ground_truth: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    common = Counter(pred_tokens) & Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def metric_max_over_ground_truths(metric: Callable[[str, str], float], prediction: str,
                                  ground_truths: Sequence[str]) -> float:
    return max(metric(prediction, gt) for gt in ground_truths)


def squad_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """{"exact_match", "f1"} in percent over examples, each the best over its gold answers."""
    if len(predictions) != len(answers):
        raise ValueError("one list of gold answers per prediction")
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    em = sum(metric_max_over_ground_truths(exact_match_score, p, g) for p, g in zip(predictions, answers))
    f1 = sum(metric_max_over_ground_truths(f1_score, p, g) for p, g in zip(predictions, answers))
    return {"exact_match": 100.0 * em / len(predictions), "f1": 100.0 * f1 / len(predictions)}
