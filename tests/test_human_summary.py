"""Results of a study, checked against numbers worked out by hand (Tülu Appendix G's measures)."""

from __future__ import annotations

import csv
import doctest
import io

import pytest

from drover.human import agreement
from drover.human.agreement import cohen_kappa, tie_discounted
from drover.human.forms import load_form
from drover.human.store import Answer
from drover.human.summary import headline_metrics, summarize_answers, to_csv


def ans(rater: str, item: str, flags: tuple[str, ...] = (), **answers) -> Answer:
    return Answer(rater, item, 1, dict(answers), "", list(flags), "2026-12-01T00:00:00Z")


def test_agreement_doctests_run():
    assert doctest.testmod(agreement).failed == 0


def test_cohen_kappa_by_hand():
    # rater 1: y y n n y n ; rater 2: y n n n y y
    pairs = list(zip("yynnyn", "ynnnyy"))
    # p_o = 4/6; p_e = (3/6)(3/6) + (3/6)(3/6) = 0.5; kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert cohen_kappa(pairs) == pytest.approx(1 / 3)
    # three categories: p_o = 3/5; r1 marginals +1:2, 0:2, -1:1; r2 +1:2, 0:1, -1:2
    # p_e = (2*2 + 2*1 + 1*2) / 25 = 8/25; kappa = (15/25 - 8/25) / (17/25) = 7/17
    assert cohen_kappa([(1, 1), (1, 0), (0, 0), (0, -1), (-1, -1)]) == pytest.approx(7 / 17)
    assert cohen_kappa([(1, 1), (1, 1)]) is None and cohen_kappa([]) is None
    assert cohen_kappa([(1, -1), (-1, 1)]) == pytest.approx(-1.0)


def test_cohen_kappa_equals_sklearn():
    from sklearn import metrics

    x = [1, 0, -1, 1, 1, 0, -1, -1, 0, 1, 1, 0]
    y = [1, 0, 1, -1, 1, 0, -1, 0, 0, 1, 0, 0]
    assert cohen_kappa(list(zip(x, y))) == pytest.approx(metrics.cohen_kappa_score(x, y))


def test_tie_discounted_accuracy_as_tulu_appendix_g():
    # clearly and slightly are merged first: +2 vs +1 agree; +1 vs 0 is half; +2 vs -1 is zero
    assert [tie_discounted(agreement.merged(x), agreement.merged(y)) for x, y in
            [(2, 1), (1, 0), (2, -1), (0, 0), (-2, -1), (0, -2)]] == [1.0, 0.5, 0.0, 1.0, 1.0, 0.5]


def test_tulu_summary_pools_by_item_and_reports_per_rater():
    form = load_form("tulu")
    answers = [
        # i1 and i2 are the overlap set (alice and bob); i3 only alice; i4 only bob, flagged invalid
        ans("alice", "i1", acceptable_a=True, acceptable_b=False, preference=2),
        ans("bob", "i1", acceptable_a=True, acceptable_b=True, preference=1),
        ans("alice", "i2", acceptable_a=False, acceptable_b=True, preference=-1),
        ans("bob", "i2", acceptable_a=True, acceptable_b=True, preference=0),
        ans("alice", "i3", acceptable_a=True, acceptable_b=False, preference=2),
        ans("bob", "i4", ("invalid",)),
    ]
    s = summarize_answers(form, answers)
    assert s["ratings"] == 6 and s["valid_ratings"] == 5 and s["flags"] == {"invalid": 1, "too_hard": 0}
    p = s["questions"]["preference"]["pooled"]
    # per item: i1 = win (both), i2 = half loss half tie, i3 = win -> win 2/3, tie 1/6, loss 1/6 over n = 3 items
    assert p["n_items"] == 3 and p["n_ratings"] == 5
    assert (p["win"], p["tie"], p["loss"]) == pytest.approx((2 / 3, 1 / 6, 1 / 6))
    assert p["counts"] == {"win": 3, "tie": 1, "loss": 1}
    assert p["levels"]["A is clearly better"] == pytest.approx((0.5 + 1) / 3)
    assert p["levels"]["A is slightly better"] == pytest.approx(0.5 / 3)
    per = s["questions"]["preference"]["per_rater"]
    assert per["alice"]["n"] == 3 and per["alice"]["win"] == 2 and per["alice"]["loss"] == 1
    assert per["bob"]["n"] == 2 and per["bob"]["win"] == 1 and per["bob"]["tie"] == 1
    agree = s["questions"]["preference"]["agreement"]
    # i1: +2 vs +1 -> 1; i2: -1 vs 0 -> 0.5; mean 0.75
    assert agree["n_items"] == 2 and agree["tie_discounted_accuracy"] == pytest.approx(0.75)
    # merged labels (alice, bob): (1, 1), (-1, 0); p_o = 1/2; p_e = (1/2)(1/2) [label 1] + 0 = 1/4; kappa = 1/3
    assert agree["cohen_kappa"] == pytest.approx(1 / 3)
    assert agree["per_rater"]["alice"]["tie_discounted_accuracy"] == pytest.approx(0.75)
    acc = s["acceptance"]
    # system a per item: i1 1, i2 1/2, i3 1 -> 5/6; system b: i1 1/2, i2 1, i3 0 -> 1/2
    assert acc["a"]["rate"] == pytest.approx(5 / 6) and acc["b"]["rate"] == pytest.approx(1 / 2)
    assert acc["a"]["per_rater"]["alice"]["rate"] == pytest.approx(2 / 3)
    # judgements on overlap: i1 a agree, i1 b disagree, i2 a disagree, i2 b agree -> 0.5
    assert acc["agreement"]["agreement"] == pytest.approx(0.5) and acc["agreement"]["n_judgements"] == 4
    # yes/no pairs (alice, bob): (T,T) (F,T) (F,T) (T,T): p_o = 1/2; alice T 1/2, bob T 1 -> p_e = 1/2 -> kappa 0
    assert acc["agreement"]["cohen_kappa"] == pytest.approx(0.0)
    metrics = headline_metrics(s)
    assert metrics["preference.win"] == pytest.approx(2 / 3) and metrics["acceptance.a"] == pytest.approx(5 / 6)
    rows = list(csv.reader(io.StringIO(to_csv(s))))
    assert rows[0] == ["section", "question", "rater", "metric", "value"]
    assert ["preference", "preference", "", "win", str(2 / 3)] in rows
    assert ["agreement", "acceptance", "", "agreement", "0.5"] in rows


