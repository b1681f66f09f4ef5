"""A reward model as a callable scorer for best-of-n, expert iteration and RSO.

A thin adapter over `drover.train.scalar` (the one place that loads reward models and
scores (prompt, response) pairs exactly as training read them): callers hand it
[(prompt messages, response text)] and get rewards back in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drover.records import Message


@dataclass
class RewardScorer:
    model: Any            # AutoModelForSequenceClassification (num_labels=1), eval mode
    tokenizer: Any
    batch_size: int = 8
    max_length: int = 2048

    def __call__(self, items: list[tuple[list[Message], str]]) -> list[float]:
        """Rewards (floats) of `items` = [(prompt messages, response text)], in order."""
        from drover.train.scalar import score_sequences

        return score_sequences(self.model, self.tokenizer, [list(msgs) for msgs, _ in items],
                               [text for _, text in items], self.batch_size, self.max_length)


def load_reward_scorer(path: str, batch_size: int = 8, max_length: int = 2048) -> RewardScorer:
    """A scorer for the reward model saved at `path` (local directory) by `drover reward`."""
    from drover.models import load_tokenizer
    from drover.train.scalar import load_reward_model

    return RewardScorer(load_reward_model(path), load_tokenizer(path), batch_size, max_length)
