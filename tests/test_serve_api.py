"""The OpenAI API in full on `drover serve`: streaming through the official `openai` client
(chat and completions, usage last), prompt lists and token-id prompts, n and best_of, stop,
and structured outputs, against drover serve and against an endpoint without constraints."""

from __future__ import annotations

import json

import pytest

from drover.errors import LLMError
from drover.infer.serve_requests import RequestError, ServeLimits, parse_chat, parse_completion
from drover.llm.client import LLM
from drover.llm.config import LLMConfig
from drover.llm.testing import FakeOpenAIServer
from drover.completions import Constraint, Request

SCHEMA = {"type": "object", "properties": {"winner": {"enum": ["A", "B"]}}, "required": ["winner"],
          "additionalProperties": False}


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    from drover.infer.server import serve_in_thread

    with serve_in_thread(tiny_model_dir, model_name="tiny") as url:
        yield url


@pytest.fixture(scope="module")
def client(served):
    import openai

    return openai.OpenAI(base_url=served, api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from drover.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


# --- parsing, without a server ---------------------------------------------------------------

def test_constraint_parameters_map_onto_one_constraint():
    limits = ServeLimits()
    chat = {"messages": [{"role": "user", "content": "x"}]}
    assert parse_chat({**chat, "guided_choice": ["a", "b"]}, limits).sampling.constraint == Constraint(choice=("a", "b"))
    assert parse_chat({**chat, "guided_regex": "[0-9]+"}, limits).sampling.constraint == Constraint(regex="[0-9]+")
    assert parse_chat({**chat, "guided_json": json.dumps(SCHEMA)}, limits).sampling.constraint == Constraint.schema(SCHEMA)
    assert parse_chat({**chat, "structured_outputs": {"choice": ["y"]}}, limits).sampling.constraint == \
        Constraint(choice=("y",))
    fmt = {"type": "json_schema", "json_schema": {"name": "v", "schema": SCHEMA, "strict": True}}
    assert parse_chat({**chat, "response_format": fmt}, limits).sampling.constraint == Constraint.schema(SCHEMA)
    assert parse_chat({**chat, "response_format": {"type": "json_object"}}, limits).sampling.constraint == \
        Constraint.schema({"type": "object"})
    assert parse_chat({**chat, "response_format": {"type": "text"}}, limits).sampling.constraint is None
    for bad in ({"guided_choice": []}, {"guided_choice": "a"}, {"response_format": {"type": "yaml"}},
                {"guided_grammar": "root ::= x"}, {"guided_json": "{not json"}):
        with pytest.raises(RequestError):
            parse_chat({**chat, **bad}, limits)


def test_the_client_asks_with_vllm_and_openai_parameter_names():
    from drover.llm.openai_backend import constraint_params

    assert constraint_params(Constraint(choice=("A", "B")), chat=True) == {"guided_choice": ["A", "B"]}
    assert constraint_params(Constraint(regex="[0-9]"), chat=False) == {"guided_regex": "[0-9]"}
    assert constraint_params(Constraint.schema(SCHEMA), chat=True) == {"response_format": {
        "type": "json_schema", "json_schema": {"name": "output", "schema": SCHEMA, "strict": True}}}
    assert constraint_params(Constraint.schema(SCHEMA), chat=False) == {"guided_json": SCHEMA}
    assert constraint_params(Constraint.schema({"type": "object"}), chat=True) == {
        "response_format": {"type": "json_object"}}
    assert constraint_params(None, chat=True) == {}


def test_prompt_forms_and_best_of_rules():
    limits = ServeLimits(max_prompts=3)
    assert parse_completion({"prompt": "a"}, limits, 100).prompts == ["a"]
    assert parse_completion({"prompt": ["a", "b"]}, limits, 100).prompts == ["a", "b"]
    assert parse_completion({"prompt": [1, 2]}, limits, 100).prompts == [[1, 2]]
    assert parse_completion({"prompt": [[1], [2, 3]]}, limits, 100).prompts == [[1], [2, 3]]
    for bad, param in (({"prompt": ["a", 1]}, "prompt"), ({"prompt": [[]]}, "prompt"),
                       ({"prompt": ["a"] * 4}, "prompt"), ({"prompt": [True]}, "prompt"),
                       ({"prompt": "a", "n": 3, "best_of": 2}, "best_of"),
                       ({"prompt": "a", "best_of": 2, "stream": True}, "best_of"),
                       ({"prompt": "a", "top_p": 0}, "top_p"), ({"prompt": "a", "stop": ["s"] * 17}, "stop")):
        with pytest.raises(RequestError) as info:
            parse_completion(bad, limits, 100)
        assert info.value.param == param and info.value.status == 400


# --- streaming -------------------------------------------------------------------------------

def test_openai_client_streams_chat_with_usage_last(client):
    kwargs = dict(model="tiny", messages=[{"role": "user", "content": "Hi there"}], max_tokens=12, temperature=0)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert all(c.usage is None for c in chunks[:-1]) and not chunks[-1].choices
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_openai_client_streams_completions_with_n_and_stop(client):
    kwargs = dict(model="tiny", prompt="Once upon a time", max_tokens=16, temperature=0.9, seed=11, n=2)
    whole = client.completions.create(**kwargs)
    stop = whole.choices[0].text[3:5]  # a stop string the first sample is known to hit
    whole = client.completions.create(**kwargs, stop=[stop])
    streamed = {0: "", 1: ""}
    finish = {}
    for chunk in client.completions.create(**kwargs, stop=[stop], stream=True):
        for c in chunk.choices:
            streamed[c.index] += c.text
            finish[c.index] = c.finish_reason or finish.get(c.index)
    assert streamed == {c.index: c.text for c in whole.choices}
    assert stop not in streamed[0] and finish[0] == "stop"
    assert finish == {c.index: c.finish_reason for c in whole.choices}


def test_streamed_logprobs_cover_the_text(client):
    chunks = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Go"}],
                                                 max_tokens=8, temperature=0, logprobs=True, top_logprobs=2,
                                                 stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    tokens = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert "".join(t.token for t in tokens) == text and all(len(t.top_logprobs) <= 2 for t in tokens)


# --- /v1/completions prompt forms, n, best_of ------------------------------------------------

def test_prompt_lists_and_token_ids_answer_like_single_prompts(client, tokenizer):
    prompts = ["The cat", "A dog ran", "Hello"]
    single = [client.completions.create(model="tiny", prompt=p, max_tokens=5, temperature=0).choices[0].text
              for p in prompts]
    listed = client.completions.create(model="tiny", prompt=prompts, max_tokens=5, temperature=0)
    assert [c.index for c in listed.choices] == [0, 1, 2] and [c.text for c in listed.choices] == single
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    by_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=5, temperature=0)
    assert [c.text for c in by_ids.choices] == single
    one = client.completions.create(model="tiny", prompt=ids[1], max_tokens=5, temperature=0)
    assert one.choices[0].text == single[1] and one.usage.prompt_tokens == len(ids[1])
    echo = client.completions.create(model="tiny", prompt=ids[0], max_tokens=1, temperature=0, echo=True, logprobs=1)
    lp = echo.choices[0].logprobs
    assert len(lp.tokens) == len(ids[0]) + 1 and lp.token_logprobs[0] is None
    assert echo.choices[0].text.startswith("The cat")
    numbered = client.completions.create(model="tiny", prompt=prompts[:2], max_tokens=3, n=2, temperature=1, seed=5)
    assert [c.index for c in numbered.choices] == [0, 1, 2, 3]


