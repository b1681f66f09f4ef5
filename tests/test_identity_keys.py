"""Issue #12: every key is built from content. One table-driven test per stage: changing an
input or setting that affects outputs changes the key; one that cannot keeps it."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from drover.identity import FINGERPRINT_FILE, dir_fingerprint, digest
from drover.llm.config import LLMConfig
from drover.completions import Request, ScoreRequest, request_fingerprint, score_fingerprint


def _cache_key(config: LLMConfig) -> str:
    request = Request.chat([("user", "hi")])
    return request_fingerprint(config.identity(), request, config.resolve(request.decoding))


# --- the LLM cache key -------------------------------------------------------------------------
ENDPOINT = {"backend": "openai", "model": "tiny", "base_url": "http://127.0.0.1:8001/v1"}


@pytest.mark.parametrize("change, affects", [
    ({"base_url": "http://127.0.0.1:8002/v1"}, True),   # another server under the same served name
    ({"model": "other"}, True),
    ({"max_tokens": 7}, True),                          # a decoding default becomes the request's decoding
    ({"temperature": 0.5}, True),
    ({"base_url": "http://127.0.0.1:8001/v1/"}, False),  # the same URL spelled with a slash
    ({"concurrency": 2}, False),
    ({"rpm": 10.0}, False),
    ({"timeout": 5.0}, False),
    ({"max_retries": 1}, False),
    ({"price_input_per_1k": 1.0}, False),
])
def test_endpoint_cache_key(change, affects):
    base = _cache_key(LLMConfig(**ENDPOINT))
    assert (_cache_key(LLMConfig(**{**ENDPOINT, **change})) != base) is affects


def test_two_endpoints_under_one_served_name_never_share_cache_entries(tmp_path):
    from drover.llm.client import LLM
    from drover.llm.testing import FakeOpenAIServer

    cache = tmp_path / "llm-cache.sqlite"
    with FakeOpenAIServer() as one, FakeOpenAIServer() as two:
        request = Request.chat([("user", "same question")])
        with LLM(LLMConfig.from_spec(f"{one.base_url}#tiny"), cache, progress=False) as llm:
            assert not llm.complete(request).cached
        with LLM(LLMConfig.from_spec(f"{two.base_url}#tiny"), cache, progress=False) as llm:
            assert not llm.complete(request).cached  # asked again: another server
        assert len(one.requests) == 1 and len(two.requests) == 1
        with LLM(LLMConfig.from_spec(f"{one.base_url}#tiny"), cache, progress=False) as llm:
            assert llm.complete(request).cached


def test_declared_endpoint_identity_replaces_the_url(monkeypatch):
    monkeypatch.setenv("DROVER_ENDPOINT_IDENTITIES", json.dumps({"http://127.0.0.1:9/v1": "service:abc"}))
    moved = LLMConfig.from_spec("http://127.0.0.1:9/v1#tiny").identity()
    assert moved == {"backend": "openai", "endpoint": "service:abc", "model": "tiny"}
    monkeypatch.setenv("DROVER_ENDPOINT_IDENTITIES", json.dumps({"http://127.0.0.1:10/v1": "service:abc"}))
    assert LLMConfig.from_spec("http://127.0.0.1:10/v1#tiny").identity() == moved  # same service, new port


@pytest.fixture()
def model_copy(tiny_model_dir, tmp_path):
    dest = tmp_path / "model"
    shutil.copytree(tiny_model_dir, dest)
    return dest


def _retrain(model_dir: Path) -> None:
    """Change the weights in place (what retraining into the same directory does)."""
    import torch
    from safetensors.torch import load_file, save_file

    path = model_dir / "model.safetensors"
    weights = load_file(str(path))
    name = sorted(weights)[0]
    weights[name] = weights[name] + torch.ones_like(weights[name])
    save_file(weights, str(path), metadata={"format": "pt"})


@pytest.mark.parametrize("change, affects", [
    ("retrain", True), ("chat_template", True), ("max_length", True), ("dtype", True), ("tokenizer", True),
    ("batch_size", False), ("device", False), ("move", False), ("bookkeeping", False),
])
def test_local_backend_cache_key(model_copy, tmp_path, change, affects):
    config = LLMConfig(backend="hf", model=str(model_copy))
    before = _cache_key(config)
    before_score = score_fingerprint(config.identity(), ScoreRequest("a", "b"))
    if change == "retrain":
        _retrain(model_copy)
    elif change == "chat_template":
        config = dataclasses.replace(config, chat_template="chatml")
    elif change == "max_length":
        config = dataclasses.replace(config, max_length=64)
    elif change == "dtype":
        config = dataclasses.replace(config, dtype="bfloat16")
    elif change == "tokenizer":
        tok = model_copy / "tokenizer_config.json"
        tok.write_text(tok.read_text().replace("}", ', "x": 1}', 1))
    elif change == "batch_size":
        config = dataclasses.replace(config, batch_size=1)
    elif change == "device":
        config = dataclasses.replace(config, device="cpu")
    elif change == "move":  # the same weights at another path are the same model
        config = dataclasses.replace(config, model=str(shutil.copytree(model_copy, tmp_path / "elsewhere")))
    elif change == "bookkeeping":
        (model_copy / "provenance.json").write_text("{}")
    assert (_cache_key(config) != before) is affects
    assert (score_fingerprint(config.identity(), ScoreRequest("a", "b")) != before_score) is affects


# --- fingerprints ------------------------------------------------------------------------------
def test_dir_fingerprint_is_remembered_but_never_stale(model_copy, monkeypatch):
    from drover import identity
    from drover.provenance import provenance, stamp_model

    (model_copy / FINGERPRINT_FILE).unlink(missing_ok=True)
    first = dir_fingerprint(model_copy)
    stamped = stamp_model(model_copy, provenance(inputs={"x": "y"}))
    assert stamped == first  # provenance.json and drover-fingerprint.json are not part of it
    assert json.loads((model_copy / FINGERPRINT_FILE).read_text())["fingerprint"] == first
    record = json.loads((model_copy / "provenance.json").read_text())
    assert {"drover", "python", "torch", "transformers", "accelerate", "peft"} <= set(record["versions"])
    # a fresh process: hashes come from the stamp, no file is read again
    identity._FILE_MEMO.clear()
    monkeypatch.setattr(identity, "file_fingerprint", lambda p: pytest.fail(f"re-hashed {p}"))
    assert dir_fingerprint(model_copy) == first
    monkeypatch.undo()
    _retrain(model_copy)
    assert dir_fingerprint(model_copy) != first  # size/mtime changed: hashed again


def test_foreign_directory_fingerprints_are_cached_outside_it(model_copy, monkeypatch, tmp_path):
    from drover import identity

    cache = tmp_path / "user-cache"
    monkeypatch.setenv("DROVER_CACHE_DIR", str(cache))
    for name in (FINGERPRINT_FILE, "provenance.json"):  # a directory drover did not write
        (model_copy / name).unlink(missing_ok=True)
    value = dir_fingerprint(model_copy)
    assert not (model_copy / FINGERPRINT_FILE).exists() and list(cache.rglob("*.json"))
    identity._FILE_MEMO.clear()
    monkeypatch.setattr(identity, "file_fingerprint", lambda p: pytest.fail(f"re-hashed {p}"))
    assert dir_fingerprint(model_copy) == value


# --- benchmark results -------------------------------------------------------------------------
@pytest.mark.parametrize("change, affects", [
    ("model", True), ("limit", True), ("chat_format", True), ("seed", True), ("task_option", True),
    ("other_task_option", False), ("batch_size", False),
])
def test_benchmark_result_key(change, affects):
    from drover.evaluate.config import EvalConfig
    from drover.evaluate.registry import TASKS
    from drover.evaluate.runner import result_key

    task = TASKS.get("gsm_cot")
    config = EvalConfig(model="m", tasks=["gsm_cot"])
    identity = {"backend": "hf", "model": "sha256:a"}
    before = result_key(identity, task, config.eval_options())
    changed = {"limit": {"limit": 3}, "chat_format": {"chat_format": "none"}, "seed": {"seed": 1},
               "task_option": {"options": {"gsm_cot.shots": 2}},
               "other_task_option": {"options": {"bbh_cot.max_tokens": 9}},
               "batch_size": {"batch_size": 2}}.get(change, {})
    config = dataclasses.replace(config, **changed)
    if change == "model":
        identity = {"backend": "hf", "model": "sha256:b"}
    assert (result_key(identity, task, config.eval_options()) != before) is affects



@pytest.mark.parametrize("form", ["truth={a},info={b}", "hf:{a}", "{a}"])
def test_a_judge_model_retrained_in_place_changes_the_benchmark_key(tmp_path, form):
    """TruthfulQA's judges (one spec, hf:PATH, or open-instruct's truth=PATH,info=PATH): each
    local judge directory is keyed by its content, so other judge weights under the same path
    re-judge instead of reporting the old judge's verdicts as done."""
    from drover.evaluate.config import EvalConfig
    from drover.evaluate.registry import TASKS
    from drover.evaluate.runner import result_key

    a, b = tmp_path / "truth-judge", tmp_path / "info-judge"
    for d in (a, b):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"weights v1")
    task = TASKS.get("truthfulqa_gen")
    options = EvalConfig(model="m", tasks=["truthfulqa_gen"], truthfulqa_judge=form.format(a=a, b=b)).eval_options()
    identity = {"backend": "hf", "model": "sha256:a"}
    before = result_key(identity, task, options)
    assert result_key(identity, task, options) == before
    (a / "model.safetensors").write_bytes(b"weights v2, retrained")
    assert result_key(identity, task, options) != before

