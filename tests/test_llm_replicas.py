"""Several endpoints as one: least-outstanding routing, a replica dying mid-run (its
requests retried elsewhere, nothing lost), a revived replica taken back after its
cooldown, and one cache identity for the whole replica set."""

from __future__ import annotations

import threading
import time

import pytest

from drover.config import from_dict
from drover.errors import ConfigError
from drover.llm.client import LLM
from drover.llm.config import LLMConfig
from drover.llm.replicas import Replica, ReplicaSet
from drover.llm.testing import FakeOpenAIServer
from drover.completions import Request


def _config(servers, **overrides) -> LLMConfig:
    fields = {"concurrency": 6, "backoff_base": 0.01, "backoff_max": 0.1, "timeout": 5.0, "max_retries": 4,
              "replica_cooldown": 30.0}
    fields.update(overrides)
    return LLMConfig.from_spec(",".join(s.base_url for s in servers) + "#fake", **fields)


def _chats(n: int, prefix: str = "q") -> list[Request]:
    return [Request.chat([{"role": "user", "content": f"{prefix}{i}"}], key=f"id{i}") for i in range(n)]


def test_spec_and_yaml_name_a_replica_set():
    config = LLMConfig.from_spec("http://h1:8000/v1,http://h2:8000/v1#llama")
    assert config.base_urls() == ["http://h1:8000/v1", "http://h2:8000/v1"] and config.model == "llama"
    assert LLMConfig.from_spec("llama@http://h1:8000/v1, http://h2:8000/v1").base_urls() == config.base_urls()
    yaml_config = from_dict(LLMConfig, {"model": "llama", "base_url": ["http://h2:8000/v1", "http://h1:8000/v1"]})
    # One model, many replicas: the order of the list does not change the identity...
    assert yaml_config.endpoint_identity() == config.endpoint_identity() == "http://h1:8000/v1,http://h2:8000/v1"
    # ...and a declared name survives adding a replica.
    named = from_dict(LLMConfig, {"model": "llama", "base_url": ["http://h1:8000/v1"] * 1 + ["http://h3:8000/v1"],
                                  "replica_set": "llama-pool"})
    assert named.endpoint_identity() == "llama-pool"
    assert LLMConfig.from_spec("http://h1:8000/v1#llama").endpoint_identity() == "http://h1:8000/v1"
    with pytest.raises(ConfigError, match="listed twice"):
        LLMConfig.from_spec("http://h1/v1,http://h1/v1#m")
    with pytest.raises(ConfigError, match="not an http"):
        from_dict(LLMConfig, {"model": "m", "base_url": ["http://h1/v1", "h2:8000"]})


def test_pick_prefers_least_outstanding_and_skips_replicas_that_are_out():
    now = [0.0]
    replicas = [Replica(f"r{i}", _free_queue()) for i in range(3)]
    pool = ReplicaSet(replicas, cooldown=10.0, clock=lambda: now[0])
    a, ca = pool.acquire()
    b, cb = pool.acquire()
    c, _ = pool.acquire()
    assert {a.url, b.url, c.url} == {"r0", "r1", "r2"}  # spread before stacking
    pool.release(a, ca)
    assert pool.pick() is a  # now the least loaded
    pool.release(b, cb, failure="connection error")
    assert b not in pool.healthy() and pool.another_healthy(b)
    now[0] = 10.5
    assert b in pool.healthy()  # back after its cooldown


def _free_queue():
    import asyncio

    queue: asyncio.Queue = asyncio.Queue()
    for i in range(4):
        queue.put_nowait(object())
    return queue


def test_load_follows_outstanding_requests_not_round_robin(tmp_path):
    with FakeOpenAIServer(delay=0.15) as slow, FakeOpenAIServer(delay=0.005) as fast1, \
            FakeOpenAIServer(delay=0.005) as fast2:
        with LLM(_config([slow, fast1, fast2]), tmp_path / "c.sqlite", progress=False) as llm:
            out = list(llm.run(_chats(120)))
    assert all(c.ok for c in out) and [c.text for c in out] == [f"answer: q{i}" for i in range(120)]
    assert len(slow.requests) + len(fast1.requests) + len(fast2.requests) == 120
    assert len(slow.requests) < 0.2 * 120 and len(fast1.requests) > 30 and len(fast2.requests) > 30


def test_a_replica_dies_mid_run_and_nothing_is_lost(tmp_path):
    servers = [FakeOpenAIServer(delay=0.01).start() for _ in range(3)]
    victim = servers[1]

    def kill_when_busy() -> None:
        while len(victim.requests) < 10:
            time.sleep(0.005)
        victim.stop()

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    try:
        with LLM(_config(servers, replica_set="pool"), tmp_path / "c.sqlite", progress=False) as llm:
            out = list(llm.run(_chats(200)))
            summary = {r["url"]: r for r in llm._backend.replicas.summary()}
        killer.join(5)
        assert all(c.ok for c in out), [c.error for c in out if not c.ok][:3]
        assert [c.text for c in out] == [f"answer: q{i}" for i in range(200)]
        assert summary[victim.base_url]["failures"] >= 1 and not summary[victim.base_url]["up"]
        for alive in (servers[0], servers[2]):
            assert summary[alive.base_url]["failures"] == 0 and len(alive.requests) > 20
        # Every request was answered once by a live replica (in-flight ones on the victim retried elsewhere).
        answered = sorted(servers[0].answered + servers[2].answered + victim.answered)
        assert set(answered) == {f"q{i}" for i in range(200)}
        # Same model, one declared identity: a second run over the two survivors is all cache hits.
        with LLM(_config([servers[0], servers[2]], replica_set="pool"), tmp_path / "c.sqlite",
                 progress=False) as llm:
            again = list(llm.run(_chats(200)))
        assert all(c.cached for c in again)
    finally:
        for server in servers:
            server.stop()


def test_a_replica_is_tried_again_after_its_cooldown(tmp_path):
    first = FakeOpenAIServer(delay=0.005).start()
    second = FakeOpenAIServer(delay=0.005).start()
    port = second.port
    second.stop()  # down from the start
    revived = None
    try:
        config = _config([first, second], replica_cooldown=0.3, concurrency=2)
        with LLM(config, tmp_path / "c.sqlite", progress=False) as llm:
            out = list(llm.run(_chats(20, "a")))
            assert all(c.ok for c in out) and len(first.requests) == 20
            revived = FakeOpenAIServer(delay=0.005, port=port).start()
            time.sleep(0.35)
            out = list(llm.run(_chats(40, "b")))
        assert all(c.ok for c in out)
        assert len(revived.requests) >= 10  # back in the rotation
    finally:
        first.stop()
        if revived is not None:
            revived.stop()


def test_identity_ignores_trailing_slashes_and_order():
    a = LLMConfig.from_spec("http://h2:8000/v1/,http://h1:8000/v1#m")
    b = LLMConfig.from_spec("http://h1:8000/v1,http://h2:8000/v1#m")
    assert a.endpoint_identity() == b.endpoint_identity() == "http://h1:8000/v1,http://h2:8000/v1"
