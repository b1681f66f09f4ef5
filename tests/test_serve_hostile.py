"""`drover serve` under the hostile requests of issue 13: each is refused with a clear 4xx
(never a 500, never accepted) before it reaches the model, and a normal request right after is
answered and leaves the model idle; `/health` answers while a huge body is half uploaded and
while a long request computes; an abandoned stream frees the model.

What is checked is what happened (which job reached the model, what answered while what was
still running), never how fast: the suite runs on loaded 2-core machines."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from drover.infer.serve_requests import ServeLimits

pytestmark = pytest.mark.slow

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}


WAIT_S = 120  # for an event on a loaded machine; a test that passes never waits this long


class _Counted:
    """The server's model worker, counting the jobs handed to it (a refused request adds none)."""

    def __init__(self, worker):
        self.worker, self.jobs = worker, 0
        submit = worker.submit

        async def counted(*args, **kwargs):
            self.jobs += 1
            return await submit(*args, **kwargs)

        worker.submit = counted

    @property
    def steps(self) -> int:
        return self.worker.stats.get("steps", 0)

    def wait_idle(self) -> None:
        """Until no row is decoding (the model is free); fails after WAIT_S."""
        deadline = time.monotonic() + WAIT_S
        while self.worker.decoder.live:
            assert time.monotonic() < deadline, "the model never went idle"
            time.sleep(0.01)


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    from drover.infer.server import load_app, serve_in_thread

    app = load_app(str(tiny_model_dir), model_name="tiny", limits=ServeLimits(max_body_bytes=2 * 1024 * 1024))
    with serve_in_thread("", app=app) as url:
        yield url.removesuffix("/v1"), _Counted(app.state.served.worker)


@pytest.fixture
def served(server):
    return server[0]


@pytest.fixture
def model(server):
    return server[1]


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


def _normal_request_is_answered(base: str, model: _Counted) -> None:
    """A normal request right after is answered by the model, which is idle again afterwards."""
    jobs = model.jobs
    r = httpx.post(f"{base}/v1/chat/completions", json=CHAT, timeout=WAIT_S)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"
    assert model.jobs == jobs + 1
    model.wait_idle()


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_request_is_refused_then_a_normal_one_is_answered(served, model, name):
    body, endpoint, status, message = HOSTILE[name]
    body = body() if callable(body) else body  # the large ones are built only when they run
    jobs = model.jobs
    r = httpx.post(f"{served}/v1/{endpoint}", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == status, r.text[:300]
    error = r.json()["error"]
    assert message in error["message"] and "\n" not in error["message"] and len(error["message"]) < 600
    assert model.jobs == jobs, "a refused request reached the model"
    _normal_request_is_answered(served, model)


def _health_answers_while(base: str, running: threading.Event, during: threading.Thread, wanted: int) -> int:
    """Once `running` is set, ask `/health` until `wanted` answers came back while `during` was
    still running (a health check queued behind it would come back only after it); returns
    how many did."""
    during.start()
    assert running.wait(WAIT_S), "the background request never got going"
    answered = 0
    while answered < wanted and during.is_alive():
        assert httpx.get(f"{base}/health", timeout=WAIT_S).status_code == 200
        answered += during.is_alive()
    during.join(WAIT_S)
    return answered


def test_health_answers_while_a_large_body_uploads(served):
    statuses = []
    half_sent, health_seen = threading.Event(), threading.Event()

    def upload() -> None:
        def slow_body():
            yield b'{"prompt": "'
            for k in range(60):
                yield b"y" * 50_000
                if k == 20:  # 1 MB sent, the limit not reached: the upload waits for /health
                    half_sent.set()
                    assert health_seen.wait(WAIT_S), "/health never answered during the upload"
                time.sleep(0.01)
            yield b'"}'
        statuses.append(httpx.post(f"{served}/v1/completions", content=slow_body(), timeout=WAIT_S).status_code)

    during = threading.Thread(target=upload)
    during.start()
    assert half_sent.wait(WAIT_S), "the upload never got going"
    assert httpx.get(f"{served}/health", timeout=WAIT_S).status_code == 200  # the body is half sent
    health_seen.set()
    during.join(WAIT_S)
    assert statuses == [413]


def test_health_answers_while_a_long_request_computes(served, model):
    results = []
    steps = model.steps
    computing = threading.Event()

    def long_request() -> None:
        r = httpx.post(f"{served}/v1/completions", json={"prompt": "Once", "max_tokens": 400, "n": 16,
                                                         "temperature": 1.0, "seed": 1}, timeout=300)
        results.append(r.status_code)

    def watch() -> None:  # the model has started decoding the long request
        deadline = time.monotonic() + WAIT_S
        while model.steps == steps and time.monotonic() < deadline:
            time.sleep(0.005)
        computing.set()

    threading.Thread(target=watch, daemon=True).start()
    answered = _health_answers_while(served, computing, threading.Thread(target=long_request), wanted=4)
    assert results == [200] and answered == 4


def test_an_abandoned_stream_frees_the_model(served, model):
    """A client that starts a long stream and hangs up must not keep the model busy: its rows
    stop at the next step (long before the forced text is written), and the next request is
    answered."""
    long_text = "word " * 600  # forced by the constraint: no EOS until all of it is written
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1500, "stream": True,
            "guided_choice": [long_text]}
    steps = model.steps
    with httpx.stream("POST", f"{served}/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        assert r.status_code == 200 and next(lines).startswith("data: ")
        for _ in range(3):
            next(lines)
    model.wait_idle()  # the server noticed the hang-up and dropped the rows
    assert model.steps - steps < 300  # writing all of the forced text takes 600 steps or more
    _normal_request_is_answered(served, model)
