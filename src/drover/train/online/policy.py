"""The trained policy of an online run: the engine's `SequenceModel`, optionally with a value head.

PPO needs V(s_t) before every response token. The value head is a linear layer on the
policy's last hidden states (the "shared backbone" of Ziegler et al. 2019 and TRL's former
`AutoModelForCausalLMWithValueHead`), read at the same positions as the log-probs (the
position before each target), inside the one forward, so DDP/FSDP see every parameter used
in one call. The saved policy is a plain Hugging Face causal LM (the head is not part of it;
it lives in the checkpoints).
"""

from __future__ import annotations

import torch
from torch import nn

from drover.local.logprobs import selective_log_softmax
from drover.local.sequence_model import SequenceModel, hf_model


class PolicyWithValue(SequenceModel):
    """forward -> (log-probs (M,), values (M,)) at the M target positions."""

    def __init__(self, model: nn.Module, chunk: int = 2048):
        super().__init__(model, scalar_head=False, chunk=chunk)
        hidden = hf_model(model).config.hidden_size
        self.value_head = nn.Linear(hidden, 1)
        with torch.no_grad():   # V = 0 at first: the first advantages are the (whitened) rewards, not head noise
            self.value_head.weight.zero_()
            self.value_head.bias.zero_()

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                src: torch.Tensor, ids: torch.Tensor, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        base = hf_model(self.model)
        out = base.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=False)
        hidden = out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1])[src]   # (M, H)
        logps = selective_log_softmax(base.get_output_embeddings(), hidden, ids, self.chunk, self.temperature)
        return logps, self.value_head(hidden).squeeze(-1).float()


def build_policy(config: object, value_head: bool, pad_token_id: int | None) -> SequenceModel:
    """The engine's `build_model` (LoRA, checkpointing as configured), plus the value head when asked."""
    from drover.train.model import build_model

    policy = build_model(config, False, pad_token_id)
    if not value_head:
        return policy
    return PolicyWithValue(policy.model, policy.chunk).train()
