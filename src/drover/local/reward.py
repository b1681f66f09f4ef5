"""Reward models: load one trained by `drover reward` and score (prompt, response) pairs.

A reward model is an `AutoModelForSequenceClassification` with one label: the score is the
head's output at the response's last token (the EOS that closes it), read by the same
forward training uses (`drover.local.sequence_model.SequenceModel` with its scalar head,
over the same right-padded collation), so a score here is exactly what training saw.
`drover rerank`, best-of-n, expert iteration, RSO, Tuna's proxy ranking model and the
online reward `reward-model` all score through `score_sequences` (`RewardScorer` is its
callable form).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drover.records import Message


def load_reward_model(path: str | Path, device: str | None = None, *, allow_download: bool = False) -> Any:
    """The reward model in eval mode (float32 on CPU). Pair it with `load_tokenizer(path)`."""
    from drover.local.sequence_model import load_backbone

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
    """One reward per (prompt, response); a prompt is a user message string or chat turns.

    A sequence longer than `max_length` keeps its start, as in training (the reward is read at
    the last response token kept); one with no response token left is refused (DataError)."""
    import torch

    from drover.collate import PaddedCollator
    from drover.errors import DataError
    from drover.local.logprobs import target_index
    from drover.local.sequence_model import SequenceModel
    from drover.tokenization import encode_prompt_response

    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    scorer = SequenceModel(model, scalar_head=True).eval()
    collate = PaddedCollator(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    scores: list[float] = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            seqs = [encode_prompt_response(tokenizer, _messages(prompts[i]), responses[i], max_length, str(i))
                    for i in range(start, min(start + batch_size, len(prompts)))]
            for i, seq in enumerate(seqs, start):
                if seq.num_trained == 0:  # the head would read a prompt token: a reward for no response
                    raise DataError(f"reward model: prompt {i} fills max_length={max_length} tokens, so none of "
                                    f"its response is left to score; raise max_length or shorten the prompt")
            out = collate(seqs)
            index = target_index(out["labels"], out["seq_index"], len(seqs)).to(device)
            scores.extend(scorer(input_ids=out["input_ids"].to(device), position_ids=out["position_ids"].to(device),
                                 attention_mask=out["attention_mask"].to(device), src=index.src, ids=index.ids,
                                 last=index.last).tolist())
    return scores


@dataclass
class RewardScorer:
    """A reward model as a callable scorer: [(prompt messages, response text)] -> rewards, in order."""

    model: Any            # AutoModelForSequenceClassification (num_labels=1), eval mode
    tokenizer: Any
    batch_size: int = 8
    max_length: int = 2048

    def __call__(self, items: list[tuple[list[Message], str]]) -> list[float]:
        return score_sequences(self.model, self.tokenizer, [list(msgs) for msgs, _ in items],
                               [text for _, text in items], self.batch_size, self.max_length)


def load_reward_scorer(path: str, batch_size: int = 8, max_length: int = 2048) -> RewardScorer:
    """A scorer for the reward model saved at `path` (local directory) by `drover reward`."""
    from drover.models import load_tokenizer

    return RewardScorer(load_reward_model(path), load_tokenizer(path), batch_size, max_length)
