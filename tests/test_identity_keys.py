"""Issue #12: every key is built from content. One table-driven test per stage: changing an
input or setting that affects outputs changes the key; one that cannot keeps it."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
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
    identity._wait_until_settled(model_copy)  # just copied: hashes of racy files are not remembered
    value = dir_fingerprint(model_copy)
    assert not (model_copy / FINGERPRINT_FILE).exists() and list(cache.rglob("*.json"))
    identity._FILE_MEMO.clear()
    monkeypatch.setattr(identity, "file_fingerprint", lambda p: pytest.fail(f"re-hashed {p}"))
    assert dir_fingerprint(model_copy) == value


def _same_size_edit(path: Path) -> None:
    """Rewrite `path` in place with other bytes of the same length and put its mtime back
    (what `touch -r`, `cp -p`, `rsync -a` or a 1-s tar mtime leave behind)."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_same_size_same_mtime_edit_is_seen_by_the_process_memo(tmp_path, monkeypatch):
    from drover import identity

    path = tmp_path / "weights.bin"
    path.write_bytes(b"weights v1 " * 100)
    identity._wait_until_settled(tmp_path)
    first = identity.file_fingerprint(path)
    with monkeypatch.context() as patched:  # remembered: the second lookup reads nothing
        patched.setattr(identity, "open", lambda *a, **k: pytest.fail("re-read"), raising=False)
        assert identity.file_fingerprint(path) == first
    _same_size_edit(path)
    assert identity.file_fingerprint(path) == identity.digest_bytes(path.read_bytes()) != first
    # replaced by another file of the same size and mtime (a new inode): also seen
    other = tmp_path / "other.bin"
    other.write_bytes(b"weights v3 " * 100)
    shutil.copystat(path, other)
    identity._wait_until_settled(tmp_path)
    second = identity.file_fingerprint(path)
    os.replace(other, path)
    assert identity.file_fingerprint(path) == identity.digest_bytes(b"weights v3 " * 100) != second


def _hashed_by_hand(root: Path) -> str:
    from drover.identity import FINGERPRINT_IGNORE, digest_bytes

    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in FINGERPRINT_IGNORE)
    return digest([[p.relative_to(root).as_posix(), digest_bytes(p.read_bytes())] for p in files])


@pytest.mark.parametrize("manifest", ["stamped", "user-cache"])
def test_same_size_same_mtime_edit_is_seen_through_a_manifest(model_copy, monkeypatch, tmp_path, manifest):
    """A fresh process reads the remembered hashes from the manifest: an edit that keeps size
    and mtime must still change the fingerprint (inode/ctime differ), an untouched directory
    must not be read again."""
    from drover import identity
    from drover.identity import stamp_dir

    monkeypatch.setenv("DROVER_CACHE_DIR", str(tmp_path / "user-cache"))
    (model_copy / FINGERPRINT_FILE).unlink(missing_ok=True)
    if manifest == "stamped":
        first = stamp_dir(model_copy)
    else:
        identity._wait_until_settled(model_copy)
        first = dir_fingerprint(model_copy)
        assert not (model_copy / FINGERPRINT_FILE).exists()
    identity._FILE_MEMO.clear()
    with monkeypatch.context() as patched:
        patched.setattr(identity, "file_fingerprint", lambda p: pytest.fail(f"re-hashed {p}"))
        assert dir_fingerprint(model_copy) == first
    for name in ("model.safetensors", "tokenizer_config.json"):
        _same_size_edit(model_copy / name)
        identity._FILE_MEMO.clear()  # a fresh process: only the manifest remembers
        changed = dir_fingerprint(model_copy)
        assert changed == _hashed_by_hand(model_copy) != first
        first = changed


def test_old_manifest_entries_are_rehashed_not_trusted(model_copy):
    """A manifest of the older [size, mtime_ns, sha] form cannot tell a same-size replacement
    apart, so its hashes are ignored (here: a wrong one) and the files read again."""
    from drover import identity

    entries = {rel: [st.st_size, st.st_mtime_ns, "sha256:" + "0" * 64] for rel, _, st in identity._dir_files(model_copy)}
    (model_copy / FINGERPRINT_FILE).write_text(json.dumps({"fingerprint": "sha256:old", "files": entries}))
    identity._FILE_MEMO.clear()
    assert dir_fingerprint(model_copy) == _hashed_by_hand(model_copy)
    rewritten = json.loads((model_copy / FINGERPRINT_FILE).read_text())["files"]
    assert all(len(entry) == 5 for entry in rewritten.values())


