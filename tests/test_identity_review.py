"""Hostile review of the content-identity sweep: keys that must hold between two identical
runs, fingerprints that must not be recomputed every run, and no traceback or hang from a
model directory's odd files."""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
from pathlib import Path

import pytest

from drover import identity
from drover.errors import DroverError
from drover.identity import FINGERPRINT_FILE, dir_fingerprint


def _stamped_model(tmp_path: Path) -> Path:
    model = tmp_path / "saved"
    model.mkdir()
    (model / "model.safetensors").write_bytes(os.urandom(4096))
    (model / "config.json").write_text('{"hidden": 8}')
    identity.stamp_dir(model)
    return model


def test_a_read_only_copy_of_a_saved_model_is_hashed_once_not_every_run(tmp_path, monkeypatch):
    """A drover-saved model copied to shared read-only storage (`cp -r`, rsync: new inodes)
    carries a stamp whose entries no longer hold and cannot be rewritten in place: its hashes
    go to the user cache instead, so the next process does not read the weights again."""
    from drover import atomic

    monkeypatch.setenv("DROVER_CACHE_DIR", str(tmp_path / "user-cache"))
    copy = tmp_path / "shared" / "model"
    shutil.copytree(_stamped_model(tmp_path), copy)
    identity._wait_until_settled(copy)
    real = atomic.write_json

    def read_only(path, obj, *args, **kwargs):
        if Path(path).parent == copy:
            raise atomic.InputError(path, None, None, "cannot write here (Read-only file system)")
        return real(path, obj, *args, **kwargs)

    monkeypatch.setattr(atomic, "write_json", read_only)
    identity._FILE_MEMO.clear()
    first = dir_fingerprint(copy)
    identity._FILE_MEMO.clear()  # the next run
    monkeypatch.setattr(identity, "file_fingerprint", lambda p: pytest.fail(f"re-hashed {p}"))
    assert dir_fingerprint(copy) == first


def test_a_dangling_link_in_a_model_directory_is_not_a_traceback(tmp_path):
    """A symlink to a removed file (a pruned hub blob, an old `latest` link) has no content: it
    is no part of the fingerprint, and never a FileNotFoundError traceback."""
    model = _stamped_model(tmp_path)
    before = dir_fingerprint(model)
    (model / "stale.bin").symlink_to(tmp_path / "gone.bin")
    identity._FILE_MEMO.clear()
    assert dir_fingerprint(model) == before


def test_a_file_that_vanishes_while_a_directory_is_hashed_is_one_line(tmp_path, monkeypatch):
    """Another process rewrites the model (a save in progress): a clear error naming the file,
    not a traceback."""
    model = _stamped_model(tmp_path)
    (model / FINGERPRINT_FILE).unlink()
    victim = model / "model.safetensors"
    real = identity.file_fingerprint

    def vanish(path):
        if Path(path) == victim:
            victim.unlink()
        return real(path)

    monkeypatch.setattr(identity, "file_fingerprint", vanish)
    identity._FILE_MEMO.clear()
    with pytest.raises(DroverError, match="model.safetensors.*vanished"):
        dir_fingerprint(model)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_a_named_pipe_in_a_model_directory_does_not_hang_the_fingerprint(tmp_path):
    model = _stamped_model(tmp_path)
    before = dir_fingerprint(model)
    pipe = model / "control.pipe"
    os.mkfifo(pipe)  # opening it for reading blocks until a writer comes
    identity._FILE_MEMO.clear()
    found: list[str] = []
    worker = threading.Thread(target=lambda: found.append(dir_fingerprint(model)), daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # release the blocked reader before failing
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(10)
        pytest.fail("fingerprinting a directory with a named pipe in it hung")
    assert found == [before]


def test_a_record_shard_marked_done_under_a_smaller_limit_is_not_done_for_a_larger_one(tmp_path):
    """`limit` grows an output (resumed, not refused), but a shard's part finished under
    --limit 10 holds none of records 10..99: rank 0 re-run with --limit 100 under a launcher
    must wait for that shard again, not merge its short part as the whole job."""
    from drover.generate.rank_contextual import RankContextualConfig, _job
    from drover.generate.stage import job_key
    from drover.infer.rerank_config import RerankConfig

    rerank = RerankConfig(reward_model=str(tmp_path), prompts=str(tmp_path), policy="openai:p", limit=10)
    assert job_key(rerank) != job_key(dataclasses.replace(rerank, limit=100))
    assert job_key(dataclasses.replace(rerank, shard="0/2")) == job_key(dataclasses.replace(rerank, merge_shards=2))
    ranking = RankContextualConfig(input="i.json", output="o.jsonl", policy="openai:p", judge="openai:j", limit=10)
    assert _job(ranking) != _job(dataclasses.replace(ranking, limit=100))
    assert _job(dataclasses.replace(ranking, shard="0/2")) == _job(dataclasses.replace(ranking, merge_shards=2))


def test_a_choice_setting_is_not_read_as_a_path_in_the_cwd(tmp_path, monkeypatch):
    """`prompt: alpaca` is a choice, not a file: a folder named `alpaca` in the working
    directory (a data folder) must not turn it into that folder's fingerprint, which would
    refuse the resume of the same command run from another directory, or after an edit there."""
    from drover.generate.rank_contextual import RankContextualConfig
    from drover.generate.stage import stage_key

    config = RankContextualConfig(input="i.json", output="o.jsonl", policy="openai:p", judge="openai:j")
    monkeypatch.chdir(tmp_path)
    before = stage_key(config)
    (tmp_path / "alpaca").mkdir()
    (tmp_path / "alpaca" / "data.json").write_text("[]")
    identity._FILE_MEMO.clear()
    assert stage_key(config) == before


def test_a_peft_adapter_is_identified_with_its_base_models_content(tmp_path):
    """transformers loads an adapter directory (`adapter_config.json` naming its base) as the
    model, so a training or reference model given as an adapter computes with the base's
    weights too: the base retrained in place must change the training and reference-cache
    keys (`model_fingerprint`), as it changes the LLM cache key."""
    import json

    from drover.identity import model_fingerprint
    from drover.llm.config import LLMConfig

    base = _stamped_model(tmp_path)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    (adapter / "adapter_model.safetensors").write_bytes(b"lora")
    before, llm_before = model_fingerprint(str(adapter)), LLMConfig(backend="hf", model=str(adapter)).identity()
    assert model_fingerprint(str(adapter)) == before
    (base / "model.safetensors").write_bytes(os.urandom(4096))  # retrained in place
    assert model_fingerprint(str(adapter)) != before
    assert LLMConfig(backend="hf", model=str(adapter)).identity() != llm_before
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(adapter)}))
    model_fingerprint(str(adapter))  # an adapter naming itself: no endless recursion
