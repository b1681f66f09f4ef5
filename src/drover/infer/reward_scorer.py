"""Score (prompt, response) pairs with a trained drover reward model.

Uses exactly the training path: `encode_prompt_response` (the response and its EOS are
the target), the engine's collator, and `SequenceModel` reading the scalar head at each
sequence's last target token. A reward model saved by `drover reward` is a plain
`AutoModelForSequenceClassification` directory with its tokenizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from drover.records import Message


@dataclass
class RewardScorer:
    model: Any            # drover.train.model.SequenceModel with a scalar head
    tokenizer: Any
    collate: Any
    batch_size: int = 8
    max_length: int = 2048

    def __call__(self, items: list[tuple[list[Message], str]]) -> list[float]:
        """Rewards (floats) of `items` = [(prompt messages, response text)], in order."""
        import torch

        from drover.tokenization import encode_prompt_response
        from drover.train.data import Example

        out: list[float] = []
        with torch.no_grad():
            for start in range(0, len(items), self.batch_size):
                chunk = items[start:start + self.batch_size]
                examples = [Example(i, str(i), [encode_prompt_response(
                    self.tokenizer, [m.to_dict() for m in msgs], text, self.max_length)], [0], [math.nan])
                    for i, (msgs, text) in enumerate(chunk)]
                mb = self.collate(examples)
                out.extend(float(v) for v in self.model(**mb.model_args()))
        return out


def load_reward_scorer(path: str, batch_size: int = 8, max_length: int = 2048) -> RewardScorer:
    """A scorer for the reward model saved at `path` (local directory)."""
    from drover.models import load_tokenizer
    from drover.train.batches import Collate
    from drover.train.model import SequenceModel, load_backbone

    tokenizer = load_tokenizer(path)
    model = load_backbone(path, True, tokenizer.pad_token_id)
    scorer = SequenceModel(model, scalar_head=True).eval()
    return RewardScorer(scorer, tokenizer, Collate(tokenizer.pad_token_id, False, 0), batch_size, max_length)
