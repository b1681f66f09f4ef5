"""Training engine: log-probs, batch-split invariance, LoRA, bad input, config and recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CODE_ALPACA = Path(__file__).resolve().parents[1] / "src/drover/resources/data/codealpaca/code_alpaca_2k.json"
RECIPES = Path(__file__).resolve().parents[1] / "src/drover/resources/recipes/train"


@pytest.fixture(autouse=True)
def _one_thread():
    """The machine is shared: one torch thread avoids oversubscription stalls (speed only)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def codealpaca_jsonl(path: Path, n: int, start: int = 0) -> Path:
    """The shipped Code Alpaca sample as Conversation JSONL (plain json, as a user would)."""
    rows = [r for r in json.loads(CODE_ALPACA.read_text()) if r["output"].strip()][start:start + n]
    with open(path, "w") as handle:
        for i, r in enumerate(rows):
            user = r["instruction"] + (f"\n\n{r['input']}" if r["input"].strip() else "")
            handle.write(json.dumps({"id": f"ca-{start + i}", "messages": [
                {"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}]}) + "\n")
    return path


def train_config(model_dir: Path, data: list[Path], run_dir: Path, **overrides):
    from drover.config import from_dict
    from drover.train.config import TrainConfig

    values = {"model": str(model_dir), "data": [str(d) for d in data], "run_dir": str(run_dir),
              "mixed_precision": "no", "max_length": 128, "micro_batch_size": 4, "epochs": 1, "lr": 1e-3,
              "warmup_ratio": 0.0, "progress": False, "seed": 0}
    values.update(overrides)
    return from_dict(TrainConfig, values)


def make_engine(config):
    from drover.models import load_tokenizer
    from drover.runs import RunDir
    from drover.train.engine import Engine
    from drover.train.objectives import get_objective
    from drover.train.runner import prepare_examples

    spec = get_objective(config.objective)
    run = RunDir(config.run_dir).ensure()
    tokenizer = load_tokenizer(config.tokenizer_path, config.chat_template)
    examples, eval_examples, _ = prepare_examples(config, spec, tokenizer, run)
    return Engine(config, spec, examples, eval_examples, tokenizer, run)


# -- log-probs --------------------------------------------------------------------------------------

def test_selective_logprobs_match_full_log_softmax_and_packing(tiny_model_dir, tmp_path):
    """Per-target log-probs equal log_softmax(logits) gathered, padded or packed (no cross-attention)."""
    import torch

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 6)
    padded = make_engine(train_config(tiny_model_dir, [data], tmp_path / "a"))
    packed = make_engine(train_config(tiny_model_dir, [data], tmp_path / "b", packing=True, pack_tokens=2048))
    examples = padded.examples
    model = padded.model.model
    with torch.no_grad():
        per_seq = {}
        for name, engine in (("padded", padded), ("packed", packed)):
            mb = engine.collate(examples)
            values = engine.model(**mb.model_args())
            per_seq[name] = torch.zeros(len(examples)).index_add_(0, mb.index.seq, values)
        if True:  # reference: each example alone through the plain HF model
            ref = []
            for e in examples:
                seq = e.sequences[0]
                ids = torch.tensor([seq.input_ids])
                logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
                labels = torch.tensor(seq.labels[1:])
                keep = labels != -100
                ref.append(logp[keep].gather(-1, labels[keep, None]).sum())
            ref = torch.stack(ref)
    assert packed.collate(examples).inputs["input_ids"].shape[0] == 1  # really one packed row
    torch.testing.assert_close(per_seq["padded"], ref, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(per_seq["packed"], ref, rtol=1e-4, atol=1e-3)


def test_chunked_log_softmax_equals_unchunked():
    import torch

    from drover.local.logprobs import selective_log_softmax

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(37, 16, requires_grad=True)
    ids = torch.randint(0, 50, (37,))
    whole = selective_log_softmax(head, hidden, ids, chunk=1000)
    (g_whole,) = torch.autograd.grad(whole.sum(), hidden)
    chunked = selective_log_softmax(head, hidden, ids, chunk=8)
    (g_chunked,) = torch.autograd.grad(chunked.sum(), hidden)
    expected = torch.log_softmax(head(hidden), -1).gather(-1, ids[:, None]).squeeze(-1)
    torch.testing.assert_close(whole, expected)
    torch.testing.assert_close(chunked, expected)
    torch.testing.assert_close(g_chunked, g_whole)


# -- loss normalisation -----------------------------------------------------------------------------

def test_one_batch_of_8_equals_8_micro_batches_of_1(tiny_model_dir, tmp_path):
    """Loss = token sum / tokens of the whole accumulated batch: splitting changes nothing."""
    import torch

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 8)
    whole = make_engine(train_config(tiny_model_dir, [data], tmp_path / "a", micro_batch_size=8, grad_accum=1))
    split = make_engine(train_config(tiny_model_dir, [data], tmp_path / "b", micro_batch_size=1, grad_accum=8))
    examples = whole.examples
    a = whole.accumulate([whole.collate(examples)])
    b = split.accumulate([split.collate([e]) for e in examples])
    assert a["units"] == b["units"] == sum(e.num_targets for e in examples)
    assert a["loss"] / a["units"] == pytest.approx(b["loss"] / b["units"], rel=1e-5)
    grads_a = {n: p.grad for n, p in whole.model.named_parameters()}
    grads_b = {n: p.grad for n, p in split.model.named_parameters()}
    assert all(g is not None for g in grads_a.values())
    for name, g in grads_a.items():
        torch.testing.assert_close(grads_b[name], g, rtol=1e-4, atol=1e-6, msg=name)
    # and the mean-of-means a naive loop would compute is different (the test can fail)
    per_example = [e.num_targets for e in examples]
    assert len(set(per_example)) > 1


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model_dir, tmp_path):
    import torch

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 4)
    plain = make_engine(train_config(tiny_model_dir, [data], tmp_path / "a"))
    ckpt = make_engine(train_config(tiny_model_dir, [data], tmp_path / "b", gradient_checkpointing=True))
    for engine in (plain, ckpt):
        engine.accumulate([engine.collate(engine.examples)])
    grads = {n: p.grad for n, p in plain.model.named_parameters()}
    for name, p in ckpt.model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_auto_precision_is_fp32_on_cpus_without_native_bf16(monkeypatch):
    import torch

    from drover.train.engine import resolve_precision

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert resolve_precision("auto") == "no"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert resolve_precision("auto") == "bf16"
    assert resolve_precision("no") == "no"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert resolve_precision("auto") is None


def test_packed_and_padded_micro_batches_give_the_same_gradients(tiny_model_dir, tmp_path):
    import torch

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 6)
    padded = make_engine(train_config(tiny_model_dir, [data], tmp_path / "a"))
    packed = make_engine(train_config(tiny_model_dir, [data], tmp_path / "b", packing=True, pack_tokens=2048))
    a = padded.accumulate([padded.collate(padded.examples).to(padded.accelerator.device)])
    b = packed.accumulate([packed.collate(packed.examples).to(packed.accelerator.device)])
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["units"] == b["units"]
    grads = {n: p.grad for n, p in padded.model.named_parameters()}
    for name, p in packed.model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-6, msg=name)


