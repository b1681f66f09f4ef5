"""The model behind one forward, for training and scoring alike: a Hugging Face model (optionally with LoRA) behind one forward.

`SequenceModel.forward` runs the transformer backbone once and returns what objectives
consume: per-target-token log-probs (language-model head, selective log-softmax) or one
scalar per sequence (reward head). Everything happens inside this one module's forward so
that DDP, FSDP and DeepSpeed, which wrap the module `accelerator.prepare` receives, see
every parameter used in a single forward call.

Reward models are `AutoModelForSequenceClassification` with `num_labels=1` built on the
causal LM's backbone (the `score` head starts random): saved in plain Hugging Face format,
loadable by transformers and TRL. drover reads the head at each sequence's *last target
token* (the EOS closing the response), which is also where transformers reads it when the
pad token differs from EOS.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from drover.errors import ConfigError
from drover.local.logprobs import selective_log_softmax


def hf_model(module: nn.Module) -> Any:
    """The transformers model inside a peft wrapper (or the model itself)."""
    return module.get_base_model() if hasattr(module, "get_base_model") else module


class SequenceModel(nn.Module):
    """model -> per-target log-probs (LM) or per-sequence rewards (scalar head)."""

    def __init__(self, model: nn.Module, scalar_head: bool = False, chunk: int = 2048):
        super().__init__()
        self.model = model
        self.scalar_head = scalar_head
        self.chunk = chunk
        self.temperature = 1.0   # log-probs of softmax(logits / temperature): online RL sets its sampling one
        # FSDP's transformer-based auto-wrap reads the layer classes from the prepared module
        self._no_split_modules = getattr(hf_model(model), "_no_split_modules", None)

    def _segments(self, position_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> dict[str, Any]:
        """flash-attn-style boundaries of the packed examples for the varlen kernels (none when padded)."""
        from drover.local.attention import PACKED_ONLY, segments

        impl = getattr(hf_model(self.model).config, "_attn_implementation", None)
        if attention_mask is not None or impl not in (*PACKED_ONLY, "flash_attention_2"):
            return {}
        cu = segments(position_ids)
        longest = int((cu[1:] - cu[:-1]).max())
        return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                src: torch.Tensor, ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        base = hf_model(self.model)
        out = base.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=False, **self._segments(position_ids, attention_mask))
        hidden = out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1])  # (B*L, H)
        if self.scalar_head:
            return base.score(hidden[last]).squeeze(-1).float()                       # (N,)
        return selective_log_softmax(base.get_output_embeddings(), hidden[src], ids, self.chunk,
                                     self.temperature)                                  # (M,)


def load_backbone(path: str, scalar_head: bool, pad_token_id: int | None, *, allow_download: bool = False,
                  qlora: bool = False, dtype: torch.dtype = torch.float32, attention: str = "sdpa") -> nn.Module:
    """Load trainable float32 weights (autocast provides bf16 compute) from a local path
    (frozen models, like the reference, can load in the compute dtype instead).
    `attention`: a transformers attn_implementation or drover's "varlen" (drover.local.attention)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from drover.models import _not_found
    from drover.local import attention as attention_kernels

    attention_kernels.register()
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": not allow_download,
                              "attn_implementation": attention}
    if qlora:
        try:
            from transformers import BitsAndBytesConfig
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigError("lora.qlora needs bitsandbytes (pip install drover[gpu]) and a CUDA GPU") from None
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=torch.bfloat16)
    try:
        if scalar_head:
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)
            model.config.pad_token_id = pad_token_id
        else:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise _not_found(path, "model", exc) from exc
    return model
