"""Reward models: load one trained by `drover reward` and score (prompt, response) pairs.

A reward model is an `AutoModelForSequenceClassification` with one label (see
`drover.train.model`): the score is the head's output at the response's last token (the
EOS that closes it), exactly where training read it. `drover rerank` and Tuna's proxy
ranking model score through `score_sequences`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drover.records import Message


def load_reward_model(path: str | Path, device: str | None = None, *, allow_download: bool = False) -> Any:
    """The reward model in eval mode (float32 on CPU). Pair it with `load_tokenizer(path)`."""
    from drover.train.model import load_backbone

    model = load_backbone(str(path), True, None, allow_download=allow_download)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    if device is not None:
        model = model.to(device)
    return model.eval()


def _messages(prompt: str | Sequence[Message | dict]) -> list[Message | dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def score_sequences(model: Any, tokenizer: Any, prompts: Sequence[str | Sequence[Message | dict]],
                    responses: Sequence[str], batch_size: int = 8, max_length: int = 2048) -> list[float]:
    """One reward per (prompt, response); a prompt is a user message string or chat turns."""
    import torch

    from drover.tokenization import encode_prompt_response
    from drover.train.batches import Collate
    from drover.train.data import Example
    from drover.train.model import SequenceModel

    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    scorer = SequenceModel(model, scalar_head=True).eval()
    collate = Collate(tokenizer.pad_token_id, packing=False, pack_tokens=max_length)
    device = next(model.parameters()).device
    scores: list[float] = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            examples = []
            for i in range(start, min(start + batch_size, len(prompts))):
                seq = encode_prompt_response(tokenizer, _messages(prompts[i]), responses[i], max_length, str(i))
                examples.append(Example(i, str(i), [seq], [0], [float("nan")]))
            mb = collate(examples).to(device)
            scores.extend(scorer(**mb.model_args()).tolist())
    return scores