def test_a_file_written_within_the_last_timestamp_tick_is_not_remembered(tmp_path):
    """git's racy-clean rule: a rewrite within the same tick would leave every stat field
    equal, so a hash read within a tick of the last change is used but not remembered."""
    from drover import identity

    assert identity._settled_from(1_700_000_000_123_456_789) == 1_700_000_000_143_456_789  # ns stamps: 20 ms
    assert identity._settled_from(1_700_000_000_000_000_000) == 1_700_000_002_000_000_000  # 1-s stamps: 2 s
    path = tmp_path / "fresh.bin"
    path.write_bytes(b"just written")
    identity.file_fingerprint(path)
    if identity._settled_from(path.stat().st_ctime_ns) > time.time_ns():
        assert str(path.resolve()) not in identity._FILE_MEMO
    identity._wait_until_settled(tmp_path)
    identity.file_fingerprint(path)
    assert str(path.resolve()) in identity._FILE_MEMO


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

def _literal_resource_reads(path: Path) -> set[str]:
    """The shipped paths a module names literally: resource_path("data", "x", f"{y}.txt") gives
    "data/x" (the literal part before the first computed one); load_prompt("eval/a.txt") gives
    "prompts/eval/a.txt"."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        if node.func.id in ("resource_path", "resource_text"):
            parts = []
            for arg in node.args:
                if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                    break
                parts.append(arg.value)
            found.add("/".join(parts))
        elif node.func.id == "load_prompt":
            arg = node.args[0]
            text = arg.value if isinstance(arg, ast.Constant) else "".join(
                v.value for v in arg.values[:1] if isinstance(v, ast.Constant))  # an f-string's literal head
            found.add("prompts/" + text)
    return found


def test_every_shipped_file_a_benchmark_reads_is_in_its_key():
    """Each task declares (`Task.shipped`) the shipped data and prompts it reads, so their
    content is in its result key; a read the declaration does not cover fails here."""
    import inspect

    from drover.evaluate.registry import TASKS
    from drover.evaluate.runner import task_inputs
    from drover.evaluate.task import EvalOptions, resource_path
    from drover.identity import path_fingerprint

    for name in TASKS.names():
        task = TASKS.get(name)
        reads = _literal_resource_reads(Path(inspect.getfile(type(task))))
        for read in reads:
            assert any(read == d or read.startswith(d + "/") or d.startswith(read) for d in task.shipped), (name, read)
        inputs = task_inputs(task, EvalOptions())
        for rel in task.shipped:
            assert resource_path(*rel.split("/")).exists(), (name, rel)
            assert inputs[f"shipped:{rel}"] == path_fingerprint(resource_path(*rel.split("/")))


def test_truthfulqa_gen_keys_its_judge_prompts():
    from drover.evaluate.registry import TASKS
    from drover.judges import truthfulqa

    reads = _literal_resource_reads(Path(truthfulqa.__file__))
    shipped = TASKS.get("truthfulqa_gen").shipped
    assert reads and all(any(d.startswith(read) for d in shipped) for read in reads)


def test_module_fingerprint_follows_the_modules_it_imports(tmp_path, monkeypatch):
    """A metric fixed in a helper module changes the benchmark key, though the task module
    itself is unchanged; a module the helper imports in turn does not."""
    import importlib

    from drover.identity import module_fingerprint

    pkg = tmp_path / "probepkg"
    (pkg / "metrics").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "metrics" / "__init__.py").write_text("")
    (pkg / "metrics" / "em.py").write_text("from probepkg import deep\ndef em(a, b):\n    return a == b\n")
    (pkg / "deep.py").write_text("X = 1\n")
    (pkg / "task.py").write_text("def run():\n    from probepkg.metrics import em\n    return em.em(1, 1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    first = module_fingerprint("probepkg.task")
    assert module_fingerprint("probepkg.task") == first
    (pkg / "metrics" / "em.py").write_text("from probepkg import deep\ndef em(a, b):\n    return a.strip() == b\n")
    second = module_fingerprint("probepkg.task")
    assert second != first
    (pkg / "deep.py").write_text("X = 2\n")
    assert module_fingerprint("probepkg.task") == second


def test_benchmark_key_follows_a_metric_module(monkeypatch):
    """gsm's key holds the fingerprint of drover.metrics.extract (its answer extraction)."""
    from drover.evaluate.config import EvalConfig
    from drover.evaluate.registry import TASKS
    from drover.evaluate.runner import result_key
    from drover import identity

    task = TASKS.get("gsm_cot")
    options = EvalConfig(model="m", tasks=["gsm_cot"]).eval_options()
    before = result_key({"backend": "hf", "model": "sha256:a"}, task, options)
    real = identity.file_fingerprint
    monkeypatch.setattr(identity, "file_fingerprint",
                        lambda p: "sha256:edited" if str(p).endswith("metrics/extract.py") else real(p))
    assert result_key({"backend": "hf", "model": "sha256:a"}, task, options) != before


