"""LLMBar meta-evaluation: strategies' stages, the Swap synthesis, accuracy and agreement."""

from __future__ import annotations

import re

import pytest

from drover.judges import llmbar
from drover.judges.judge import JudgeContext
from drover.completions import Choice, Completion


def _ctx(judge) -> JudgeContext:
    return JudgeContext(judge, "rule", "rule", None)


class RuleJudge:
    """Always picks the shorter output (position-free), or always the first position."""

    def __init__(self, mode: str):
        self.mode = mode
        self.prompts: list[str] = []

    def run(self, requests, desc="", total=None):
        for r in requests:
            user = r.messages[-1][1]
            self.prompts.append(user)
            if "# Output (a)" not in user:
                yield Completion(choices=[Choice("Q1: Is it concise?" if "questions" in user else "A reference.")])
                continue
            a = user.split("# Output (a):\n", 1)[1].split("\n\n# Output (b):\n", 1)[0]
            b = user.split("# Output (b):\n", 1)[1].split("\n\n#", 1)[0]
            pick = "a" if self.mode == "first" or len(a) <= len(b) else "b"
            text = f"Output ({pick})" if "Therefore" not in user or "Debate" in user \
                else f"Output ({pick}) is shorter. Therefore, Output ({pick}) is better."
            yield Completion(choices=[Choice(text)])


@pytest.mark.parametrize("strategy", list(llmbar.STRATEGIES))
def test_every_strategy_fills_its_prompts(strategy: str) -> None:
    judge = RuleJudge("shorter")
    judgments = llmbar.judge_sets(_ctx(judge), llmbar.get_strategy(strategy), ["Natural"], limit=3)
    assert len(judgments) == 6
    for prompt in judge.prompts:
        assert not re.search(r"\{(instruction|output_1|output_2|questions|reference|explanation_\d)\}", prompt)
    n_aux = len(llmbar.get_strategy(strategy).auxiliary)
    assert len(judge.prompts) == 3 * n_aux + 6  # shorter-judge never disagrees with itself: no synthesis


def test_accuracy_and_agreement_match_a_hand_count() -> None:
    rows = llmbar.load_set("Natural", 10)
    shorter = [1 if len(r["output_1"]) <= len(r["output_2"]) else 2 for r in rows]
    expected = 100 * sum(s == int(r["label"]) for s, r in zip(shorter, rows)) / 10
    out = llmbar.summarize(llmbar.judge_sets(_ctx(RuleJudge("shorter")), llmbar.get_strategy("rules"),
                                             ["Natural"], limit=10), ["Natural"])
    assert out["metrics"]["Natural/accuracy"] == pytest.approx(expected)
    assert out["metrics"]["Natural/agreement"] == 100.0
    first = llmbar.summarize(llmbar.judge_sets(_ctx(RuleJudge("first")), llmbar.get_strategy("vanilla"),
                                               ["Natural"], limit=10), ["Natural"])
    assert first["metrics"]["Natural/accuracy"] == 50.0  # right in exactly one order per pair
    assert first["metrics"]["Natural/agreement"] == 0.0


def test_swap_synthesizes_only_conflicting_pairs() -> None:
    judge = RuleJudge("first")  # explain-then-choose always prefers position (a): the orders conflict
    judgments = llmbar.judge_sets(_ctx(judge), llmbar.get_strategy("swap"), ["Manual"], limit=2)
    debates = [p for p in judge.prompts if "# Debate" in p]
    assert len(debates) == 4 and all(j.meta.get("synthesized") for j in judgments)
    # In each debate, Assistant (a)'s explanation argues for Output (a), with the names as shown.
    for debate in debates:
        part = debate.split("who thinks Output (a) is better:\n", 1)[1].split("\n## ", 1)[0]
        assert "Therefore, Output (a) is better." in part


def test_unknown_strategy_and_set() -> None:
    from drover.errors import ConfigError

    assert llmbar.get_strategy("Metrics+Reference+Rules").name == "metrics-reference-rules"
    with pytest.raises(ConfigError, match="did you mean"):
        llmbar.get_strategy("refrence")
    with pytest.raises(ConfigError):
        llmbar.load_set("Adversarial")
