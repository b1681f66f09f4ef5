"""LLMConfig specs and validation; the SQLite cache (round trip, corrupt, locked, stats)."""

from __future__ import annotations

import sqlite3

import pytest

from drover.cli import main
from drover.config import load_config
from drover.errors import CacheError, ConfigError
from drover.llm.cache import LLMCache
from drover.llm.config import LLMConfig
from drover.completions import Completion, Decoding, Request, request_fingerprint


def test_spec_forms(tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    assert LLMConfig.from_spec(str(model_dir)).backend == "hf"
    hf = LLMConfig.from_spec(f"hf:{model_dir}", batch_size=4)
    assert (hf.backend, hf.model, hf.batch_size) == ("hf", str(model_dir), 4)

    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    oa = LLMConfig.from_spec("openai:gpt-4o-mini")
    assert (oa.backend, oa.model, oa.base_url) == ("openai", "gpt-4o-mini", "http://127.0.0.1:9/v1")
    monkeypatch.delenv("OPENAI_BASE_URL")
    assert LLMConfig.from_spec("openai:gpt-4o-mini").base_url is None

    url = LLMConfig.from_spec("http://localhost:8000/v1#my-model", temperature=0.7)
    assert (url.backend, url.model, url.base_url, url.temperature) == ("openai", "my-model", "http://localhost:8000/v1", 0.7)
    at = LLMConfig.from_spec("my-model@https://host:1234/v1")
    assert (at.model, at.base_url) == ("my-model", "https://host:1234/v1")

    with pytest.raises(ConfigError, match="not a local directory"):
        LLMConfig.from_spec("no/such/dir")
    with pytest.raises(ConfigError, match="after '#'"):
        LLMConfig.from_spec("http://localhost:8000/v1")
    with pytest.raises(ConfigError, match="unknown key 'concurency'.*did you mean 'concurrency'"):
        LLMConfig.from_spec("openai:x", concurency=3)


def test_load_config_yaml_and_validation(tmp_path):
    path = tmp_path / "llm.yaml"
    path.write_text("backend: openai\nmodel: judge\nbase_url: http://127.0.0.1:8000/v1\nstop: ['###']\n"
                    "rpm: 600\nprice_input_per_1k: 0.01\n")
    cfg = load_config(LLMConfig, path, ["concurrency=32", "max_tokens=64"])
    assert cfg.concurrency == 32 and cfg.max_tokens == 64 and cfg.stop == ["###"] and cfg.rpm == 600
    with pytest.raises(ConfigError, match="NAME of the environment variable"):
        load_config(LLMConfig, None, ["model=x", "api_key_env=sk-abcdefghijkl"])
    with pytest.raises(ConfigError, match="backend"):
        load_config(LLMConfig, None, ["model=x", "backend=anthropic"])


def test_resolve_fills_unset_fields_only():
    cfg = LLMConfig(model="m", temperature=0.2, max_tokens=100, stop=["\n\n"])
    resolved = cfg.resolve(Decoding(temperature=0.9, n=3))
    assert resolved.temperature == 0.9 and resolved.n == 3
    assert resolved.max_tokens == 100 and resolved.stop == ("\n\n",) and resolved.top_p == 1.0


def _completion(text: str) -> Completion:
    from drover.completions import Choice, TokenLogprob, Usage

    return Completion(choices=[Choice(text, "stop", [TokenLogprob("a", -0.1, {"a": -0.1, "b": -2.0})])],
                      usage=Usage(3, 4), model="m", latency=0.5)


def test_cache_round_trip_and_stats(tmp_path):
    path = tmp_path / "llm-cache.sqlite"
    keys = [request_fingerprint({"backend": "openai", "model": "m"}, Request.chat([("user", f"q{i}")]), Decoding()) for i in range(600)]
    with LLMCache(path) as cache:
        for i, key in enumerate(keys[:550]):
            cache.put(key, "completion", "openai", "m", _completion(f"a{i}").to_dict(), 3, 4, 0.002, 0.5)
        cache.count(hits=7, misses=550, errors=2)
    with LLMCache(path) as cache:  # reopened: nothing lost
        found = cache.get_many(keys)  # more keys than one SQL statement takes
        assert len(found) == 550 and keys[599] not in found
        back = Completion.from_dict(found[keys[42]])
        assert back.text == "a42" and back.choices[0].logprobs[0].top == {"a": -0.1, "b": -2.0}
        stats = cache.stats()
    assert (stats["entries"], stats["hits"], stats["misses"], stats["errors"]) == (550, 7, 550, 2)
    assert (stats["prompt_tokens"], stats["completion_tokens"]) == (1650, 2200)
    assert stats["cost"] == pytest.approx(1.1)


def test_cache_stats_command(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with LLMCache(run_dir / "llm-cache.sqlite") as cache:
        cache.put("k1", "completion", "openai", "judge-model", _completion("x").to_dict(), 10, 20, 0.5, 0.1)
        cache.count(hits=3, misses=1)
    assert main(["cache", "stats", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "hits:              3" in out and "judge-model" in out and "$0.5000" in out
    assert main(["cache", "stats", str(tmp_path / "nothing")]) == 2
    assert "no LLM cache" in capsys.readouterr().err


def test_corrupt_cache_is_a_clear_error(tmp_path):
    path = tmp_path / "llm-cache.sqlite"
    path.write_bytes(b"this is not a database, just some bytes " * 200)
    with pytest.raises(CacheError, match="corrupt.*move the file away"):
        LLMCache(path)


def test_locked_cache_is_a_clear_error(tmp_path):
    path = tmp_path / "llm-cache.sqlite"
    LLMCache(path).close()
    other = sqlite3.connect(str(path), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another job holds the write lock
    try:
        cache = LLMCache(path, timeout=0.1)
        with pytest.raises(CacheError, match="locked by another process"):
            cache.put("k", "completion", "openai", "m", _completion("x").to_dict())
    finally:
        other.execute("ROLLBACK")
        other.close()
    cache.put("k", "completion", "openai", "m", _completion("x").to_dict())  # fine once released
    assert cache.get("k")["choices"][0]["text"] == "x"
    cache.close()
