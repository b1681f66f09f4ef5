"""Rewards: verifiable kinds by hand, the unit-test reward in the sandbox, weighted specs."""

from __future__ import annotations

import pytest

from drover.errors import ConfigError
from drover.records import Conversation, Message, Ranked
from drover.rewards import REWARDS
from drover.rewards.kind import RewardInput, RewardSpec, RewardTerm, reference_answer


def gsm_record(answer: str) -> Conversation:
    return Conversation("q1", [Message("user", "How many?"), Message("assistant", answer)])


def items(record, *responses):
    return [RewardInput(list(record.messages[:1]), text, record) for text in responses]


def spec(*terms: dict) -> RewardSpec:
    return RewardSpec([RewardTerm(**t) for t in terms])


def test_every_kind_is_registered_and_loads():
    assert REWARDS.names() == ["gsm-match", "judge", "judge-pairwise", "length", "regex", "reward-model", "unit-tests"]
    for name in REWARDS.names():
        assert REWARDS.get(name).name == name


def test_reference_answer_sources():
    assert reference_answer(gsm_record("so #### 7")) == "so #### 7"
    assert reference_answer(Ranked("r", [Message("user", "q")], [], reference="#### 3")) == "#### 3"
    assert reference_answer(Conversation("c", [Message("user", "q")], meta={"answer": "#### 9"})) == "#### 9"


def test_gsm_match_uses_the_gsm_extraction():
    record = gsm_record("Natalia sold 48+24 = 72 clips.\n#### 1,072")
    outputs = ("So the answer is 1072.", "1,072", "I think 1071", "the answer is 1072.0 apples", "")
    totals, terms = spec({"kind": "gsm-match"}).score(items(record, *outputs))
    assert totals == [1.0, 1.0, 0.0, 0.0, 0.0]     # the benchmark's default: "1072.0" != "1072", as open-instruct
    assert terms == {"gsm-match": totals}
    totals, _ = spec({"kind": "gsm-match", "params": {"match": "value"}}).score(items(record, *outputs))
    assert totals == [1.0, 1.0, 0.0, 1.0, 0.0]     # the benchmark's match=value: by value


def test_regex_modes():
    record = gsm_record("#### 1")
    assert spec({"kind": "regex", "params": {"pattern": r"\d"}}).score(items(record, "a1", "ab"))[0] == [1.0, 0.0]
    full = spec({"kind": "regex", "params": {"pattern": r"\d+", "mode": "fullmatch"}})
    assert full.score(items(record, " 42 ", "42a"))[0] == [1.0, 0.0]
    frac = spec({"kind": "regex", "params": {"pattern": "[0-9]", "mode": "fraction"}})
    assert frac.score(items(record, "a1b2", ""))[0] == [0.5, 0.0]


def test_length_reward_by_hand():
    s = spec({"kind": "length", "params": {"target": 10, "tolerance": 1, "falloff": 4}})
    # |n - 10| - 1 beyond the tolerance, then linear over 4 characters
    assert s.score(items(gsm_record("#### 1"), "x" * 10, "x" * 11, "x" * 12, "x" * 14, "x" * 30))[0] == \
        [1.0, 1.0, 0.75, 0.25, 0.0]


def test_weighted_sum_and_term_names():
    s = spec({"kind": "gsm-match", "weight": 2.0}, {"kind": "regex", "weight": -0.5, "params": {"pattern": "!"}},
             {"kind": "regex", "name": "short", "params": {"pattern": "^.{0,3}$"}})
    totals, terms = s.score(items(gsm_record("#### 5"), "5!", "6"))
    assert totals == [2.0 - 0.5 + 1.0, 0.0 + 1.0]
    assert list(terms) == ["gsm-match", "regex", "short"]


def test_unit_tests_reward_runs_code_in_the_sandbox():
    record = Conversation("p", [Message("user", "write add")], meta={"tests": "assert add(2, 3) == 5"})
    s = spec({"kind": "unit-tests"})
    good = "Here it is:\n```python\ndef add(a, b):\n    return a + b\n```"
    forge = "import os\nos._exit(0)"      # exiting early must not look like a pass
    totals, _ = s.score(items(record, good, "def add(a, b):\n    return a - b", forge))
    assert totals == [1.0, 0.0, 0.0]


def test_unit_tests_reward_needs_tests_in_the_record():
    s = spec({"kind": "unit-tests"})
    with pytest.raises(ConfigError, match="record 'q1' has no meta.tests"):
        s.score(items(gsm_record("#### 1"), "x = 1"))


