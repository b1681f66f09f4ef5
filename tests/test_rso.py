"""RSO (statistical rejection sampling, Liu et al. 2023): sampler statistics, pairs, records, CLI."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from drover.infer.rso import first_round_pairs, rejection_sample, rso_file, rso_records, tournament_pairs
from drover.records import Message, Ranked, Response, read_ranked, write_jsonl

REWARDS = [0.3, -1.0, 1.2, 0.0, 0.9, -0.4]


def softmax(xs: list[float], beta: float) -> list[float]:
    w = [math.exp(x / beta) for x in xs]
    return [v / sum(w) for v in w]


def chi_square(counts: Counter, expected: dict, trials: int) -> float:
    return sum((counts[key] - trials * p) ** 2 / (trials * p) for key, p in expected.items())


def test_first_draw_follows_softmax_of_reward_over_beta():
    rng = random.Random(1)
    trials, beta = 20000, 0.5
    counts = Counter(rejection_sample(REWARDS, 1, beta, rng)[0] for _ in range(trials))
    expected = dict(enumerate(softmax(REWARDS, beta)))
    assert chi_square(counts, expected, trials) < 20.5               # chi2(5 df), p = 0.001
    uniform = {i: 1 / len(REWARDS) for i in range(len(REWARDS))}
    assert chi_square(counts, uniform, trials) > 1000                # the test can tell pi_r from pi_sft


def test_accepted_samples_leave_the_pool_and_later_draws_follow_the_rest():
    """P(i then j) = s_i * s_j / (1 - s_i): sequential softmax without replacement."""
    rng = random.Random(2)
    trials, beta = 30000, 1.0
    s = softmax(REWARDS, beta)
    counts = Counter(tuple(rejection_sample(REWARDS, 2, beta, rng)) for _ in range(trials))
    assert all(a != b for a, b in counts)
    expected = {(i, j): s[i] * s[j] / (1 - s[i]) for i in range(6) for j in range(6) if i != j}
    assert chi_square(counts, expected, trials) < 59.7                # chi2(29 df), p = 0.001
    tv = 0.5 * sum(abs(counts[key] / trials - p) for key, p in expected.items())
    assert tv < 0.03


def test_small_beta_takes_the_top_rewards_and_large_beta_is_near_uniform():
    rng = random.Random(3)
    top3 = sorted(range(6), key=lambda i: -REWARDS[i])[:3]
    for _ in range(200):
        assert rejection_sample(REWARDS, 3, 1e-4, rng) == top3       # beta -> 0: best-of-n order
    trials = 12000
    counts = Counter(rejection_sample(REWARDS, 1, 1e4, rng)[0] for _ in range(trials))
    assert max(abs(counts[i] / trials - 1 / 6) for i in range(6)) < 0.02


def test_k_beyond_the_pool_returns_every_candidate_once_and_bad_inputs_fail():
    rng = random.Random(4)
    got = rejection_sample(REWARDS, 50, 0.5, rng)
    assert sorted(got) == list(range(6))
    assert rejection_sample([], 4, 0.5, rng) == []
    with pytest.raises(ValueError, match="beta"):
        rejection_sample(REWARDS, 2, 0.0, rng)
    with pytest.raises(ValueError, match="finite"):
        rejection_sample([1.0, float("nan")], 2, 1.0, rng)


def test_first_round_pairs_are_consecutive_and_ordered_by_reward():
    rewards = {0: 0.1, 1: 0.5, 2: 2.0, 3: -1.0, 4: 0.7, 5: 0.7, 6: 9.0}
    assert first_round_pairs([0, 1, 2, 3, 4, 5, 6], rewards) == [(1, 0), (2, 3)]   # tie and odd one out dropped


def test_tournament_pairs_play_winners_until_one_is_left():
    rewards = {0: 0.1, 1: 0.5, 2: 2.0, 3: -1.0, 4: 0.7, 5: 0.3, 6: 0.2, 7: 3.0}
    assert tournament_pairs(list(range(8)), rewards) == [(1, 0), (2, 3), (4, 5), (7, 6), (2, 1), (7, 4), (7, 2)]
    assert len(tournament_pairs([0, 1, 2], rewards)) == 2                          # 2 gets a bye, then plays 1
    assert tournament_pairs([0, 1, 2], rewards) == [(1, 0), (2, 1)]


def ranked(rid: str, rewards: list[float]) -> Ranked:
    order = sorted(range(len(rewards)), key=lambda i: -rewards[i])
    return Ranked(rid, [Message("user", f"prompt {rid}")],
                  [Response(f"answer {i}", rewards[i], f"policy#{i}") for i in order], None, {"origin": "test"})


def test_records_are_deterministic_per_seed_and_consistent_with_the_ranking():
    rec = ranked("p1", [0.1 * i for i in range(16)])
    a = rso_records(rec, 8, 0.5, seed=7)
    assert [r.to_dict() for r in a] == [r.to_dict() for r in rso_records(rec, 8, 0.5, seed=7)]
    assert any(r.to_dict() != x.to_dict() for seed in range(1, 6)
               for r, x in zip(rso_records(rec, 8, 0.5, seed=seed), a))
    assert len(a) == 4
    for p, pair in enumerate(a):
        assert pair.id == f"p1#rso{p}"
        hi, lo = pair.meta["rso"]["pair"]
        assert [x.content for x in pair.responses] == [rec.responses[hi].content, rec.responses[lo].content]
        assert pair.responses[0].score > pair.responses[1].score
        assert pair.pairs() == [(0, 1)]
        assert pair.meta["origin"] == "test"
        info = pair.meta["rso"]
        assert info["beta"] == 0.5 and info["k"] == 8 and info["n"] == 16 and len(set(info["accepted"])) == 8
    games = rso_records(rec, 8, 0.5, seed=7, pairing="tournament")
    assert len(games) == 7 and [g.to_dict() for g in games[:4]] == [r.to_dict() for r in a]
    assert all(g.responses[0].score > g.responses[1].score for g in games)
    everything = rso_records(rec, 8, 0.5, seed=7, pairing="all")
    assert len(everything) == 1 and everything[0].id == "p1"
    scores = [x.score for x in everything[0].responses]
    assert scores == sorted(scores, reverse=True) and len(scores) == 8
    assert sorted(everything[0].meta["rso"]["accepted"]) == sorted(a[0].meta["rso"]["accepted"])
    # k clipped to the scored pool; unscored responses never enter it
    small = Ranked("p2", rec.messages, [Response("x", 1.0), Response("y", None), Response("z", 0.0)])
    out = rso_records(small, 8, 0.5)
    assert out[0].meta["rso"]["k"] == 2 and sorted(out[0].meta["rso"]["accepted"]) == [0, 2]
    assert rso_records(Ranked("p3", rec.messages, [Response("only", 1.0)]), 8, 0.5) == []


def test_rso_file_resumes_without_duplicates(tmp_path):
    records = [ranked(f"r{j}", [math.sin(j + i) for i in range(8)]) for j in range(5)]
    out = tmp_path / "rso.jsonl"
    first = rso_file(records[:3], out, 4, 0.5)
    second = rso_file(records, out, 4, 0.5)
    assert first.written == 6 and second.skipped_done == 6 and second.written == 4
    got = list(read_ranked(out))
    assert len({r.id for r in got}) == len(got) == 10
    assert second.mean_accepted > second.mean_all


def rerank_rso(tiny_model_dir, tmp_path, extra: list[str]) -> int:
    from drover.cli import main

    return main(["rerank", "--input", str(tmp_path / "in.jsonl"), "--reward-model", str(tiny_model_dir),
                 "--run-dir", str(tmp_path / "run"), "--select", "rso", "--rso-k", "4", "--batch-size", "16",
                 *extra])


def test_rerank_select_rso_writes_pairs_from_the_reward_scores(tiny_model_dir, tmp_path):
    """A randomly initialised scalar head on the tiny model is a (meaningless) reward model:
    enough to check that rso.jsonl is built from the scores written to ranked.jsonl."""
    src = [Ranked(f"q{j}", [Message("user", f"question {j}?")],
                  [Response(f"reply {j} number {i} " + "word " * i) for i in range(6)]) for j in range(3)]
    write_jsonl(tmp_path / "in.jsonl", src)
    assert rerank_rso(tiny_model_dir, tmp_path, ["--rso-beta", "1e-6"]) == 0
    data = tmp_path / "run" / "data"
    ranking = {r.id: r for r in read_ranked(data / "ranked.jsonl")}
    pairs = list(read_ranked(data / "rso.jsonl"))
    assert len(pairs) == 6
    for pair in pairs:
        base = ranking[pair.id.split("#")[0]]
        hi, lo = pair.meta["rso"]["pair"]
        assert (pair.responses[0].content, pair.responses[0].score) == (base.responses[hi].content,
                                                                          base.responses[hi].score)
        assert pair.responses[0].score > pair.responses[1].score
        assert sorted(pair.meta["rso"]["accepted"]) == [0, 1, 2, 3]   # tiny beta: the top 4 by reward
    assert rerank_rso(tiny_model_dir, tmp_path, ["--rso-beta", "1e-6"]) == 0    # resumed
    assert len(list(read_ranked(data / "rso.jsonl"))) == 6
    assert rerank_rso(tiny_model_dir, tmp_path, ["--rso-k", "1"]) == 2          # config error