def test_one_seed_does_not_give_every_prompt_the_same_noise(client):
    """A client that seeds every request alike (`seed: 42` in a recipe's teacher options) asks
    for independent samples of different prompts: each prompt's samples draw from its own
    stream (seed, prompt). One stream for all gave the random tiny model's near-uniform
    distributions one and the same text for every prompt. Still reproducible per request."""
    prompts = ["The cat", "A dog ran", "Hello there"]
    kwargs = dict(model="tiny", max_tokens=8, temperature=1.0, seed=5)
    listed = [c.text for c in client.completions.create(prompt=prompts, **kwargs).choices]
    assert len(set(listed)) == 3
    assert [client.completions.create(prompt=p, **kwargs).choices[0].text for p in prompts] == listed
    chats = [client.chat.completions.create(messages=[{"role": "user", "content": p}], **kwargs).choices[0].message.content
             for p in prompts]
    assert len(set(chats)) == 3

def test_best_of_returns_the_samples_with_the_highest_mean_log_prob(client):
    kwargs = dict(model="tiny", prompt="Tell me", max_tokens=6, temperature=1.0, seed=21)
    pool = client.completions.create(**kwargs, n=5, logprobs=0)
    means = {c.text: sum(c.logprobs.token_logprobs) / len(c.logprobs.token_logprobs) for c in pool.choices}
    best = client.completions.create(**kwargs, n=2, best_of=5)
    assert [c.text for c in best.choices] == sorted(means, key=means.get, reverse=True)[:2]
    assert best.choices[0].logprobs is None and best.usage.completion_tokens == pool.usage.completion_tokens


