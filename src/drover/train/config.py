"""Every training default in one place: the `TrainConfig` of `drover sft/reward/tune`.

Defaults follow Tülu (Wang et al. 2023, open-instruct `finetune.py`): 2 epochs, lr 2e-5,
linear warmup over 3% of the steps then linear decay, max length 2048, AdamW without
weight decay, gradient clipping at 1.0, loss on assistant tokens. The Alpaca / GPT-4-LLM
setting (3 epochs, cosine) is `recipes/sft-alpaca.yaml`.

Batch sizes count *records* per micro-batch (a Ranked record brings all its responses);
the effective batch is micro_batch_size x grad_accum x processes. With `packing`, a
micro-batch is instead filled with whole records up to `pack_tokens` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from drover.errors import ConfigError


@dataclass
class MixtureEntry:
    """How much of one dataset to use: exactly one of an absolute `count` of records or a
    `fraction` (0 < f <= 1) of the dataset. Spelled out on purpose: `1` alone is ambiguous."""

    count: int | None = None
    fraction: float | None = None

    def validate(self) -> None:
        if (self.count is None) == (self.fraction is None):
            raise ConfigError("mixture entry: give exactly one of `count: N` (records) or `fraction: F` (0-1)")
        if self.count is not None and self.count < 1:
            raise ConfigError(f"mixture entry: count must be >= 1, got {self.count}")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ConfigError(f"mixture entry: fraction must be in (0, 1], got {self.fraction}")


@dataclass
class LoraConfig:
    """LoRA adapters through peft; `qlora` loads the base in 4 bit (bitsandbytes, GPU only)."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    qlora: bool = False
    merge: bool = False  # save the final model with adapters merged into the base weights


@dataclass
class TrainConfig:
    # what to train
    model: str = ""                       # local directory (or hub id with allow_download)
    tokenizer: str = ""                   # default: the model's
    chat_template: str = "tulu"           # used only when the tokenizer has none of its own
    allow_download: bool = False
    objective: str = "sft"                # a name in drover.train.objectives.OBJECTIVES
    objective_params: dict[str, Any] = field(default_factory=dict)
    reference_model: str = ""             # for objectives that need one; default: `model`
    # data
    data: list[str] = field(default_factory=list)      # JSONL paths or dataset names, used whole
    mixture: dict[str, MixtureEntry] = field(default_factory=dict)  # name_or_path -> count | fraction
    data_dirs: list[str] = field(default_factory=list)  # where dataset *names* are looked up
    eval_data: list[str] = field(default_factory=list)  # held-out files evaluated every eval_every steps
    eval_fraction: float = 0.0            # or hold out this fraction of the training records
    eval_every: int = 0                   # optimizer steps; 0 = only at the end (if there is eval data)
    on_bad_records: Literal["drop", "error"] = "error"
    max_length: int = 2048
    packing: bool = False                 # padding-free packed micro-batches (best with FlashAttention)
    pack_tokens: int = 0                  # tokens per packed micro-batch; 0 = max_length
    group_by_length: bool = True          # batch records of similar length together (less padding)
    # optimisation
    epochs: int = 2
    max_steps: int = 0                    # > 0 caps the optimizer steps
    lr: float = 2e-5
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    micro_batch_size: int = 8             # records per micro-batch (per process)
    grad_accum: int = 1
    max_grad_norm: float = 1.0            # 0 disables clipping
    gradient_checkpointing: bool = False
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 where the hardware computes it
    logprob_chunk: int = 2048             # target rows per chunk of the memory-aware log-softmax
    # compute (drover.local.attention, drover.train.flops): same loss and gradients, less time
    attention: str = "auto"               # auto: packed -> fastest measured kernel here; padded -> sdpa
    compile: bool = False                 # torch.compile the backbone (pays off only for long runs of fixed shapes)
    fused_adamw: bool = True              # torch's fused AdamW kernel where the device has one
    lora: LoraConfig = field(default_factory=LoraConfig)
    # run directory, checkpoints, logging
    run_dir: str = "runs/sft"
    resume_from: str = ""                 # a checkpoint or run directory; default: run_dir's latest checkpoint
    force: bool = False                   # start fresh: replace run_dir's checkpoints, model and log (no resume)
    save_every: int = 0                   # optimizer steps between checkpoints; 0 = only at the end
    keep_last: int = 2
    seed: int = 42
    log_every: int = 1
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "drover"
    progress: bool = True
    stop_after_steps: int = 0             # testing hook: stop after N steps as if killed (no final save)

    def validate(self) -> None:
        positive = {"max_length": self.max_length, "micro_batch_size": self.micro_batch_size,
                    "grad_accum": self.grad_accum, "keep_last": self.keep_last, "logprob_chunk": self.logprob_chunk}
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"config: {name} must be >= 1, got {value}")
        if self.epochs < 1 and self.max_steps < 1:
            raise ConfigError("config: epochs must be >= 1 (or set max_steps)")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"config: warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"config: eval_fraction must be in [0, 1), got {self.eval_fraction}")
        from drover.local.attention import ATTENTION_CHOICES, PACKED_ONLY

        if self.attention not in ATTENTION_CHOICES:
            raise ConfigError(f"config: attention must be one of {', '.join(ATTENTION_CHOICES)}, got {self.attention!r}")
        if self.attention in PACKED_ONLY and not self.packing:
            raise ConfigError(f"config: attention: {self.attention} attends within packed examples; "
                              "it needs packing: true")
        if self.lr <= 0:
            raise ConfigError(f"config: lr must be > 0, got {self.lr}")
        for entry in self.mixture.values():
            entry.validate()

    @property
    def tokenizer_path(self) -> str:
        return self.tokenizer or self.model

    @property
    def reference_path(self) -> str:
        return self.reference_model or self.model
