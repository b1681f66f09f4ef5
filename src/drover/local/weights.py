"""A model's weights as a plain Hugging Face checkpoint names them, LoRA adapters merged, the model untouched.

An engine that keeps its own copy of the policy (vLLM, colocated) must be handed, every
step, the weights the policy computes with. With LoRA those are W + (alpha/r)·B·A, which
exist nowhere as a tensor: peft's `merge_adapter()` / `unmerge_adapter()` (what TRL does)
writes them into the trained weights and subtracts them again, which is not exact in
floating point and would make the trained weights drift. Here each merged weight is a new
tensor, computed exactly as peft's merge computes it (`base + get_delta_weight`), so it
equals `merge_and_unload()`'s result bit for bit while the policy's own tensors are only read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from drover.errors import ConfigError
from drover.local.sequence_model import hf_model

_SAVED_COPY = re.compile(r"\.modules_to_save\.[^.]+\.")   # peft's trainable copy of a whole module


def _is_lora_layer(module: Any) -> bool:
    return hasattr(module, "base_layer") and hasattr(module, "lora_A") and hasattr(module, "get_delta_weight")


def _merged(name: str, layer: Any) -> Iterator[tuple[str, Any]]:
    """`name.weight` (and `.bias`) of one LoRA-wrapped linear layer with its active adapters added."""
    import torch

    base = layer.get_base_layer()
    weight = base.weight.detach()
    if not layer.disable_adapters and not layer.merged:
        for adapter in layer.active_adapters:
            if adapter not in layer.lora_A:
                continue
            if adapter in getattr(layer, "lora_variant", {}) or getattr(layer, "lora_bias", {}).get(adapter):
                raise ConfigError(f"{name}: LoRA variants (DoRA) and LoRA biases cannot be merged for the "
                                  f"generation engine; use plain LoRA or engine=hf")
            with torch.no_grad():
                weight = weight + layer.get_delta_weight(adapter)
    yield f"{name}.weight", weight
    if getattr(base, "bias", None) is not None:
        yield f"{name}.bias", base.bias.detach()


def plain_weights(module: Any) -> Iterator[tuple[str, Any]]:
    """(checkpoint name, tensor) for every parameter of `module` (a transformers model, possibly
    peft-wrapped), as `save_pretrained` of the merged model would name them; tied weights once."""
    model = hf_model(module)
    lora = {name: m for name, m in model.named_modules() if _is_lora_layer(m)}
    for name, layer in lora.items():
        yield from _merged(name, layer)
    inside = tuple(name + "." for name in lora)
    for name, param in model.named_parameters():
        if name.startswith(inside) or ".original_module." in name:
            continue
        yield _SAVED_COPY.sub(".", name), param.detach()
