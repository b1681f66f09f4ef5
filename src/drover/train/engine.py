"""The training loop: one for every objective, on every accelerate backend.

Read it top to bottom: set up (accelerator, reference log-probs, model, optimizer,
schedule, resume), then for each optimizer step:

  1. take this process's `grad_accum` micro-batches of the step (a pure function of
     seed, epoch and step, so resuming needs no sampler state);
  2. ask the objective how many units (tokens, pairs, records...) each micro-batch holds
     and sum them over the step and all processes: `global_units`;
  3. forward + backward each micro-batch with loss = loss_sum / global_units (times the
     factors accelerate and DDP divide by), syncing gradients only on the last one;
  4. clip, step, schedule, log, checkpoint.

Step 3 makes the update independent of how the batch is split across micro-batches and
processes: 1 micro-batch of 8 and 8 of 1 give the same gradient. The objective is a
pure function (`drover.train.objective`); nothing here depends on which one it is.
Device and dtype come from accelerate: the same code runs on one CPU process, DDP,
DeepSpeed ZeRO-2/3 and FSDP (`recipes/accelerate/*.yaml`).

Compute choices change speed, never the result (tests/test_train_compute.py): packed
micro-batches use the attention kernel measured fastest here (drover.local.attention),
AdamW is torch's fused kernel where the device has one, `compile` compiles the backbone,
and the result carries MFU against the matmul rate this process measured (drover.train.flops).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from drover.config import from_dict
from drover.errors import ConfigError
from drover.local import attention
from drover.local.sequence_model import hf_model
from drover.runs import RunDir
from drover.train import checkpoint, reference
from drover.train.batches import Collate, MicroBatch, epoch_plan, sequence_batch, step_micro_batches, steps_per_epoch
from drover.train.data import Example, examples_hash
from drover.train.flops import matmul_gflops
from drover.train.model import build_model
from drover.train.objective import ObjectiveSpec


@dataclass
class TrainResult:
    model_dir: Path | None       # None when stopped early (stop_after_steps)
    steps: int
    tokens: int                  # target tokens trained on (all processes, all epochs)
    seconds: float
    loss: float | None           # last step's loss; None when no step was left to train (resumed at the end)
    metrics: dict[str, float] = field(default_factory=dict)  # last evaluation's, if any
    input_tokens: int = 0        # tokens run through the model (no padding), all processes
    params: int = 0              # model parameters (MFU counts 6 FLOPs per parameter per token)
    matmul_gflops: float = 0.0   # this process's measured matmul rate in the compute dtype, per process
    attention: str = ""          # the attention kernel trained with
    processes: int = 1

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def mfu(self) -> float:
        """Model FLOPs utilisation of all processes against num_processes x the measured rate."""
        from drover.train.flops import mfu

        return mfu(self.params, self.input_tokens, self.seconds, self.matmul_gflops * max(1, self.processes))


def lr_lambda(schedule: str, warmup: int, total: int):
    """Multiplier of the peak lr at each step: linear warmup, then linear/cosine decay or constant
    (the transformers schedules of the same names, which Tülu and Alpaca used)."""
    def f(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        if schedule == "cosine":
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
        return 1.0
    return f


def objective_params(spec: ObjectiveSpec, params: dict[str, Any]) -> Any:
    if spec.params is not None:
        return from_dict(spec.params, params, where="objective_params")
    if params:
        raise ConfigError(f"objective_params: objective {spec.name!r} takes no parameters, got {sorted(params)}")
    return {}


def resolve_precision(value: str) -> str | None:
    """"auto": bf16 on GPUs and CPUs that compute it natively (AVX512-BF16/AMX), else fp32.
    On CPUs without it, bf16 autocast is emulated and ~10x slower than fp32. Under
    `accelerate launch`, "auto" defers to the launcher's config."""
    import os

    if value != "auto":
        return value
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    native = [getattr(torch.cpu, name, lambda: False) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return "bf16" if any(check() for check in native) else "no"


def launched_processes(environ: Any = None) -> int | None:
    """The world size the launcher asked for (torchrun/accelerate launch, MPI), or None."""
    import os

    environ = os.environ if environ is None else environ
    for name in ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"):
        if environ.get(name, "").isdigit():
            return int(environ[name])
    return None


def check_world_size(actual: int, environ: Any = None) -> None:
    """A launch of N processes that accelerate set up as another world size (e.g. a GPU
    config on a CPU host: each process a world of one) would train N independent copies
    and interleave their logs: an error before any step."""
    requested = launched_processes(environ)
    if requested is not None and requested != actual:
        raise ConfigError(f"the launcher started {requested} processes but accelerate set up a world of {actual} "
                          f"(check the accelerate config's distributed_type and that the devices exist); "
                          f"training {requested} independent copies would be wrong, so nothing was trained")


def make_accelerator(config: Any, run: RunDir) -> Any:
    import importlib.util

    from accelerate import Accelerator
    from accelerate.utils import set_seed

    trackers = [name for name, on in (("tensorboard", config.tensorboard), ("wandb", config.wandb)) if on]
    for name in trackers:
        if importlib.util.find_spec(name) is None:
            raise ConfigError(f"{name}: true needs the {name} package (pip install 'drover[tracking]')")
    import os

    # Several CPU processes (torchrun, or nodes without GPUs): accelerate only forms a gloo
    # process group when told the run is on CPU.
    cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    from accelerate.state import AcceleratorState

    # One process may train several times (expert iteration, tests): accelerate keeps the first
    # run's precision in a process-wide singleton and refuses another; start each run from its
    # own settings (the partial state, which holds the process group, is kept).
    AcceleratorState._reset_state()
    accelerator = Accelerator(cpu=cpu, mixed_precision=resolve_precision(config.mixed_precision),
                              gradient_accumulation_steps=config.grad_accum, log_with=trackers or None,
                              project_dir=str(run.root))
    check_world_size(accelerator.num_processes)
    if accelerator.state.deepspeed_plugin is not None:
        configure_deepspeed(accelerator.state.deepspeed_plugin.deepspeed_config, config)
    set_seed(config.seed)
    if trackers:
        accelerator.init_trackers(config.wandb_project, config={"objective": config.objective, "lr": config.lr})
    return accelerator


def configure_deepspeed(ds: dict[str, Any], config: Any) -> None:
    """Fill the DeepSpeed config from drover's: DeepSpeed clips and steps inside the last
    `backward` of a step, so clipping must be in its config (the recipes leave it out, and
    accelerate would otherwise put 1.0 or nothing there)."""
    ds["train_micro_batch_size_per_gpu"] = config.micro_batch_size  # we prepare no DataLoader
    ds["gradient_clipping"] = float(config.max_grad_norm)           # 0 = no clipping, as ours
    if cpu_offloaded_optimizer(ds):
        # we build DeepSpeedCPUAdam ourselves (make_optimizer); accelerate's own mapping of a
        # torch optimizer to it would drop adamw_mode, betas and eps
        ds["zero_force_ds_cpu_optimizer"] = False


def cpu_offloaded_optimizer(ds: dict[str, Any] | None) -> bool:
    """ZeRO-Offload of optimizer states: DeepSpeed then refuses a torch optimizer."""
    if not ds:
        return False
    device = ds.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
    return device not in (None, "none")


def make_optimizer(model: torch.nn.Module, config: Any, cpu_offload: bool = False,
                   device: Any = "cpu") -> torch.optim.Optimizer:
    """AdamW; weight decay (0 by default, as Tülu) never applies to biases and norms.
    Under ZeRO-Offload the same AdamW as DeepSpeed's CPU implementation; elsewhere torch's
    fused kernel where `device` has one (`fused_adamw`)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if cpu_offload:
        from deepspeed.ops.adam import DeepSpeedCPUAdam  # only installed for DeepSpeed runs

        return DeepSpeedCPUAdam(groups, lr=config.lr, betas=tuple(config.adam_betas), eps=config.adam_eps,
                                adamw_mode=True)
    fused = getattr(config, "fused_adamw", False) and fused_adamw_supported(device)
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.adam_betas), eps=config.adam_eps,
                             **({"fused": True} if fused else {}))


def fused_adamw_supported(device: Any) -> bool:
    """Whether torch has a fused (one kernel for all parameters) AdamW for `device`: CUDA,
    CPU (torch >= 2.4), MPS, XPU. Same update as the per-parameter loop (tests check)."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return torch.device(device).type in _get_fused_kernels_supported_devices()


class Engine:
    """Holds what every step needs; `train()` is the loop."""

    def __init__(self, config: Any, spec: ObjectiveSpec, examples: list[Example], eval_examples: list[Example],
                 tokenizer: Any, run: RunDir, check_plan: Any = None):
        self.config, self.spec, self.tokenizer, self.run = config, spec, tokenizer, run
        self.examples, self.eval_examples = examples, eval_examples
        self.params = objective_params(spec, config.objective_params)
        self.accelerator = make_accelerator(config, run)
        world = self.accelerator.num_processes  # checked before the (long) reference pass
        self.steps_per_epoch = steps_per_epoch(len(epoch_plan(examples, config, 0)), config.grad_accum, world)
        self.collate = Collate(tokenizer.pad_token_id, config.packing, config.pack_tokens or config.max_length)
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        self.warmup_steps = math.ceil(config.warmup_ratio * self.total_steps)
        if check_plan is not None:  # a resume refused here has written nothing yet
            check_plan(self.total_steps, self.warmup_steps)
        self.ref = self.eval_ref = None
        device = self.accelerator.device
        fixed = config.attention if config.attention != "auto" else attention.default(device, config.packing)
        if spec.needs_reference:  # once, before the policy is loaded; then the reference is freed
            cache = run.root / "reference"
            self.ref = reference.reference_logps(examples, config, self.collate, self.accelerator, cache, fixed)
            if eval_examples:
                self.eval_ref = reference.reference_logps(eval_examples, config, self.collate, self.accelerator,
                                                          cache, fixed)
        model = build_model(config, spec.scalar_head, tokenizer.pad_token_id, fixed)
        if config.compile:
            hf_model(model.model).base_model.compile(dynamic=True)
        plugin = self.accelerator.state.deepspeed_plugin
        self.deepspeed = plugin is not None
        self.optimizer = make_optimizer(model, config, cpu_offloaded_optimizer(plugin and plugin.deepspeed_config),
                                        device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(config.schedule, self.warmup_steps, self.total_steps))
        self.num_params = sum(p.numel() for p in model.parameters())  # before FSDP/ZeRO-3 shard them
        self.model, self.optimizer = self.accelerator.prepare(model, self.optimizer)
        self.accelerator.register_for_checkpointing(self.scheduler)
        self.attention, self.attention_times = fixed, {}
        if config.attention == "auto" and config.packing and not self.deepspeed and examples:
            self.attention, self.attention_times = self._pick_attention(attention.available(device))

    # -- compute choices -------------------------------------------------------------
    @torch.no_grad()
    def _pick_attention(self, candidates: list[str]) -> tuple[str, dict[str, float]]:
        """Time a forward pass of the first micro-batch with each packed-attention kernel and keep
        the fastest (drover.local.attention). Forward only: it costs about one training step, and
        the backward of attention scales as its forward does."""
        plan = epoch_plan(self.examples, self.config, 0)
        mb = self.collate([self.examples[i] for i in plan[0]]).to(self.accelerator.device)
        backbone = hf_model(self.accelerator.unwrap_model(self.model).model)

        def trial(name: str) -> tuple[float, float]:
            backbone.set_attn_implementation(name)
            start = time.perf_counter()
            loss = float(self._objective(mb, self.ref).loss_sum)  # float() waits for the device
            return time.perf_counter() - start, loss

        def agree(times: dict[str, float]) -> dict[str, float]:
            return self._reduce(times)

        name, times = attention.pick(candidates, trial, agree)
        backbone.set_attn_implementation(name)
        return name, times

    # -- one micro-batch -------------------------------------------------------------
    def _ref(self, mb: MicroBatch, refs: list[torch.Tensor] | None) -> torch.Tensor | None:
        if refs is None:
            return None
        return torch.cat([refs[i] for i in mb.example_index]).to(self.accelerator.device)

    def _units(self, mb: MicroBatch, refs: list[torch.Tensor] | None) -> float:
        """The objective's units for this micro-batch, from its structure alone (no forward pass)."""
        with torch.no_grad():
            units = self.spec.fn(sequence_batch(mb, None, self.spec.scalar_head, self._ref(mb, refs)), self.params).units
        return float(units)

    def _objective(self, mb: MicroBatch, refs: list[torch.Tensor] | None) -> Any:
        values = self.model(**mb.model_args())  # (M,) log-probs or (N,) rewards
        return self.spec.fn(sequence_batch(mb, values, self.spec.scalar_head, self._ref(mb, refs)), self.params)

    def _reduce(self, sums: dict[str, float]) -> dict[str, float]:
        keys = sorted(sums)
        total = self.accelerator.reduce(torch.tensor([sums[k] for k in keys], dtype=torch.float64,
                                                     device=self.accelerator.device), reduction="sum")
        return dict(zip(keys, total.tolist()))

    # -- one optimizer step ----------------------------------------------------------
    def accumulate(self, mbs: list[MicroBatch]) -> dict[str, float]:
        """Forward + backward every micro-batch of a step; returns global sums (loss, metrics, units)."""
        acc = self.accelerator
        units = self._reduce({"units": sum(self._units(mb, self.ref) for mb in mbs)})["units"]
        # accelerate (and DeepSpeed) divide by grad_accum, DDP-style backends average over processes
        scale = acc.gradient_accumulation_steps * acc.num_processes / units if units > 0 else 0.0
        sums: dict[str, float] = {"loss": 0.0, "tokens": 0.0, "input_tokens": 0.0}
        for i, mb in enumerate(mbs):
            last = i == len(mbs) - 1
            acc.sync_gradients = last
            if self.deepspeed:
                # DeepSpeed reduces, clips and steps at its accumulation boundary, which by default
                # it counts in micro-steps of grad_accum: wrong for an epoch's short last step.
                # accelerate 1.15 also sets it from sync_gradients in backward (same value); older
                # releases call engine.step() after every backward and rely on it alone.
                self.model.set_gradient_accumulation_boundary(last)
            with contextlib.nullcontext() if last else acc.no_sync(self.model):
                out = self._objective(mb, self.ref)
                acc.backward(out.loss_sum * scale)
            sums["loss"] += float(out.loss_sum.detach())
            sums["tokens"] += mb.num_targets
            sums["input_tokens"] += mb.num_tokens
            for key, value in out.metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value)
        return {**self._reduce(sums), "units": units}

    def step(self, mbs: list[MicroBatch]) -> dict[str, float]:
        """One optimizer step: accumulate, clip, update, schedule. Returns per-unit stats."""
        sums = self.accumulate(mbs)
        grad_norm = None
        if self.deepspeed:  # DeepSpeed clipped (its gradient_clipping) and stepped in the last backward
            get_norm = getattr(self.model, "get_global_grad_norm", None)
            grad_norm = get_norm() if get_norm is not None else None
        elif self.config.max_grad_norm > 0:
            grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        units = sums["units"]
        stats = {k: v / units if units else 0.0 for k, v in sums.items()
                 if k not in ("tokens", "input_tokens", "units")}
        stats.update(tokens=sums["tokens"], input_tokens=sums["input_tokens"], units=units, lr=lr)
        if grad_norm is not None:
            stats["grad_norm"] = float(grad_norm)
        return stats

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """The objective's loss and metrics on the held-out examples (units-weighted)."""
        self.model.eval()
        sums: dict[str, float] = {"loss": 0.0, "units": 0.0}
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        size = self.config.micro_batch_size
        n_batches = math.ceil(len(self.eval_examples) / size)
        for round_ in range(math.ceil(n_batches / world)):  # every process runs as many forwards (FSDP)
            b = round_ * world + rank
            mb = self.collate(self.eval_examples[(b % n_batches) * size:][:size]).to(self.accelerator.device)
            out = self._objective(mb, self.eval_ref)
            if b >= n_batches:
                continue
            sums["loss"] += float(out.loss_sum)
            sums["units"] += float(out.units)
            for key, value in out.metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value)
        self.model.train()
        sums = self._reduce(sums)
        units = sums.pop("units") or 1.0
        return {f"eval_{k}": v / units for k, v in sums.items()}

    def layout(self) -> dict[str, int]:
        """How this run splits a step over processes (recorded in checkpoints; see check_layout)."""
        acc = self.accelerator
        return {"num_processes": acc.num_processes,
                "micro_batches_per_step": self.config.grad_accum * acc.num_processes,
                "steps_per_epoch": self.steps_per_epoch}

    def check_layout(self, resume_from: Path) -> None:
        """Refuse a resume whose process layout would change the training (before any write)."""
        from drover.train.model import sharded

        checkpoint.check_layout(resume_from, **self.layout(), sharded_states=self.deepspeed or sharded(self.accelerator))

    # -- the loop --------------------------------------------------------------------
    def train(self, resume_from: Path | None = None) -> TrainResult:
        """The loop; a resume was checked (`train.resume`) before this engine was built."""
        from tqdm.auto import tqdm

        from drover.train.resume import train_settings

        config, acc = self.config, self.accelerator
        layout = self.layout()
        state = checkpoint.TrainState(data_hash=examples_hash(self.examples), settings=train_settings(config),
                                      **layout)
        if resume_from is not None:
            self.check_layout(resume_from)
            saved = checkpoint.load(acc, resume_from)
            saved.settings = saved.settings or train_settings(config)
            state = dataclasses.replace(saved, **layout)  # later checkpoints record this layout
        state.total_steps, state.warmup_steps = self.total_steps, self.warmup_steps
        bar = tqdm(total=self.total_steps, initial=state.step, desc=f"{self.spec.name}",
                   disable=not (config.progress and acc.is_main_process), dynamic_ncols=True)
        gflops = self._matmul_gflops()
        start, tokens_at_start, stats, metrics = time.perf_counter(), state.tokens, {}, {}
        input_tokens = 0
        plan_epoch, plan = -1, []
        while state.step < self.total_steps:
            if plan_epoch != state.epoch:
                plan, plan_epoch = epoch_plan(self.examples, config, state.epoch), state.epoch
            chunk = step_micro_batches(plan, state.epoch_step, config.grad_accum, acc.num_processes,
                                       acc.process_index)
            mbs = [self.collate([self.examples[i] for i in ids]).to(acc.device) for ids in chunk]
            stats = self.step(mbs)
            state.step += 1
            state.epoch_step += 1
            state.tokens += int(stats["tokens"])
            input_tokens += int(stats["input_tokens"])
            if state.epoch_step >= self.steps_per_epoch:
                state.epoch, state.epoch_step = state.epoch + 1, 0
            elapsed = time.perf_counter() - start
            stats["tokens_per_s"] = (state.tokens - tokens_at_start) / elapsed
            if state.step % config.log_every == 0 or state.step == self.total_steps:
                self.log(state, stats)
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{stats['lr']:.2e}", tok_s=f"{stats['tokens_per_s']:.0f}")
            if self.eval_examples and config.eval_every and state.step % config.eval_every == 0:
                metrics = self.evaluate()
                self.log(state, metrics, event="eval")
            if config.save_every and state.step % config.save_every == 0 and state.step < self.total_steps:
                checkpoint.save(acc, self.run.checkpoints, state, config.keep_last)
            if config.stop_after_steps and state.step >= config.stop_after_steps and state.step < self.total_steps:
                bar.close()
                return TrainResult(None, state.step, state.tokens - tokens_at_start, time.perf_counter() - start,
                                   stats.get("loss"), **self._compute_summary(input_tokens, gflops))
        bar.close()
        if self.eval_examples:
            metrics = self.evaluate()
            self.log(state, metrics, event="eval")
        seconds = time.perf_counter() - start
        checkpoint.save(acc, self.run.checkpoints, state, config.keep_last)
        model_dir = checkpoint.save_final(acc, self.model, self.tokenizer, self.run.root / "model", config.lora.merge)
        acc.end_training()
        return TrainResult(model_dir, state.step, state.tokens - tokens_at_start, seconds,
                           stats.get("loss"), metrics, **self._compute_summary(input_tokens, gflops))

    def _matmul_gflops(self) -> float:
        """This process's matmul rate in the compute dtype (the MFU denominator)."""
        return matmul_gflops(self.accelerator.device, reference.compute_dtype(self.accelerator))

    def _compute_summary(self, input_tokens: int, gflops_before: float) -> dict[str, Any]:
        """TrainResult's compute fields; the matmul rate is the mean of before and after training."""
        return {"input_tokens": input_tokens, "params": self.num_params, "attention": self.attention,
                "matmul_gflops": (gflops_before + self._matmul_gflops()) / 2,
                "processes": self.accelerator.num_processes}

    def log(self, state: checkpoint.TrainState, stats: dict[str, float], event: str = "train") -> None:
        if self.accelerator.is_main_process:
            self.run.log(event, step=state.step, epoch=state.epoch, **stats)
        self.accelerator.log(stats, step=state.step)