# --- structured outputs -------------------------------------------------------------------------

def _judge_requests() -> list[Request]:
    return [Request.chat([("user", f"Which is better, {i}?")], key=str(i), max_tokens=20, seed=i, temperature=1.0,
                         constraint=c)
            for i, c in enumerate([Constraint(choice=("A", "B", "tie")), Constraint(regex=r"[1-9]"),
                                   Constraint.schema(SCHEMA)])]


def _valid(outputs: list) -> list[bool]:
    checks = [lambda t: t in ("A", "B", "tie"), lambda t: len(t) == 1 and t.isdigit(),
              lambda t: json.loads(t)["winner"] in ("A", "B")]
    ok = []
    for check, c in zip(checks, outputs):
        try:
            ok.append(bool(check(c.text)))
        except ValueError:
            ok.append(False)
    return ok


def test_structured_outputs_against_drover_serve(served, tmp_path):
    with LLM(LLMConfig.from_spec(f"{served}#tiny"), tmp_path / "c.sqlite", progress=False) as llm:
        out = list(llm.run(_judge_requests()))
        again = list(llm.run(_judge_requests()))  # from the cache, with the flag
    assert all(c.ok and c.constrained is True for c in out) and _valid(out) == [True] * 3
    assert [c.constrained for c in again] == [True] * 3 and all(c.cached for c in again)
    text = list(LLM(LLMConfig.from_spec(f"{served}#tiny"), None, progress=False).run(
        [Request.text("Score: ", max_tokens=20, constraint=Constraint.schema(SCHEMA))]))[0]
    assert text.constrained is True and json.loads(text.text)["winner"] in ("A", "B")  # guided_json on /completions


def test_structured_outputs_fall_back_on_an_endpoint_without_constraints(tmp_path):
    params = ("guided_choice", "guided_regex", "guided_json", "response_format")
    with FakeOpenAIServer(reject_params=params) as server:
        with LLM(LLMConfig.from_spec(f"{server.base_url}#fake", concurrency=1), None, progress=False) as llm:
            out = list(llm.run(_judge_requests()[:1]))
            out += list(llm.run(_judge_requests()[1:]))  # concurrent requests already in flight would be resent too
            plain = list(llm.run([Request.chat([("user", "no constraint")], max_tokens=3)]))
        sent = [sorted(set(r) & set(params)) for r in server.requests]
    assert all(c.ok and c.constrained is False for c in out) and out[0].text.startswith("answer: Which is better, 0?")
    assert plain[0].constrained is None
    # The first request went with its constraint and was refused; every later one went without.
    assert sent == [["guided_choice"], [], [], [], []]


def test_constraints_on_fails_the_job_once_on_such_an_endpoint():
    with FakeOpenAIServer(reject_params=("guided_choice",)) as server:
        with LLM(LLMConfig.from_spec(f"{server.base_url}#fake", constraints="on"), None, progress=False) as llm:
            with pytest.raises(LLMError, match="rejects constrained decoding.*constraints: auto"):
                list(llm.run(_judge_requests()[:1]))


def test_constraints_off_sends_no_constraint_parameters():
    with FakeOpenAIServer() as server:
        with LLM(LLMConfig.from_spec(f"{server.base_url}#fake", constraints="off"), None, progress=False) as llm:
            out = list(llm.run(_judge_requests()))
        assert not any(set(r) & {"guided_choice", "guided_regex", "response_format"} for r in server.requests)
    assert [c.constrained for c in out] == [None] * 3
