"""The OpenAI-compatible client against a fault-injecting local server: order, cache,
n samples, retries (429 + Retry-After, 500, hangs, dropped connections), fatal errors,
rate limiting and secrets."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest

from drover.errors import LLMError
from drover.llm.client import LLM
from drover.llm.config import LLMConfig
from drover.llm.progress import Progress
from drover.llm.ratelimit import RateLimiter, TokenBucket
from drover.llm.retry import backoff_delay, redact, retry_after_seconds
from drover.llm.openai_backend import prompt_seed
from drover.llm.testing import FakeOpenAIServer
from drover.completions import Request
from drover.runs import RunDir


@pytest.fixture
def server():
    with FakeOpenAIServer(delay=0.005, retry_after=0.05) as srv:
        yield srv


def _config(server: FakeOpenAIServer, **overrides) -> LLMConfig:
    fields = {"concurrency": 8, "backoff_base": 0.01, "backoff_max": 0.2, "timeout": 5.0, "max_retries": 3}
    fields.update(overrides)
    return LLMConfig.from_spec(f"{server.base_url}#fake", **fields)


def _chats(n: int, prefix: str = "q") -> list[Request]:
    return [Request.chat([{"role": "user", "content": f"{prefix}{i}"}], key=f"id{i}") for i in range(n)]


def test_run_streams_in_order_and_caches(server, tmp_path):
    cache = tmp_path / "llm-cache.sqlite"
    with LLM(_config(server), cache, progress=False) as llm:
        out = list(llm.run(iter(_chats(300)), desc="answers"))  # a generator: no len()
        assert [c.text for c in out] == [f"answer: q{i}" for i in range(300)]
        assert [c.key for c in out] == [f"id{i}" for i in range(300)]
        assert llm.stats.misses == 300 and llm.stats.hits == 0 and llm.stats.prompt_tokens == 300
    assert len(server.requests) == 300
    with LLM(_config(server), cache, progress=False) as llm:  # a re-run sends nothing
        again = list(llm.run(_chats(300)))
        assert [c.text for c in again] == [c.text for c in out] and all(c.cached for c in again)
        assert llm.stats.hits == 300 and llm.stats.misses == 0
    assert len(server.requests) == 300


def test_duplicates_in_a_batch_are_sent_once(server, tmp_path):
    reqs = [Request.chat([("user", "same")], key=f"k{i}") for i in range(5)]
    with LLM(_config(server), tmp_path / "c.sqlite", progress=False) as llm:
        out = list(llm.run(reqs))
    assert [c.key for c in out] == [f"k{i}" for i in range(5)] and {c.text for c in out} == {"answer: same"}
    assert server.count("same") == 1


def test_prompt_requests_use_text_completions_and_decoding_is_sent(server):
    with LLM(_config(server, temperature=0.3), None, progress=False) as llm:
        c = llm.complete(Request.text("Once upon a time", max_tokens=7, stop=["\n"], seed=5))
        chat = llm.complete(Request.chat([("user", "hi")], logprobs=True, top_logprobs=1))
    seed = prompt_seed(5, Request.text("Once upon a time"))
    assert c.text == f"answer: Once upon a time seed={seed}"
    assert server.paths == ["/v1/completions", "/v1/chat/completions"]
    body = server.requests[0]
    assert (body["max_tokens"], body["stop"], body["temperature"], body["seed"]) == (7, ["\n"], 0.3, seed)
    assert chat.choices[0].logprobs[0].token == "answer:" and chat.choices[0].logprobs[0].top == {"answer:": -0.5}


def test_n_samples_native_and_emulated(server, tmp_path):
    with LLM(_config(server), None, progress=False) as llm:
        native = llm.complete(Request.chat([("user", "x")], n=3))
    assert [ch.text for ch in native.choices] == ["answer: x #0", "answer: x #1", "answer: x #2"]
    assert len(server.requests) == 1
    cache = tmp_path / "c.sqlite"
    with LLM(_config(server, supports_n=False, seed=10), cache, progress=False) as llm:
        # sample 1 of "y" was asked for alone before: it is the same cache entry as choice 1 of n=3
        single = llm.complete(Request.chat([("user", "y")], sample_index=1))
        emulated = llm.complete(Request.chat([("user", "y")], n=3))
    base = prompt_seed(10, Request.chat([("user", "y")]))
    assert [ch.text for ch in emulated.choices] == [f"answer: y seed={base + j}" for j in range(3)]
    assert emulated.choices[1].text == single.text
    assert server.count("y") == 3  # one for the single, two more for the n=3 request
    assert sorted(r["seed"] for r in server.requests[1:]) == [base, base + 1, base + 2]  # distinct per sample
    assert all("n" not in r for r in server.requests[1:])
    with LLM(_config(server, supports_n=False, seed=10), cache, progress=False) as llm:
        assert llm.complete(Request.chat([("user", "y")], n=3)).cached
    assert server.count("y") == 3


def test_sample_index_is_part_of_the_cache_key(server, tmp_path):
    reqs = [Request.chat([("user", "s")], sample_index=i, temperature=1.0) for i in range(3)]
    with LLM(_config(server), tmp_path / "c.sqlite", progress=False) as llm:
        list(llm.run(reqs))
        list(llm.run(reqs))
    assert server.count("s") == 3


def test_retries_429_500_hang_and_dropped_connection(server, tmp_path):
    server.script("429", "500", "hang", "drop")
    with LLM(_config(server, concurrency=1, timeout=0.5, max_retries=4), tmp_path / "c.sqlite", progress=False) as llm:
        result = llm.complete(Request.chat([("user", "persist")]))
        assert result.ok and result.text == "answer: persist"
        assert llm.stats.errors == 0
    assert server.count("persist") == 5  # four faults, then the answer


def test_retry_after_pauses_everyone(server):
    server.retry_after = 0.3
    server.script("429")
    with LLM(_config(server, concurrency=1, backoff_base=0.001), None, progress=False) as llm:
        backend = llm._ensure_backend()
        out = list(llm.run(_chats(2)))
        assert all(c.ok for c in out)
        # the limiter was paused for the server's Retry-After, not the tiny backoff
        assert backend.limiter.paused_until > 0


def test_gives_up_after_max_retries_and_records_the_error(server, tmp_path):
    server.script("500", "500", "500")
    with LLM(_config(server, max_retries=2), tmp_path / "c.sqlite", progress=False) as llm:
        out = list(llm.run(_chats(1)))
        assert not out[0].ok and "HTTP 500" in out[0].error and "3 attempts" in out[0].error
        assert llm.stats.errors == 1
        assert llm.stats.first_error == out[0].error  # the summary says why, not only how many
    with LLM(_config(server), tmp_path / "c.sqlite", progress=False) as llm:  # errors are not cached
        assert [c.ok for c in llm.run(_chats(3))] == [True, True, True]
    assert server.count("q0") == 4


def test_client_errors_are_not_retried(server):
    server.script("400")
    with LLM(_config(server), None, progress=False) as llm:
        out = list(llm.run(_chats(2)))
    assert "HTTP 400" in out[0].error and out[1].ok
    assert server.count("q0") == 1


def test_auth_failure_raises_once(server, monkeypatch):
    server.script(*["401"] * 50)
    with LLM(_config(server, concurrency=2), None, progress=False) as llm:
        with pytest.raises(LLMError, match="HTTP 401"):
            list(llm.run(_chats(50)))
    # the job stopped instead of failing all 50 items: once refused, requests waiting for a slot are
    # never sent, so only those already in flight (concurrency 2) reached the server, however loaded
    assert len(server.requests) <= 2


def test_missing_key_for_the_openai_api(monkeypatch):
    monkeypatch.delenv("DROVER_NO_SUCH_KEY", raising=False)
    cfg = LLMConfig(backend="openai", model="gpt-x", api_key_env="DROVER_NO_SUCH_KEY")
    with LLM(cfg, None, progress=False) as llm:
        with pytest.raises(LLMError, match="set the environment variable DROVER_NO_SUCH_KEY"):
            llm.complete(Request.chat([("user", "x")]))


def test_api_key_never_leaks(server, tmp_path, monkeypatch, capsys, caplog):
    secret = "sk-drover-test-9f8e7d6c5b4a39281706"
    monkeypatch.setenv("DROVER_TEST_KEY", secret)
    caplog.set_level(logging.DEBUG)
    run = RunDir(tmp_path / "run").ensure()
    cfg = _config(server, api_key_env="DROVER_TEST_KEY")
    run.save_config(cfg)
    messages: list[str] = []
    server.script("400")
    with LLM(cfg, run.llm_cache, progress=True, progress_interval=0) as llm:
        out = list(llm.run(_chats(3)))
        messages.append(out[0].error or "")
        server.script("401")
        with pytest.raises(LLMError) as info:
            llm.complete(Request.chat([("user", "fatal")]))
        messages.append(str(info.value))
        run.log("llm", stats=llm.stats.to_dict(), error=str(info.value))
    assert server.headers_seen[0]["authorization"] == f"Bearer {secret}"  # it was really used
    assert "Incorrect API key provided" in messages[1]
    captured = capsys.readouterr()
    for text in [*messages, captured.out, captured.err, caplog.text]:
        assert secret not in text and secret[3:15] not in text
    for path in [run.root / "config.yaml", run.log_path, run.llm_cache, *run.root.glob("llm-cache.sqlite*")]:
        blob = path.read_bytes()
        assert secret.encode() not in blob and secret[3:15].encode() not in blob
    assert "DROVER_TEST_KEY" in (run.root / "config.yaml").read_text()


def test_redact_patterns():
    assert redact("key sk-abcdef123456 and Bearer abcdefghijkl", []) == "key sk-*** and Bearer ***"
    assert redact("my own token tok_1234", ["tok_1234"]) == "my own token ***"


def test_retry_after_parsing_and_backoff():
    assert retry_after_seconds({"Retry-After": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert retry_after_seconds({}) is None
    delays = [backoff_delay(a, 1.0, 10.0) for a in range(6)]
    assert all(0.5 * min(10, 2 ** a) <= d <= min(10, 2 ** a) for a, d in enumerate(delays))


def test_token_bucket_with_a_fake_clock():
    now = [0.0]
    bucket = TokenBucket(60, clock=lambda: now[0])  # 1 per second, 10 s burst
    assert bucket.capacity == 10
    for _ in range(10):
        assert bucket.wait_time(1) == 0
        bucket.take(1)
    assert bucket.wait_time(1) == pytest.approx(1.0)
    now[0] += 0.5
    assert bucket.wait_time(1) == pytest.approx(0.5)
    assert bucket.wait_time(100) == pytest.approx(9.5)  # an oversized request waits for a full bucket only


def test_rate_limiter_tpm_correction_and_pause():
    now = [0.0]
    limiter = RateLimiter(rpm=None, tpm=600, clock=lambda: now[0])  # 10 tokens/s, capacity 100
    asyncio.run(limiter.acquire(100))
    assert limiter.wait_time(50) == pytest.approx(5.0)
    limiter.correct(estimated=100, actual=40)  # used less than estimated: 60 back
    assert limiter.wait_time(50) == 0
    limiter.pause(3.0)
    assert limiter.wait_time(1) == pytest.approx(3.0)


def test_rate_limit_spaces_requests(server):
    # 600 rpm = 10/s with a burst of 100: 3 requests go at once; the limiter is consulted per call
    with LLM(_config(server, rpm=600), None, progress=False) as llm:
        out = list(llm.run(_chats(3)))
        assert all(c.ok for c in out)
        assert llm._backend.limiter.requests.level < 100


def test_progress_line_shows_rate_eta_tokens_cost():
    stream = io.StringIO()
    bar = Progress("answers", 10, stream=stream, interval=0)
    bar.update(4, tokens=12_500, cost=0.25, hits=2, errors=1)
    line = stream.getvalue()
    assert "answers: 4/10 40%" in line and "/s" in line and "ETA" in line
    assert "12.5k tok" in line and "$0.25" in line and "2 cached" in line and "1 errors" in line


@pytest.mark.parametrize("lean", [True, False], ids=["lean-transport", "httpx-transport"])
def test_both_transports_retry_and_time_out(server, lean):
    server.script("429", "hang", "drop")
    with LLM(_config(server, concurrency=1, timeout=0.5, lean_transport=lean), None, progress=False) as llm:
        out = llm.complete(Request.chat([("user", "t")]))
    assert out.ok and server.count("t") == 4


def test_lean_transport_chunked_bodies_and_stale_connections():
    """Chunked responses are decoded; a keep-alive connection the server closed is redialled."""
    from drover.llm.transport import LeanTransport, httpx

    seen = []

    async def handle(reader, writer):
        seen.append(1)
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0].split(b":")[1])
            body = await reader.readexactly(length)
            if len(seen) == 1:  # first connection: chunked answer, then hang up (idle close)
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: application/json\r\n\r\n"
                             b"4\r\n{\"a\"\r\n" + b"%x\r\n" % (len(body) + 2) + b":" + body + b"}\r\n0\r\n\r\n")
                await writer.drain()
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = LeanTransport()
        async with httpx.AsyncClient(transport=transport, timeout=5) as client:
            first = await client.post(f"http://127.0.0.1:{port}/x", content=b"\"q\"")
            await asyncio.sleep(0.05)  # the server has closed the pooled connection by now
            second = await client.post(f"http://127.0.0.1:{port}/x", content=b"hello")
        server.close()
        return first, second

    first, second = asyncio.run(main())
    assert first.json() == {"a": "q"} and second.content == b"hello"
    assert len(seen) == 2  # a fresh connection after the stale one


def test_seeded_samples_differ_by_their_sample_index(server):
    """k independent samples of a seeded request are not one sample k times: sample k goes out
    with the prompt's seed + k (GPT-4-LLM's n responses per instruction, Tuna's ranked samples)."""
    reqs = [Request.chat([("user", "s")], sample_index=i, temperature=1.0) for i in range(3)]
    with LLM(_config(server, seed=7), None, progress=False) as llm:
        out = list(llm.run(reqs))
    base = prompt_seed(7, reqs[0])
    assert sorted(r["seed"] for r in server.requests) == [base, base + 1, base + 2]
    assert [c.text for c in out] == [f"answer: s seed={base + k}" for k in range(3)]


