"""`drover serve` on a loopback port with the tiny model, driven by the official `openai`
client and by drover's own client (chat, n, logprobs, echo scoring, errors)."""

from __future__ import annotations

import pytest

from drover.errors import LLMError
from drover.llm.client import LLM
from drover.llm.config import LLMConfig
from drover.completions import Request, ScoreRequest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    from drover.infer.server import serve_in_thread

    with serve_in_thread(tiny_model_dir, model_name="tiny", max_batch_size=8) as url:
        yield url


def test_official_openai_client(served):
    import openai

    client = openai.OpenAI(base_url=served, api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["tiny"]

    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=5,
                                          n=2, temperature=0.8, seed=7, logprobs=True, top_logprobs=2)
    assert len(chat.choices) == 2 and chat.usage.completion_tokens <= 10
    first = chat.choices[0]
    assert first.finish_reason in ("stop", "length")
    assert "".join(t.token for t in first.logprobs.content) == first.message.content
    assert all(len(t.top_logprobs) <= 2 for t in first.logprobs.content)
    again = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=5,
                                           n=2, temperature=0.8, seed=7)
    assert [c.message.content for c in again.choices] == [c.message.content for c in chat.choices]

    text = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=4, temperature=0,
                                     stop=["zzzz"])
    assert text.choices[0].finish_reason == "length" and text.usage.completion_tokens == 4

    echo = client.completions.create(model="tiny", prompt="The capital of France is Paris", echo=True,
                                     logprobs=1, max_tokens=0)
    lp = echo.choices[0].logprobs
    assert echo.choices[0].text == "The capital of France is Paris"
    assert lp.token_logprobs[0] is None and all(v < 0 for v in lp.token_logprobs[1:])
    assert "".join(lp.tokens) == "The capital of France is Paris" and lp.text_offset[0] == 0

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[], max_tokens=3)


def test_drover_client_over_http_matches_local(served, tiny_model_dir, tmp_path):
    reqs = [Request.chat([("user", f"Tell me about {i}")], key=str(i), max_tokens=6) for i in range(12)]
    scores = [ScoreRequest("The capital of France is ", "Paris"), ScoreRequest("Q: hi\nA:", " hello there")]
    with LLM(LLMConfig.from_spec(f"{served}#tiny", concurrency=12), tmp_path / "http.sqlite", progress=False) as llm:
        remote = list(llm.run(reqs))  # concurrent requests, batched onto the model by the server
        remote_scores = list(llm.score(scores))
    with LLM(LLMConfig.from_spec(f"hf:{tiny_model_dir}", batch_size=4), None, progress=False) as llm:
        local = list(llm.run(reqs))
        local_scores = list(llm.score(scores))
    assert all(c.ok for c in remote) and [c.key for c in remote] == [str(i) for i in range(12)]
    assert [c.text for c in remote] == [c.text for c in local]  # greedy: same text either way
    for r, l in zip(remote_scores, local_scores):
        assert r.tokens == l.tokens and r.greedy == l.greedy
        assert r.total == pytest.approx(l.total, abs=1e-3)


def test_unknown_model_fails_the_job_once(served):
    with LLM(LLMConfig.from_spec(f"{served}#not-served"), None, progress=False) as llm:
        with pytest.raises(LLMError, match="not-served.*does not exist"):
            list(llm.run([Request.chat([("user", "x")], max_tokens=2) for _ in range(3)]))


def test_serve_command_help_mentions_vllm(capsys):
    from drover.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "vllm serve" in capsys.readouterr().out


def test_drover_serve_command_in_a_subprocess(tiny_model_dir):
    """The real CLI entry point: `drover serve MODEL --port P`, then a request, then SIGTERM."""
    import socket
    import subprocess
    import sys
    import time

    import openai

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "drover", "serve", str(tiny_model_dir), "--port", str(port),
                             "--model-name", "tiny-cli"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
        deadline = time.monotonic() + 90
        while True:
            try:
                assert [m.id for m in client.models.list().data] == ["tiny-cli"]
                break
            except openai.APIConnectionError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "drover serve did not start"
                time.sleep(0.2)
        out = client.chat.completions.create(model="tiny-cli", messages=[{"role": "user", "content": "Hi"}],
                                             max_tokens=3, temperature=0)
        assert out.usage.completion_tokens <= 3 and out.choices[0].finish_reason in ("stop", "length")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