@pytest.mark.parametrize("terms, message", [
    ([], "at least one reward term"),
    ([{"kind": "gsm-macth"}], "did you mean 'gsm-match'"),
    ([{"kind": "regex", "params": {"patern": "x"}}], "rewards\\[0\\].params: unknown key 'patern'"),
    ([{"kind": "regex", "params": {"pattern": "("}}], "is not a regular expression"),
    ([{"kind": "regex", "params": {"pattern": "x", "mode": "some"}}], "mode must be"),
    ([{"kind": "reward-model"}], "params.path is required"),
    ([{"kind": "judge"}], "params.llm is required"),
    ([{"kind": "judge-pairwise"}], "params.llm is required"),
])
def test_bad_reward_specs_are_config_errors(terms, message):
    with pytest.raises(ConfigError, match=message):
        spec(*terms)


def test_judge_reward_goes_through_the_client_and_its_cache(tmp_path):
    """A judge over HTTP (the fake OpenAI-compatible server on 127.0.0.1 echoes the prompt, an
    unreadable rating: no reward (None, not a guessed 0) after the stricter retry); a second run
    pays for nothing."""
    from drover.llm.testing import FakeOpenAIServer
    from drover.rewards.kind import RewardContext

    with FakeOpenAIServer() as server:
        terms = [RewardTerm("judge", params={"llm": f"{server.base_url}#fake"})]
        context = RewardContext(tmp_path / "llm-cache.sqlite")
        first = RewardSpec(terms, context).score(items(gsm_record("#### 1"), "one", "two"))[0]
        sent = len(server.requests)
        again = RewardSpec(terms, context).score(items(gsm_record("#### 1"), "one", "two"))[0]
        assert first == again == [None, None]
        assert sent == 4 and len(server.requests) == sent     # 2 ratings + 2 stricter retries, then cached


def test_judge_rating_scaled(monkeypatch, tmp_path):
    """A readable rating of 8 gives 8 x scale."""
    import drover.llm.client as client
    from drover.completions import Choice, Completion
    from drover.rewards.kind import RewardContext

    class Rater:
        def run(self, requests, desc="", total=None):
            return [Completion(choices=[Choice(text="8\nClear and correct.")]) for _ in requests]

    monkeypatch.setattr(client, "LLM", lambda config, cache: Rater())
    terms = [RewardTerm("judge", params={"llm": "openai:judge", "scale": 0.1})]
    assert RewardSpec(terms, RewardContext(tmp_path / "c.sqlite")).score(
        items(gsm_record("#### 1"), "an answer"))[0] == pytest.approx([0.8])


def test_pairwise_judge_both_orders(monkeypatch, tmp_path):
    """The judge scores (answer 1, answer 2); the response is second in order ab, first in ba.
    This judge prefers whichever answer says GOOD: a GOOD response wins both orders (1.0), a
    plain one loses both (0.0); a judge that always prefers the first answer gives 0.5."""
    import drover.llm.client as client
    from drover.completions import Choice, Completion
    from drover.rewards.kind import RewardContext

    def likes_good(request):   # prefers a GOOD response to the reference, the reference to a plain one
        user = request.messages[-1][1]
        winner, loser = ("GOOD", "the reference") if "GOOD" in user else ("the reference", "plain")
        return "9 2" if user.index(winner) < user.index(loser) else "2 9"

    class Judge:
        def __init__(self, verdict):
            self.verdict = verdict

        def run(self, requests, desc="", total=None):
            return [Completion(choices=[Choice(text=self.verdict(r) + "\nreasons")]) for r in requests]

    record = Conversation("q", [Message("user", "Why?"), Message("assistant", "the reference answer")])
    terms = [RewardTerm("judge-pairwise", params={"llm": "openai:judge"})]
    monkeypatch.setattr(client, "LLM", lambda config, cache: Judge(likes_good))
    assert RewardSpec(terms, RewardContext(tmp_path / "c")).score(items(record, "GOOD one", "plain"))[0] == [1.0, 0.0]
    monkeypatch.setattr(client, "LLM", lambda config, cache: Judge(lambda r: "9 2"))
    assert RewardSpec(terms, RewardContext(tmp_path / "c")).score(items(record, "GOOD one"))[0] == [0.5]


@pytest.mark.parametrize("kind", ["judge", "judge-pairwise"])
def test_a_local_judge_is_an_input_whose_content_keys_the_run(tmp_path, kind):
    """A local judge (hf:PATH or PATH) is read like a reward model: its directory is one of the
    spec's inputs, so an online run resumed after the judge was retrained in place refuses
    (the models' fingerprints are in its resume key); an endpoint judge names no path."""
    judge = tmp_path / "judge"
    judge.mkdir()
    for llm in (f"hf:{judge}", str(judge)):
        assert spec({"kind": kind, "params": {"llm": llm}}).input_paths == [str(judge)]
    assert spec({"kind": kind, "params": {"llm": "http://127.0.0.1:9/v1#judge"}}).input_paths == []
    assert spec({"kind": kind, "params": {"llm": "openai:gpt-4o-mini"}}).input_paths == []
