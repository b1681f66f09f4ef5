"""SQuAD v1.1 / MLQA-style EM and F1 on official-style examples, values worked out by hand."""

from __future__ import annotations

import doctest

import pytest

import drover.metrics.squad as squad
from drover.metrics.squad import exact_match_score, f1_score, normalize_answer, squad_scores


def test_doctests():
    assert doctest.testmod(squad).failed == 0


def test_normalization_follows_the_official_script():
    assert normalize_answer("The Denver Broncos") == "denver broncos"
    assert normalize_answer("  Santa   Clara,  California. ") == "santa clara california"
    assert normalize_answer("A theory") == "theory"
    assert normalize_answer("theatre") == "theatre"  # "the" only as a word
    assert normalize_answer("1,000 (approx.)") == "1000 approx"
    # ASCII punctuation only, as SQuAD v1.1 (string.punctuation): CJK/Arabic marks stay.
    assert normalize_answer("東京。") == "東京。"


def test_scores_on_squad_style_examples():
    # Official dev example 56be4db0acb8001400a502ec: answers "Denver Broncos" (x3).
    assert exact_match_score("Denver Broncos", "Denver Broncos") == 1.0
    assert exact_match_score("the Denver Broncos!", "Denver Broncos") == 1.0
    # F1: pred tokens {denver, broncos, team}, gold {denver, broncos}: P=2/3, R=1, F1=0.8.
    assert f1_score("Denver Broncos team", "Denver Broncos") == pytest.approx(0.8)
    assert f1_score("Carolina Panthers", "Denver Broncos") == 0.0
    # Repeated tokens count as a multiset: pred "the the cat" -> "cat"? articles removed -> ["cat"].
    assert f1_score("the the cat", "a cat sat") == pytest.approx(2 * 1 * 0.5 / 1.5)
    scores = squad_scores(["Denver Broncos team", "Levi's Stadium", "gold"],
                          [["Denver Broncos"], ["Levi's Stadium", "Levi's Stadium in the San Francisco Bay Area"],
                           ["golden anniversary", "gold-themed"]])
    # EM: 0, 1, 0 -> 33.33; F1: 0.8, 1.0, max(0, 0) -> 60.0 ("gold-themed" -> "goldthemed").
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(60.0)
    assert squad_scores([], []) == {"exact_match": 0.0, "f1": 0.0}