def _shipped_reads(path: Path) -> set[str]:
    """What a judge module reads from drover/resources literally: calls of the names it binds to
    drover.judges.files.data_path ("data/...") and drover.prompts.load_prompt ("prompts/...")."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    readers = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("drover.judges.files", "drover.prompts"):
            for alias in node.names:
                if alias.name in ("data_path", "load_prompt"):
                    readers[alias.asname or alias.name] = "data/" if alias.name == "data_path" else "prompts/"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in readers:
            parts = []
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    parts.append(arg.value)
                    continue
                if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                    parts.append(arg.values[0].value)  # an f-string's literal head
                break
            found.add(readers[node.func.id] + "/".join(parts))
    return found


def test_every_shipped_file_a_judge_reads_is_in_its_key(tmp_path):
    import inspect

    from drover.judges.files import RESOURCES
    from drover.judges.registry import JUDGES
    from drover.judges.stage import protocol

    for name in JUDGES.names():
        judge = JUDGES.get(name)
        for read in _shipped_reads(Path(inspect.getfile(type(judge)))):
            assert any(read == d or read.startswith(d + "/") or d.startswith(read) for d in judge.shipped), (name, read)
        for rel in judge.shipped:
            assert RESOURCES.joinpath(*rel.split("/")).exists(), (name, rel)
        assert set(protocol(judge)) == {"code", *(f"shipped:{rel}" for rel in judge.shipped)}


def test_judge_result_key_follows_its_prompts_and_parser_code(monkeypatch, tmp_path):
    """A corrected prompt file or verdict parser (drover.judges.verdicts) gives another result key."""
    from drover import identity
    from drover.judges.registry import JUDGES
    from drover.judges.stage import JudgeConfig, result_key

    judge = JUDGES.get("meta")
    config = JudgeConfig(kind="meta", judge="http://127.0.0.1:9/v1#j")
    settings = judge.Settings()

    def key():
        return result_key(config, settings, {"answers": []}, {"backend": "openai"}, judge)

    before = key()
    assert key() == before
    real = identity.file_fingerprint
    for i, edited in enumerate(("judges/verdicts.py", "prompts/judges/llmbar/")):
        with monkeypatch.context() as patched:
            patched.setenv("DROVER_CACHE_DIR", str(tmp_path / str(i)))  # nothing remembered: every file is read
            patched.setattr(identity, "file_fingerprint",
                            lambda p, e=edited: "sha256:edited" if e in Path(p).as_posix() else real(p))
            identity._FILE_MEMO.clear()
            assert key() != before, edited
    identity._FILE_MEMO.clear()


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


def test_training_data_key_follows_response_scores(tiny_tokenizer):
    """Scores decide the pairs (ties give none), the reward model's margins and KTO's labels:
    re-scored data with the same texts and order is other training data, so a resume refuses.
    Data without scores keeps the key it always had (old checkpoints still resume)."""
    import hashlib

    from drover.records import Message, Ranked, Response
    from drover.train.data import build_examples, examples_hash
    from drover.train.objectives import get_objective

    prompt = [Message("user", "Say hi")]

    def examples(*scores):
        record = Ranked("r", prompt, [Response(t, s) for t, s in zip(("hi", "yo", "hey"), scores)])
        return build_examples([record], get_objective("rrhf"), tiny_tokenizer, 64)[0]

    assert examples_hash(examples(8.0, 7.0, 3.0)) == examples_hash(examples(8.0, 7.0, 3.0))
    assert examples_hash(examples(8.0, 8.0, 3.0)) != examples_hash(examples(8.0, 7.0, 3.0))  # a tie: one pair fewer
    assert examples_hash(examples(9.0, 7.0, 3.0)) != examples_hash(examples(8.0, 7.0, 3.0))  # another margin
    unscored = examples(None, None, None)
    old = hashlib.sha256()
    for e in unscored:
        old.update(json.dumps([e.record_id, e.rank, [s.input_ids for s in e.sequences],
                               [s.labels for s in e.sequences]]).encode())
    assert examples_hash(unscored) == old.hexdigest()[:16]


REFERENCE_CHANGES = [
    ("nothing", False), ("move", False),                     # same content elsewhere: the same reference
    ("same_size_weights", True), ("config_json", True),      # content, not name:size:mtime of weight files
    ("mixed_precision", True), ("attention", True), ("micro_batch_size", True), ("packing", True),
    ("processes", True), ("logprob_chunk", True),
]


@pytest.mark.parametrize("change, recomputes", REFERENCE_CHANGES)
def test_reference_log_prob_cache_follows_content_and_compute_settings(model_copy, tmp_path, change, recomputes):
    """The cached reference log-probs are read back only when the reference model's content
    and every setting that changes their bits are the same; otherwise computed again."""
    import contextlib
    import types

    import torch
    from test_train_engine import codealpaca_jsonl, train_config

    from drover import identity
    from drover.models import load_tokenizer
    from drover.runs import RunDir
    from drover.train import reference
    from drover.train.batches import Collate
    from drover.train.objectives import get_objective
    from drover.train.runner import prepare_examples

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 4)
    config = train_config(model_copy, [data], tmp_path / "r", micro_batch_size=2, objective="dpo")
    tokenizer = load_tokenizer(config.tokenizer_path, config.chat_template)
    examples, _, _ = prepare_examples(config, get_objective("sft"), tokenizer, RunDir(config.run_dir).ensure())
    cache = tmp_path / "r" / "reference"

    def run(config, precision="no", attention="sdpa", packing=False, world=1):
        autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
        accelerator = types.SimpleNamespace(process_index=0, num_processes=world, device=torch.device("cpu"),
                                            mixed_precision=precision, autocast=autocast, is_main_process=True,
                                            state=types.SimpleNamespace(deepspeed_plugin=None),
                                            wait_for_everyone=lambda: None)
        collate = Collate(tokenizer.pad_token_id, packing, config.max_length)
        return reference.reference_logps(examples, config, collate, accelerator, cache, attention)

    identity._wait_until_settled(model_copy)  # so its hashes are remembered, as for a model saved a while ago
    first = run(config)
    assert list(cache.glob("*.pt"))
    kwargs = {}
    if change == "move":
        config = dataclasses.replace(config, model=str(shutil.copytree(model_copy, tmp_path / "moved")))
    elif change == "same_size_weights":
        _same_size_edit(model_copy / "model.safetensors")
        identity._FILE_MEMO.clear()  # as a later process would see it
    elif change == "config_json":
        path = model_copy / "config.json"
        text = path.read_text()
        assert '"rms_norm_eps": 1e-06' in text
        path.write_text(text.replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05'))
    elif change in ("mixed_precision", "attention", "packing", "processes"):
        kwargs = {"mixed_precision": {"precision": "bf16"}, "attention": {"attention": "eager"},
                  "packing": {"packing": True}, "processes": {"world": 2}}[change]
    elif change in ("micro_batch_size", "logprob_chunk"):
        config = dataclasses.replace(config, **{change: 1})
    before = reference.FORWARD_PASSES
    with pytest.MonkeyPatch.context() as patched:
        if change == "processes":  # rank 0 of two: it scores its half; the other half "arrives" gathered
            import accelerate.utils

            patched.setattr(accelerate.utils, "broadcast_object_list", lambda objs: objs)
            patched.setattr(accelerate.utils, "gather_object",
                            lambda obj: obj + [(i, first[i]) for i in range(1, len(examples), 2)])
        again = run(config, **kwargs)
    assert (reference.FORWARD_PASSES > before) is recomputes
    if not recomputes:
        assert all(torch.equal(a, b) for a, b in zip(first, again))


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


def test_benchmark_key_follows_the_chat_format_template_text(monkeypatch):
    """`chat_format=tulu` names a shipped template: its text is what the prompts are rendered
    with, so an edited template re-runs the benchmark instead of reporting the old prompts' result."""
    from drover import templates
    from drover.evaluate.config import EvalConfig
    from drover.evaluate.registry import TASKS
    from drover.evaluate.runner import result_key

    task = TASKS.get("gsm_cot")
    options = EvalConfig(model="m", tasks=["gsm_cot"], chat_format="tulu").eval_options()
    before = result_key({"backend": "hf", "model": "sha256:a"}, task, options)
    real = templates.chat_template_text
    monkeypatch.setattr(templates, "chat_template_text", lambda name: real(name) + "{# edited #}")
    assert result_key({"backend": "hf", "model": "sha256:a"}, task, options) != before
