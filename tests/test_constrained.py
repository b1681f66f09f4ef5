"""Constrained decoding in the local engine (llguidance): every output is in the constraint's
language, greedy unconstrained rows are unchanged, and bad constraints are errors."""

from __future__ import annotations

import json
import re

import pytest

from drover.llm.client import LLM
from drover.llm.config import LLMConfig
from drover.completions import Constraint, Request

VERDICT = {"type": "object", "properties": {"verdict": {"enum": ["A", "B", "tie"]},
                                            "score": {"type": "integer", "minimum": 1, "maximum": 10}},
           "required": ["verdict", "score"], "additionalProperties": False}


@pytest.fixture(scope="module")
def local(tiny_model_dir):
    with LLM(LLMConfig.from_spec(f"hf:{tiny_model_dir}", batch_size=4), None, progress=False) as llm:
        yield llm


def _ask(llm: LLM, constraint: Constraint | None, temperature: float, count: int = 4, **kw) -> list:
    return list(llm.run([Request.chat([("user", f"Judge answer {i}")], key=str(i), max_tokens=40, seed=i,
                                      temperature=temperature, constraint=constraint, **kw) for i in range(count)]))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_choice_regex_and_schema_always_hold(local, temperature):
    choices = ("Output (a)", "Output (b)")
    for c in _ask(local, Constraint(choice=choices), temperature):
        assert c.ok and c.constrained is True and c.text in choices and c.choices[0].finish_reason == "stop"
    for c in _ask(local, Constraint(regex=r"(10|[1-9])"), temperature):
        assert re.fullmatch(r"(10|[1-9])", c.text), c.text
    for c in _ask(local, Constraint.schema(VERDICT), temperature):
        value = json.loads(c.text)
        assert value["verdict"] in ("A", "B", "tie") and 1 <= value["score"] <= 10 and set(value) == {"verdict", "score"}


def test_a_single_choice_is_written_exactly_and_samples_differ_only_inside_the_language(local):
    out = _ask(local, Constraint(choice=("The answer is: yes",)), 1.0, count=2)
    assert [c.text for c in out] == ["The answer is: yes"] * 2
    many = list(local.run([Request.chat([("user", "pick")], max_tokens=5, temperature=1.5, n=8, seed=3,
                                        constraint=Constraint(choice=("x", "y", "z")))]))[0]
    assert {c.text for c in many.choices} <= {"x", "y", "z"} and len(many.choices) == 8


def test_greedy_unconstrained_rows_are_unchanged_beside_constrained_ones(local):
    plain = [Request.chat([("user", f"Tell me about {i}")], key=str(i), max_tokens=12) for i in range(3)]
    alone = [c.text for c in local.run(plain)]
    mixed = plain[:1] + [Request.chat([("user", "Judge")], max_tokens=12, constraint=Constraint(regex="[ab]+"))] + plain[1:]
    together = [c for c in local.run(mixed)]
    assert [c.text for i, c in enumerate(together) if i != 1] == alone
    assert [c.constrained for c in together] == [None, True, None, None]


def test_constrained_log_probs_are_the_models_own(local):
    """Reported log-probs are of the unmasked distribution (vLLM's raw log-probs): the same
    token scored unconstrained has the same log-prob."""
    free = list(local.run([Request.chat([("user", "Say")], max_tokens=1, logprobs=True, top_logprobs=3)]))[0]
    first = free.choices[0].logprobs[0]
    forced = list(local.run([Request.chat([("user", "Say")], max_tokens=3, logprobs=True,
                                          constraint=Constraint(choice=(first.token,)))]))[0]
    assert forced.text == first.token
    assert forced.choices[0].logprobs[0].logprob == pytest.approx(first.logprob, abs=1e-5)


def test_a_bad_constraint_is_an_error_for_that_request_only(local):
    out = list(local.run([Request.chat([("user", "x")], max_tokens=3, constraint=Constraint(regex="((")),
                          Request.chat([("user", "y")], max_tokens=3)]))
    assert not out[0].ok and "regex" in out[0].error and "\n" not in out[0].error
    assert out[1].ok and out[1].constrained is None


def test_constraints_off_leaves_the_text_unconstrained(tiny_model_dir):
    with LLM(LLMConfig.from_spec(f"hf:{tiny_model_dir}", constraints="off"), None, progress=False) as llm:
        c = _ask(llm, Constraint(choice=("yes", "no")), 0.0, count=1)[0]
    assert c.ok and c.constrained is None and c.text not in ("yes", "no")


def test_constraint_option_is_validated():
    from drover.errors import ConfigError

    with pytest.raises(ConfigError, match="constraints"):
        LLMConfig.from_spec("openai:gpt-4o", constraints="sometimes").validate()


def test_one_rows_grammar_trouble_never_fails_its_batch(local):
    """A choice spelling a special token's text makes llguidance refuse a token its mask
    allowed; that row ends, its neighbours in the batch are answered as usual."""
    special = Request.chat([("user", "x")], max_tokens=8, constraint=Constraint(choice=("<|user|>",)))
    plain = Request.chat([("user", "Tell me about 0")], max_tokens=12)
    odd, normal = list(local.run([special, plain]))
    assert odd.ok and odd.choices[0].finish_reason == "stop"
    assert normal.ok and normal.text == list(local.run([plain]))[0].text
