"""Cache honesty under the OpenAI backend's constraint fallback (`constraints: auto`).

An endpoint that rejects constraint parameters answers the plain request; that answer is
the plain request's, and must never be served later for the constrained request (under
`constraints: on`, or once the endpoint honours constraints), while a resumed `auto` run
against the same endpoint still gets it back without paying twice.
"""

from __future__ import annotations

import re

from drover.llm.client import LLM
from drover.llm.config import LLMConfig
from drover.llm.testing import FakeOpenAIServer
from drover.completions import Constraint, Request

PARAMS = ("guided_choice", "guided_regex", "guided_json", "response_format")
CHOICE = Constraint(choice=("[[A]]", "[[B]]"))


def _requests(n: int = 3) -> list[Request]:
    return [Request.chat([("user", f"Which is better, {i}?")], max_tokens=8, constraint=CHOICE) for i in range(n)]


def _run(server: FakeOpenAIServer, cache, constraints: str = "auto", requests=None):
    config = LLMConfig.from_spec(f"{server.base_url}#fake", concurrency=1, constraints=constraints)
    with LLM(config, cache, progress=False) as llm:
        return list(llm.run(requests or _requests()))


def test_a_fallback_answer_never_answers_the_constrained_request_later(tmp_path):
    cache = tmp_path / "cache.sqlite"
    with FakeOpenAIServer(reject_params=PARAMS) as old:
        port = old.port
        first = _run(old, cache)
    assert all(c.constrained is False and c.text.startswith("answer: ") for c in first)
    # The same URL and model, now honouring constraints: a constrained request is asked again.
    with FakeOpenAIServer(port=port, constraints="honour") as new:
        strict = _run(new, cache, "on")
        assert len(new.requests) == 3
    assert all(c.constrained is True and c.text in CHOICE.choice and not c.cached for c in strict)


def test_a_resumed_auto_run_reuses_fallback_answers_without_paying_twice(tmp_path):
    cache = tmp_path / "cache.sqlite"
    with FakeOpenAIServer(reject_params=PARAMS) as server:
        first = _run(server, cache)
        sent = len(server.requests)
    with FakeOpenAIServer(port=server.port, reject_params=PARAMS) as again:
        second = _run(again, cache)
        # refused probes (free) only: no plain request is paid for again
        assert not [r for r in again.requests if not set(r) & set(PARAMS)]
    assert sent >= 4 and [c.text for c in second] == [c.text for c in first]
    assert all(c.constrained is False and c.cached for c in second)


def test_the_fallback_answer_is_the_plain_requests_answer(tmp_path):
    cache = tmp_path / "cache.sqlite"
    with FakeOpenAIServer(reject_params=PARAMS) as server:
        _run(server, cache, requests=_requests(1))
    plain = [Request.chat([("user", "Which is better, 0?")], max_tokens=8)]
    with FakeOpenAIServer(port=server.port) as again:
        out = _run(again, cache, "off", plain)
        assert again.requests == []
    assert out[0].cached and re.match("answer: Which is better, 0", out[0].text) and out[0].constrained is None
