"""`drover serve` under the hostile requests of issue 13: each is refused with a clear 4xx
(never a 500, never accepted), and a normal request right after is answered within a second;
`/health` stays responsive while a huge body uploads and while a long request computes."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from drover.infer.serve_requests import ServeLimits

pytestmark = pytest.mark.slow

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    from drover.infer.server import serve_in_thread

    with serve_in_thread(tiny_model_dir, model_name="tiny", limits=ServeLimits(max_body_bytes=2 * 1024 * 1024)) as url:
        yield url.removesuffix("/v1")


def _raw(fields: str, endpoint: str = "chat/completions") -> bytes:
    base = '"messages": [{"role": "user", "content": "Hi"}]' if endpoint.startswith("chat") else '"prompt": "Hi"'
    return ('{"model": "tiny", ' + base + ", " + fields + "}").encode()


HOSTILE = {
    "temperature NaN": (_raw('"temperature": NaN'), "chat/completions", 400, "temperature: must be a finite"),
    "temperature Infinity": (_raw('"temperature": Infinity'), "chat/completions", 400, "temperature: must be a finite"),
    "top_p NaN": (_raw('"top_p": NaN'), "chat/completions", 400, "top_p"),
    "top_logprobs 100000": (_raw('"logprobs": true, "top_logprobs": 100000'), "chat/completions", 400,
                            "top_logprobs: must be <= 20"),
    "echo with logprobs 100000": (_raw('"echo": true, "logprobs": 100000, "max_tokens": 0', "completions"),
                                  "completions", 400, "logprobs: must be <= 20"),
    "n 10000": (_raw('"n": 10000'), "chat/completions", 400, "n: must be <= 128"),
    "best_of 10000": (_raw('"best_of": 10000', "completions"), "completions", 400, "best_of: must be <= 128"),
    "max_tokens 1e9": (_raw('"max_tokens": 1e9'), "chat/completions", 400, "maximum context length is 2048"),
    "max_tokens 1e9 completions": (_raw('"max_tokens": 1e9', "completions"), "completions", 400,
                                   "maximum context length is 2048"),
    "negative max_tokens": (_raw('"max_tokens": -1'), "chat/completions", 400, "max_tokens: must be >= 0"),
    "prompt longer than the context": (json.dumps({"model": "tiny", "prompt": "x " * 3000}).encode(), "completions",
                                       400, "in the prompt, 0 in the completion"),
    "1 MB prompt": (json.dumps({"model": "tiny", "prompt": "word " * 200_000}).encode(), "completions", 400,
                    "maximum context length"),
    "1 MB chat message": (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "a" * 10 ** 6}]}).encode(),
                          "chat/completions", 400, "maximum context length"),
    "token id outside the vocabulary": (json.dumps({"model": "tiny", "prompt": [1, 2, 10 ** 9]}).encode(),
                                        "completions", 400, "outside the vocabulary"),
    "10 MB body": (lambda: b'{"prompt": "' + b"x" * 10 * 1024 * 1024 + b'"}', "completions", 413, "larger than"),
    "50 MB body": (lambda: b'{"messages": "' + b"x" * 50 * 1024 * 1024 + b'"}', "chat/completions", 413,
                   "larger than"),
    "deeply nested JSON": (b"[" * 100_000 + b"]" * 100_000, "completions", 400, "not valid JSON"),
    "not JSON": (b"\xff\xfe garbage", "chat/completions", 400, "not valid JSON"),
    "bad regex": (_raw('"guided_regex": "(("'), "chat/completions", 400, "regex"),
    "two constraints": (_raw('"guided_regex": "a", "guided_choice": ["b"]'), "chat/completions", 400,
                        "only one constraint"),
    "lone surrogate in a message": (b'{"model": "tiny", "messages": [{"role": "user", "content": "a\\ud800b"}]}',
                                    "chat/completions", 400, "lone UTF-16 surrogate"),
    "lone surrogate in a prompt": (b'{"model": "tiny", "prompt": ["ok", "\\udfff"]}', "completions", 400,
                                   "lone UTF-16 surrogate"),
    "a choice grammar too large to build": (lambda: json.dumps({
        "model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
        "guided_choice": [f"choice number {i}" for i in range(80_000)]}).encode(), "chat/completions", 400,
        "constraint: choice"),
    "stream_options without stream": (_raw('"stream_options": {"include_usage": true}'), "chat/completions", 400,
                                      "stream_options"),
}


def _normal_request_is_quick(base: str) -> None:
    start = time.monotonic()
    r = httpx.post(f"{base}/v1/chat/completions", json=CHAT, timeout=10)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_request_is_refused_then_a_normal_one_is_answered(served, name):
    body, endpoint, status, message = HOSTILE[name]
    body = body() if callable(body) else body  # the large ones are built only when they run
    r = httpx.post(f"{served}/v1/{endpoint}", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == status, r.text[:300]
    error = r.json()["error"]
    assert message in error["message"] and "\n" not in error["message"] and len(error["message"]) < 600
    _normal_request_is_quick(served)


def _health_times(base: str, during: threading.Thread) -> list[float]:
    times = []
    during.start()
    time.sleep(0.05)
    while during.is_alive():
        start = time.monotonic()
        assert httpx.get(f"{base}/health", timeout=5).status_code == 200
        times.append(time.monotonic() - start)
        time.sleep(0.05)
    during.join()
    return times


def test_health_answers_while_a_large_body_uploads(served):
    statuses = []

    def upload() -> None:
        def slow_body():
            yield b'{"prompt": "'
            for _ in range(60):
                yield b"y" * 50_000
                time.sleep(0.01)
            yield b'"}'
        statuses.append(httpx.post(f"{served}/v1/completions", content=slow_body(), timeout=60).status_code)

    times = _health_times(served, threading.Thread(target=upload))
    assert statuses == [413] and times and max(times) < 1.0


def test_health_answers_while_a_long_request_computes(served):
    results = []

    def long_request() -> None:
        r = httpx.post(f"{served}/v1/completions", json={"prompt": "Once", "max_tokens": 400, "n": 16,
                                                         "temperature": 1.0, "seed": 1}, timeout=300)
        results.append(r.status_code)

    times = _health_times(served, threading.Thread(target=long_request))
    assert results == [200] and len(times) > 3 and max(times) < 1.0


def test_an_abandoned_stream_frees_the_model(served):
    """A client that starts a long stream and hangs up must not keep the model busy: its rows
    stop at the next step, and the next request is answered within a second."""
    long_text = "word " * 600  # forced by the constraint: no EOS until all of it is written
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1500, "stream": True,
            "guided_choice": [long_text]}
    with httpx.stream("POST", f"{served}/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        assert r.status_code == 200 and next(lines).startswith("data: ")
        for _ in range(3):
            next(lines)
    time.sleep(0.2)  # the server notices the disconnect
    _normal_request_is_quick(served)