def test_hhh_three_questions_and_lights_kappa_over_three_raters():
    form = load_form("hhh")
    h = dict(honesty=0, harmlessness=0)
    answers = [ans("r1", "x", helpfulness=2, **h), ans("r2", "x", helpfulness=1, **h), ans("r3", "x", helpfulness=-1, **h),
               ans("r1", "y", helpfulness=-2, **h), ans("r2", "y", helpfulness=-1, **h), ans("r3", "y", helpfulness=-1, **h)]
    s = summarize_answers(form, answers)
    assert set(s["questions"]) == {"helpfulness", "honesty", "harmlessness"} and "acceptance" not in s
    agree = s["questions"]["helpfulness"]["agreement"]
    # pairs on x: r1-r2 1, r1-r3 0, r2-r3 0 -> 1/3 ; on y: all agree -> 1 ; mean over items 2/3
    assert agree["n_pairs"] == 6 and agree["tie_discounted_accuracy"] == pytest.approx(2 / 3)
    # Cohen per pair: r1|r2 (1,1),(-1,-1) -> 1; r1|r3 (1,-1),(-1,-1): p_o 1/2, p_e (1/2)(0)+(1/2)(1) = 1/2 -> 0;
    # r2|r3 the same -> 0. Light's kappa = 1/3
    assert agree["cohen_kappa_per_pair"] == pytest.approx({"r1|r2": 1.0, "r1|r3": 0.0, "r2|r3": 0.0})
    assert agree["cohen_kappa"] == pytest.approx(1 / 3)
    assert agree["per_rater"]["r1"]["cohen_kappa"] == pytest.approx(0.5)
    # everyone said tie on honesty: agreement 1, kappa undefined (p_e = 1) -> None, never a made-up number
    assert s["questions"]["honesty"]["agreement"]["tie_discounted_accuracy"] == 1.0
    assert s["questions"]["honesty"]["agreement"]["cohen_kappa"] is None
    p = s["questions"]["helpfulness"]["pooled"]
    assert (p["win"], p["tie"], p["loss"]) == pytest.approx((1 / 3, 0.0, 2 / 3)) and p["n_items"] == 2


def test_display_order_never_changes_the_canonical_answer():
    form = load_form("tulu")
    shown = {"acceptable_a": "yes", "acceptable_b": "no", "preference": "2"}  # displayed A accepted and clearly better
    straight, _ = form.parse(shown, swapped=False, required=True)
    flipped, _ = form.parse(shown, swapped=True, required=True)
    assert straight == {"acceptable_a": True, "acceptable_b": False, "preference": 2}
    assert flipped == {"acceptable_a": False, "acceptable_b": True, "preference": -2}  # displayed A was system b
    assert form.to_display(flipped, swapped=True) == shown
    _, problems = form.parse({"acceptable_a": "maybe", "preference": "7"}, swapped=False, required=True)
    assert len(problems) == 3
