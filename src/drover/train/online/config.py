"""Every default of an online run in one typed config: `OnlineConfig` (`drover rl`).

The model, optimiser, precision, checkpointing and run directory are the training
engine's own settings (`train`: a `TrainConfig`, so LoRA, accelerate and the schedules work
as for `drover sft`); what is online lives here: the prompts, how many samples per prompt,
how they are decoded, the reward spec, and the algorithm with its parameters.

Batch: each step samples `samples_per_prompt` responses for each of `prompts_per_step`
prompts; `train.micro_batch_size` counts *prompts* (with all their samples) per
micro-batch, and every update of a step uses the whole batch (`updates_per_step` passes).

Engine: `engine` names the generation engine that samples (`drover.local.samplers.SAMPLERS`:
`hf`, the local engine on the policy itself, or `vllm`, an in-process vLLM synced with the
policy every step); an engine with settings reads them from the field it names (`vllm`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from drover.errors import ConfigError
from drover.local.vllm_sampler import VLLMSettings
from drover.rewards.kind import RewardTerm
from drover.train.config import TrainConfig


def _train_defaults() -> TrainConfig:
    # online steps are few and noisy: a constant lr, no warmup, fp32 unless asked
    return TrainConfig(lr=1e-6, schedule="constant", warmup_ratio=0.0, micro_batch_size=4, run_dir="runs/rl",
                       save_every=10)


@dataclass
class OnlineConfig:
    algorithm: str = "grpo"                    # a name in drover.train.online.algorithms.ALGORITHMS
    algorithm_params: dict[str, Any] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)   # Conversation/Ranked JSONL (a Conversation's last
                                                      # assistant turn is the gold answer verifiable rewards read)
    rewards: list[RewardTerm] = field(default_factory=list)
    steps: int = 100                           # online steps (sample -> score -> update)
    prompts_per_step: int = 8
    samples_per_prompt: int = 4                # G: the group GRPO/RLOO normalise in, the pair pool of online DPO
    updates_per_step: int = 1                  # optimiser passes over each step's batch (PPO epochs)
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    generation_batch_size: int = 16            # rows decoded together (vLLM: max_num_seqs)
    engine: str = "hf"                         # a name in drover.local.samplers.SAMPLERS: hf | vllm
    vllm: VLLMSettings = field(default_factory=VLLMSettings)
    train: TrainConfig = field(default_factory=_train_defaults)

    def validate(self) -> None:
        self.train.validate()
        if not self.train.model:
            raise ConfigError("rl: train.model (or --model) is required: the policy to start from")
        if not self.prompts:
            raise ConfigError("rl: prompts (or --prompts) is required: JSONL files whose prompts are sampled")
        for name in ("steps", "prompts_per_step", "samples_per_prompt", "updates_per_step", "max_new_tokens",
                     "generation_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"rl: {name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ConfigError(f"rl: temperature must be > 0 (online training samples), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"rl: top_p must be in (0, 1], got {self.top_p}")
        if self.train.grad_accum != 1:
            raise ConfigError("rl: train.grad_accum must be 1: a step's batch is split by train.micro_batch_size")
        self.engine_spec()   # an unknown engine fails here, with a "did you mean"
        self.vllm.validate()

    def check_processes(self, num_processes: int, sharded: bool) -> None:
        """Every process samples and trains its share of each step's prompt groups: with fewer
        groups than processes one would have nothing to run (no forward, no backward: the
        others wait on it forever); FSDP and ZeRO-3 also need equal shares (every forward
        gathers parameters from all processes)."""
        if self.prompts_per_step < num_processes:
            raise ConfigError(f"rl: prompts_per_step {self.prompts_per_step} is fewer than the {num_processes} "
                              f"processes: each needs at least one prompt per step (use a multiple of {num_processes})")
        if sharded and self.prompts_per_step % num_processes:
            raise ConfigError(f"rl: prompts_per_step {self.prompts_per_step} must be a multiple of the "
                              f"{num_processes} processes under FSDP / DeepSpeed ZeRO-3 (equal shares per process)")

    def engine_spec(self) -> Any:
        """The generation engine class (`drover.local.samplers.Sampler`)."""
        from drover.local.samplers import SAMPLERS

        try:
            return SAMPLERS.get(self.engine)
        except ConfigError as exc:
            raise ConfigError(f"rl: engine: {exc}") from None

    def engine_settings(self) -> Any:
        """The settings section the chosen engine reads (None for an engine without settings)."""
        spec = self.engine_spec()
        return getattr(self, spec.settings) if spec.settings else None

    def resume_key(self) -> dict[str, Any]:
        """What a resumed run must share with the checkpoint (not how long it runs or logs)."""
        from drover.config import to_dict
        from drover.local.samplers import SAMPLERS

        data = to_dict(self)
        for key in ("steps", "engine"):
            data.pop(key)
        for name in SAMPLERS.names():   # engine settings enter only as the chosen engine keys them
            data.pop(SAMPLERS.get(name).settings or "", None)
        engine = self.engine_spec().key(self.engine_settings())
        if engine is not None:          # None (hf): the key of runs made before engines were selectable
            data["engine"] = {"name": self.engine, **engine}
        for key in ("save_every", "keep_last", "progress", "stop_after_steps", "resume_from", "log_every",
                    "tensorboard", "wandb", "wandb_project", "max_steps", "epochs"):
            data["train"].pop(key, None)
        data["train"]["force"] = False   # how this invocation starts, not a setting (kept: keys stay as they were)
        return data


def online_config(data: dict[str, Any], where: str) -> OnlineConfig:
    """Build an `OnlineConfig` from plain data, `train` keys on top of the online defaults
    (a partial `train:` mapping keeps them instead of falling back to SFT's)."""
    from drover.config import from_dict, to_dict

    data = dict(data)
    data["train"] = {**to_dict(_train_defaults()), **dict(data.get("train") or {})}
    return from_dict(OnlineConfig, data, where=where)