def test_seeded_n_choices_of_two_sample_indices_never_share_a_seed(server):
    """An endpoint samples choice j of a seeded n-request with seed + j (vLLM's child requests):
    sample index k of n choices goes out with the prompt's seed + k*n, so the choices of index 0
    and index 1 are 2n independent samples (+ k put n - 1 of them twice), and they are the very
    samples the emulated n (`supports_n: false`, one request per choice) draws."""
    reqs = [Request.chat([("user", "s")], sample_index=k, n=3, temperature=1.0) for k in range(2)]
    with LLM(_config(server, seed=10), None, progress=False) as llm:
        native = [[ch.text for ch in c.choices] for c in llm.run(reqs)]
    with LLM(_config(server, seed=10, supports_n=False), None, progress=False) as llm:
        emulated = [[ch.text for ch in c.choices] for c in llm.run(reqs)]
    seeds = [[int(t.rsplit("seed=", 1)[1]) for t in texts] for texts in native]
    base = prompt_seed(10, reqs[0])
    assert seeds == [[base + j for j in range(3)], [base + 3 + j for j in range(3)]]
    assert [[int(t.rsplit("seed=", 1)[1]) for t in texts] for texts in emulated] == seeds


def test_one_seed_is_not_one_noise_stream_for_every_prompt(server):
    """A config seed goes with every request, and an endpoint draws the same noise for the same
    seed whatever the prompt: each prompt is sent a seed of its own, drawn from (seed, prompt),
    the same on every run."""
    reqs = [Request.chat([("user", p)], temperature=1.0) for p in ("a", "b", "c")]
    with LLM(_config(server, seed=7), None, progress=False) as llm:
        list(llm.run(reqs))
    with LLM(_config(server, seed=7), None, progress=False) as llm:
        list(llm.run(reqs))
    by_prompt: dict[str, set[int]] = {}
    for body in server.requests:
        by_prompt.setdefault(body["messages"][0]["content"], set()).add(body["seed"])
    assert all(len(seeds) == 1 for seeds in by_prompt.values())  # reproducible
    assert len({s for seeds in by_prompt.values() for s in seeds}) == 3  # one stream per prompt
    with LLM(_config(server, seed=8), None, progress=False) as llm:
        list(llm.run(reqs[:1]))
    assert server.requests[-1]["seed"] not in by_prompt["a"]  # another seed, another stream


def test_an_endpoint_that_ignores_n_fails_the_job_instead_of_giving_one_sample_for_n(tmp_path):
    """Asked for n choices, an endpoint that answers one (Ollama's OpenAI API) is not taken at
    its word: best-of-n would be best-of-1, pass@k left out; nothing is cached, the job fails
    once naming the fix, and with `supports_n: false` the n samples are n requests."""
    with FakeOpenAIServer(ignores_n=True) as server:
        cache = tmp_path / "c.sqlite"
        with LLM(_config(server, max_retries=0), cache, progress=False) as llm:
            with pytest.raises(LLMError, match="supports_n: false"):
                list(llm.run([Request.chat([("user", "q")], n=3, temperature=1.0)]))
        with LLM(_config(server, supports_n=False), cache, progress=False) as llm:
            out = llm.complete(Request.chat([("user", "q")], n=3, temperature=1.0))
        assert len(out.choices) == 3 and not out.cached