# --- training ------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, affects", [
    ("lr", 5e-4, True), ("seed", 1, True), ("micro_batch_size", 2, True), ("grad_accum", 2, True),
    ("objective", "dpo", True), ("warmup_ratio", 0.1, True), ("schedule", "cosine", True),
    ("max_grad_norm", 0.5, True), ("packing", True, True), ("mixed_precision", "bf16", True),
    ("save_every", 3, False), ("log_every", 5, False), ("progress", True, False), ("keep_last", 5, False),
    ("gradient_checkpointing", True, False), ("logprob_chunk", 7, False), ("stop_after_steps", 2, False),
    ("run_dir", "elsewhere", False), ("force", True, False),
])
def test_training_key(tiny_model_dir, tmp_path, field, value, affects):
    from test_train_engine import train_config

    from drover.train.resume import train_settings

    config = train_config(tiny_model_dir, [tmp_path / "d.jsonl"], tmp_path / "run")
    before = digest(train_settings(config))
    setattr(config, field, value)
    assert (digest(train_settings(config)) != before) is affects


def test_training_key_follows_the_base_model_content(model_copy, tmp_path):
    from test_train_engine import train_config

    from drover.train.resume import train_settings

    config = train_config(model_copy, [tmp_path / "d.jsonl"], tmp_path / "run")
    before = digest(train_settings(config))
    _retrain(model_copy)
    assert digest(train_settings(config)) != before