# -- LoRA ---------------------------------------------------------------------------------------------

def test_lora_changes_only_adapter_weights(tiny_model_dir, tmp_path):
    import torch

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 8)
    engine = make_engine(train_config(tiny_model_dir, [data], tmp_path / "r", micro_batch_size=4,
                                      **{"lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}}))
    before = {n: p.detach().clone() for n, p in engine.model.named_parameters()}
    for _ in range(2):
        engine.step([engine.collate(engine.examples[:4])])
    after = dict(engine.model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed, "nothing trained"
    assert all("lora_" in n for n in changed), sorted(changed - {n for n in changed if "lora_" in n})
    assert any("lora_B" in n for n in changed)


# -- bad input: clear errors before any training --------------------------------------------------------

def test_no_trainable_tokens_is_an_error_before_training(tiny_model_dir, tmp_path):
    from drover.errors import DataError
    from drover.train.runner import run_training

    data = tmp_path / "prompts.jsonl"
    data.write_text(json.dumps({"id": "p1", "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(DataError, match="no assistant turn.*'p1'"):
        run_training(train_config(tiny_model_dir, [data], tmp_path / "run"), echo=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_max_length_shorter_than_header_is_an_error(tiny_model_dir, tmp_path):
    from drover.errors import DataError
    from drover.train.runner import run_training

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 4)
    with pytest.raises(DataError, match="max_length=3 may be shorter than the chat template's header"):
        run_training(train_config(tiny_model_dir, [data], tmp_path / "run", max_length=3), echo=False)


def test_unknown_mixture_dataset_is_an_error(tiny_model_dir, tmp_path):
    from drover.errors import ConfigError
    from drover.train.runner import run_training

    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    codealpaca_jsonl(run / "data" / "answers.jsonl", 3)
    config = train_config(tiny_model_dir, [], run, mixture={"answer": {"count": 2}})
    with pytest.raises(ConfigError, match=r"dataset 'answer'.*did you mean 'answers'"):
        run_training(config, echo=False)
    ok = train_config(tiny_model_dir, [], run, mixture={"answers": {"fraction": 0.5}})
    assert ok.mixture["answers"].fraction == 0.5


def test_mixture_count_vs_fraction_is_explicit(tmp_path):
    from drover.config import from_dict
    from drover.errors import ConfigError, DataError
    from drover.train import mixture
    from drover.train.config import TrainConfig

    with pytest.raises(ConfigError, match="exactly one of"):
        from_dict(TrainConfig, {"mixture": {"a": {"count": 1, "fraction": 0.5}}})
    with pytest.raises(ConfigError, match="exactly one of"):
        from_dict(TrainConfig, {"mixture": {"a": {}}})
    data = codealpaca_jsonl(tmp_path / "d.jsonl", 10)
    half = mixture.load(mixture.DataSource("d", data, fraction=0.5), seed=1)
    three = mixture.load(mixture.DataSource("d", data, count=3), seed=1)
    assert len(half) == 5 and len(three) == 3
    assert [r.id for r in three] == [r.id for r in mixture.load(mixture.DataSource("d", data, count=3), seed=1)]
    with pytest.raises(DataError, match="only 10 records"):
        mixture.load(mixture.DataSource("d", data, count=11), seed=1)


def test_missing_resume_directory_is_an_error(tiny_model_dir, tmp_path):
    from drover.errors import ConfigError
    from drover.train.runner import run_training

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 4)
    config = train_config(tiny_model_dir, [data], tmp_path / "run", resume_from=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="no such checkpoint"):
        run_training(config, echo=False)


def test_ranked_records_are_checked_with_ids(tiny_tokenizer):
    from drover.errors import DataError
    from drover.records import Message, Ranked, Response
    from drover.train.data import build_examples
    from drover.train.objective import ObjectiveSpec

    spec = ObjectiveSpec("x", fn=lambda b, p: None, data="ranked", min_responses=2, needs_scores=True,
                         needs_reference_text=True)
    prompt = [Message("user", "Say hi")]
    good = Ranked("good", prompt, [Response("hi", 2.0), Response("yo", 1.0)], reference="hello")
    one = Ranked("one", prompt, [Response("hi", 2.0)], reference="hello")
    tied = Ranked("tied", prompt, [Response("hi", 1.0), Response("yo", 1.0)], reference="hello")
    noref = Ranked("noref", prompt, [Response("hi", 2.0), Response("yo", 1.0)])
    records = [good, one, tied, noref]
    with pytest.raises(DataError) as err:
        build_examples(records, spec, tiny_tokenizer, 64)
    text = str(err.value)
    assert "3 of 4 records" in text and "'one'" in text and "'tied'" in text and "'noref'" in text
    examples, report = build_examples(records, spec, tiny_tokenizer, 64, on_bad_records="drop")
    assert [e.record_id for e in examples] == ["good"]
    assert examples[0].rank == [0, 1, -1] and examples[0].scores[:2] == [2.0, 1.0]
    assert sum(len(v) for v in report.dropped.values()) == 3


# -- config and recipes -------------------------------------------------------------------------------

def test_defaults_are_tulu():
    from drover.train.config import TrainConfig

    c = TrainConfig()
    assert (c.epochs, c.lr, c.warmup_ratio, c.schedule, c.max_length, c.weight_decay, c.max_grad_norm) == \
        (2, 2e-5, 0.03, "linear", 2048, 0.0, 1.0)


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("sft-*.yaml")))
def test_shipped_training_recipes_load(recipe):
    from drover.config import load_config
    from drover.train.config import TrainConfig

    config = load_config(TrainConfig, RECIPES / recipe)
    assert config.objective == "sft"


def test_lr_schedules():
    from drover.train.engine import lr_lambda

    linear = lr_lambda("linear", 10, 110)
    assert linear(0) == 0 and linear(5) == 0.5 and linear(10) == 1 and linear(60) == 0.5 and linear(110) == 0
    cosine = lr_lambda("cosine", 0, 100)
    assert cosine(0) == 1 and cosine(50) == pytest.approx(0.5) and cosine(100) == pytest.approx(0)
    assert lr_lambda("constant", 2, 100)(50) == 1


@pytest.mark.parametrize("packing", [False, True])
def test_epoch_plans_cover_every_example_once_with_a_stable_step_count(packing):
    from drover.config import from_dict
    from drover.tokenization import EncodedExample
    from drover.train.batches import epoch_plan, step_micro_batches, steps_per_epoch
    from drover.train.config import TrainConfig
    from drover.train.data import Example

    lengths = [(7 * i) % 50 + 5 for i in range(41)]
    examples = [Example(i, str(i), [EncodedExample([1] * n, [-100] * n)], [0], [0.0]) for i, n in enumerate(lengths)]
    config = from_dict(TrainConfig, {"packing": packing, "pack_tokens": 120, "micro_batch_size": 4, "seed": 3})
    plans = [epoch_plan(examples, config, epoch) for epoch in range(3)]
    for plan in plans:
        assert sorted(i for mb in plan for i in mb) == list(range(41))
        if packing:
            assert all(sum(lengths[i] for i in mb) <= 120 for mb in plan)
    assert len({len(p) for p in plans}) == 1 and plans[0] != plans[1]  # same count, new order
    steps = steps_per_epoch(len(plans[0]), grad_accum=3, world=2)
    taken = [mb for s in range(steps) for rank in (0, 1) for mb in step_micro_batches(plans[0], s, 3, 2, rank)]
    assert len(taken) == len(plans[0]) - len(plans[0]) % 2  # each process as many; at most world-1 left out
    assert all(len(step_micro_batches(plans[0], s, 3, 2, 0)) == len(step_micro_batches(plans[0], s, 3, 2, 1))
               for s in range(steps))


# -- DeepSpeed settings (no DeepSpeed here: the config and optimizer choices, with a stand-in module) ------

def test_deepspeed_config_clips_with_max_grad_norm_and_offload_keeps_our_optimizer():
    import yaml

    from drover.config import from_dict
    from drover.train.config import TrainConfig
    from drover.train.engine import configure_deepspeed, cpu_offloaded_optimizer

    recipes = RECIPES.parent / "accelerate"
    for name, offload in (("zero2.yaml", False), ("zero3.yaml", False), ("zero3-offload.yaml", True)):
        plugin = yaml.safe_load((recipes / name).read_text())["deepspeed_config"]
        ds = {"zero_optimization": {"stage": plugin["zero_stage"],
                                    "offload_optimizer": {"device": plugin["offload_optimizer_device"]}}}
        config = from_dict(TrainConfig, {"max_grad_norm": 0.5, "micro_batch_size": 3})
        configure_deepspeed(ds, config)
        assert ds["gradient_clipping"] == 0.5 and ds["train_micro_batch_size_per_gpu"] == 3
        assert cpu_offloaded_optimizer(ds) is offload, name
        assert ("zero_force_ds_cpu_optimizer" in ds) is offload
    assert not cpu_offloaded_optimizer(None)


def test_offloaded_optimizer_is_deepspeed_cpu_adam_with_our_groups(monkeypatch):
    import sys
    import types

    import torch

    from drover.config import from_dict
    from drover.train.config import TrainConfig
    from drover.train.engine import make_optimizer

    built = {}

    class FakeCPUAdam(torch.optim.AdamW):
        def __init__(self, groups, lr, betas, eps, adamw_mode):
            built.update(lr=lr, betas=betas, eps=eps, adamw_mode=adamw_mode)
            super().__init__(groups, lr=lr, betas=betas, eps=eps)

    adam = types.ModuleType("deepspeed.ops.adam")
    adam.DeepSpeedCPUAdam = FakeCPUAdam
    for name, module in (("deepspeed", types.ModuleType("deepspeed")), ("deepspeed.ops", types.ModuleType("ops")),
                         ("deepspeed.ops.adam", adam)):
        monkeypatch.setitem(sys.modules, name, module)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    config = from_dict(TrainConfig, {"lr": 3e-4, "adam_betas": [0.8, 0.9], "adam_eps": 1e-6, "weight_decay": 0.1})
    plain, offloaded = make_optimizer(model, config), make_optimizer(model, config, cpu_offload=True)
    assert type(plain) is torch.optim.AdamW and isinstance(offloaded, FakeCPUAdam)
    assert built == {"lr": 3e-4, "betas": (0.8, 0.9), "eps": 1e-6, "adamw_mode": True}
    assert [(len(g["params"]), g["weight_decay"]) for g in offloaded.param_groups] == \
        [(len(g["params"]), g["weight_decay"]) for g in plain.param_groups] == [(1, 0.1), (3, 0.0)]


def test_deepspeed_boundary_is_the_last_micro_batch_of_each_step_even_a_short_one(tiny_model_dir, tmp_path):
    """5 micro-batches, grad_accum 3: steps of 3 and 2; DeepSpeed's own counter would put the 2nd
    boundary in the next epoch. The engine tells it (and accelerate) the real boundary."""
    data = codealpaca_jsonl(tmp_path / "d.jsonl", 5)
    engine = make_engine(train_config(tiny_model_dir, [data], tmp_path / "r", micro_batch_size=1, grad_accum=3))
    assert engine.steps_per_epoch == 2
    engine.deepspeed = True  # a stand-in: no DeepSpeed here, so record what the engine tells it
    boundaries, synced = [], []
    engine.model.set_gradient_accumulation_boundary = boundaries.append
    engine.model.get_global_grad_norm = lambda: 0.25
    backward = engine.accelerator.backward
    engine.accelerator.backward = lambda loss: (synced.append(engine.accelerator.sync_gradients), backward(loss))
    engine.train()
    assert boundaries == synced == [False, False, True, False, True]
    log = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert [r["grad_norm"] for r in log if r.get("event") == "train"] == [0.25, 0.25]


def test_fewer_micro_batches_than_processes_is_an_error():
    from drover.errors import ConfigError
    from drover.train.batches import steps_per_epoch

    assert steps_per_epoch(3, grad_accum=1, world=2) == 1 and steps_per_epoch(9, grad_accum=2, world=4) == 1
    with pytest.raises(ConfigError, match="3 micro-batch.* for 4 processes"):
        steps_per_epoch(3, grad_accum=1, world=4)


@pytest.mark.parametrize("merge", [False, True])
def test_lora_save_under_sharding_matches_the_single_process_save(tiny_model_dir, tmp_path, monkeypatch, merge):
    """ZeRO-3/FSDP path (forced here on one process): adapters from the gathered state dict,
    merge on a base reloaded on CPU; same files and weights as the single-process path."""
    import torch
    from safetensors.torch import load_file

    from drover.train import checkpoint, model as model_module

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 4)
    engine = make_engine(train_config(tiny_model_dir, [data], tmp_path / "r", micro_batch_size=4,
                                      **{"lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}}))
    engine.step([engine.collate(engine.examples)])
    engine.step([engine.collate(engine.examples)])  # lora_B moves off zero: merging changes weights
    acc, tok = engine.accelerator, engine.tokenizer
    calls = []
    with monkeypatch.context() as patch:  # first: the single-process merge changes the module in place
        patch.setattr(model_module, "sharded", lambda a: calls.append(a) or True)
        split = checkpoint.save_final(acc, engine.model, tok, tmp_path / "sharded", merge)
    assert calls
    plain = checkpoint.save_final(acc, engine.model, tok, tmp_path / "plain", merge)
    name = "model.safetensors" if merge else "adapter_model.safetensors"
    a, b = load_file(plain / name), load_file(split / name)
    assert sorted(a) == sorted(b) and a
    for key in a:
        torch.testing.assert_close(b[key], a[key], msg=key)
    if merge:
        base = load_file(Path(tiny_model_dir) / "model.safetensors")
        assert any(not torch.equal(a[k], base[k].to(a[k].dtype)) for k in a if k in base)  # adapters merged in
        assert not any("lora" in k for k in a)


def test_reference_log_probs_are_shared_across_processes_and_gathered_in_order(tiny_model_dir, tmp_path, monkeypatch):
    """Two processes (simulated one after the other) each score half; the gathered result equals
    one process scoring everything, in the original order."""
    import contextlib
    import types

    import accelerate.utils
    import torch

    from drover.models import load_tokenizer
    from drover.runs import RunDir
    from drover.train import reference
    from drover.train.batches import Collate
    from drover.train.objectives import get_objective
    from drover.train.runner import prepare_examples

    data = codealpaca_jsonl(tmp_path / "d.jsonl", 7)
    config = train_config(tiny_model_dir, [data], tmp_path / "r", micro_batch_size=2)
    tokenizer = load_tokenizer(config.tokenizer_path, config.chat_template)
    examples, _, _ = prepare_examples(config, get_objective("sft"), tokenizer, RunDir(config.run_dir).ensure())
    collate = Collate(tokenizer.pad_token_id, False, config.max_length)

    def process(rank: int, world: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(process_index=rank, num_processes=world, device=torch.device("cpu"),
                                     mixed_precision="no", autocast=contextlib.nullcontext,
                                     state=types.SimpleNamespace(deepspeed_plugin=None))

    before = reference.FORWARD_PASSES
    alone = reference.compute(examples, config, collate, process(0, 1))
    assert reference.FORWARD_PASSES - before == 4  # ceil(7 / 2)
    shares = {}
    monkeypatch.setattr(accelerate.utils, "gather_object",  # rank 1 records its share (rank 0's: any)
                        lambda obj: shares.setdefault("rank1", obj) + [(i, alone[i]) for i in range(0, 7, 2)])
    reference.compute(examples, config, collate, process(1, 2))           # examples 1, 3, 5: 2 passes
    assert [i for i, _ in shares["rank1"]] == [1, 3, 5]
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda obj: obj + shares["rank1"])
    passes = reference.FORWARD_PASSES
    together = reference.compute(examples, config, collate, process(0, 2))  # examples 0, 2, 4, 6: 2 passes
    assert reference.FORWARD_PASSES - passes == 2
    assert len(together) == len(alone) == 7
    for a, b in zip(alone, together):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
