"""Building the trained module: the backbone (`drover.local.sequence_model`, the forward that
training and scoring share) with LoRA, gradient checkpointing and sharding-aware loading."""

from __future__ import annotations

from typing import Any

from torch import nn

from drover.local.sequence_model import SequenceModel, load_backbone


def sharded(accelerator: Any) -> bool:
    """Whether no process holds whole parameters (ZeRO-3, FSDP): then only the gathered state
    dict is whole, and a full model must be rebuilt from it."""
    from accelerate.utils import DistributedType

    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:
        return plugin.zero_stage == 3
    return accelerator.distributed_type == DistributedType.FSDP


def unpartitioned_loading(accelerator: Any) -> Any:
    """A context in which `from_pretrained` loads a whole model on this process: under ZeRO-3
    transformers otherwise partitions it across processes as it loads (zero3 init)."""
    import contextlib

    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return contextlib.nullcontext()
    return plugin.zero3_init_context_manager(enable=False)


def apply_lora(model: nn.Module, lora: Any, scalar_head: bool) -> nn.Module:
    """Wrap `model` with peft LoRA adapters; only adapters (and a reward head) train."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if lora.qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    targets: Any = lora.target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                        task_type="SEQ_CLS" if scalar_head else "CAUSAL_LM")
    return get_peft_model(model, config)


def build_model(config: Any, scalar_head: bool, pad_token_id: int | None, attention: str = "sdpa") -> SequenceModel:
    """The policy (or reward model) ready for `accelerator.prepare`."""
    model = load_backbone(config.model, scalar_head, pad_token_id, allow_download=config.allow_download,
                          qlora=config.lora.qlora, attention=attention)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.lora.enabled or config.lora.qlora:
        model = apply_lora(model, config.lora, scalar_head)
    model.train()
    return SequenceModel(model, scalar_head=scalar_head, chunk=config.logprob_chunk)