# --- generation stages ---------------------------------------------------------------------------
@pytest.mark.parametrize("change, affects", [
    ({"max_tokens": 64}, True), ({"temperature": 0.2}, True), ({"prompt": "chat"}, True),
    ({"teacher": "http://127.0.0.1:9/v1#other"}, True), ({"system": "be brief"}, True),
    ({"limit": 50}, False), ({"run_dir": "x"}, False), ({"teacher_options": {"concurrency": 2}}, False),
])
def test_generation_stage_key(tmp_path, change, affects):
    from drover.generate.answers import AnswersConfig
    from drover.generate.stage import stage_key_settings

    data = tmp_path / "in.jsonl"
    data.write_text('{"id": "a", "messages": [{"role": "user", "content": "q"}]}\n')
    config = AnswersConfig(input=str(data), output=str(tmp_path / "o.jsonl"), teacher="http://127.0.0.1:9/v1#t")
    before = digest(stage_key_settings(config))
    assert (digest(stage_key_settings(dataclasses.replace(config, **change))) != before) is affects


def test_generation_stage_key_follows_the_input_content(tmp_path):
    from drover.generate.answers import AnswersConfig
    from drover.generate.stage import stage_key_settings

    data = tmp_path / "in.jsonl"
    data.write_text('{"id": "a", "messages": [{"role": "user", "content": "q"}]}\n')
    config = AnswersConfig(input=str(data), output=str(tmp_path / "o.jsonl"), teacher="http://127.0.0.1:9/v1#t")
    before = digest(stage_key_settings(config))
    data.write_text('{"id": "a", "messages": [{"role": "user", "content": "another q"}]}\n')
    os.utime(data, ns=(1, 1))
    assert digest(stage_key_settings(config)) != before


# --- recipe stage markers --------------------------------------------------------------------------
def test_recipe_stage_marker_key(tmp_path):
    from drover.runs import RunDir, fingerprints

    run = RunDir(tmp_path / "run").ensure()
    data = tmp_path / "in.jsonl"
    data.write_text("{}\n")
    key = {"command": "stats", "args": [str(data)]}
    run.mark_done("s", key, inputs=fingerprints([data]), outputs=[str(data)])
    assert run.stage_done("s", key)
    assert not run.stage_done("s", {"command": "stats", "args": [str(data), "--x"]})  # settings
    data.write_text("{\"changed\": 1}\n")
    assert not run.stage_done("s", key)  # input content
    run.mark_done("s", key, inputs=fingerprints([data]), failed=2)
    assert not run.stage_done("s", key)  # failed items: not done
    assert run.stage_marker("s")["status"] == "failed" and run.stage_marker("s")["failed"] == 2
