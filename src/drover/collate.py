"""Batches from encoded examples: padded, packed, and length-grouped batching.

Both collators return torch tensors, every one of shape (B, L):
  `input_ids`, `labels` (-100 where not trained), `position_ids` (restart at 0 for every
  example), `seq_index` (which input example, 0..n-1 in the order given, each token belongs
  to; -1 on padding: the engine sums per-example log-probs with it).
Labels are unshifted (the model shifts); each example's first token is never a target, so
a shifted loss never asks one packed example to predict the next one's first token.
`PaddedCollator` adds `attention_mask`. `PackingCollator` deliberately does not: with
no attention mask and restarting `position_ids`, transformers 5 detects packed sequences
(`masking_utils.find_packed_sequence_indices`) and builds a block-diagonal causal mask for
sdpa/eager attention (varlen for flash-attention), so no example attends to another. That
detection only runs when `past_key_values` is None, so call the model with
`use_cache=False` on packed batches (the training engine must do so).

On CPU, packed rows are attended with a dense L×L mask, so grouping examples of similar
length (`group_by_length`) with padding can be faster than packing; on GPUs with
flash-attention varlen, packing wins. Measure per device (see STACK-NOTES).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from drover.errors import ConfigError
from drover.tokenization import IGNORE_INDEX, EncodedExample

ExampleLike = EncodedExample | Mapping[str, Sequence[int]]


def _fields(example: ExampleLike) -> tuple[list[int], list[int]]:
    if isinstance(example, EncodedExample):
        return example.input_ids, example.labels
    ids = list(example["input_ids"])
    return ids, list(example.get("labels", ids))


def _example_rows(ids: list[int], labels: list[int], index: int) -> list[tuple[int, int, int, int]]:
    """(token, label, position, seq_index) per token. An example's first token is never a target:
    in a shifted loss it would be predicted from the previous packed example's last token."""
    return [(t, IGNORE_INDEX if p == 0 else lab, p, index) for p, (t, lab) in enumerate(zip(ids, labels))]


def _tensors(rows: list[list[tuple[int, int, int, int]]], length: int, pad_token_id: int) -> dict[str, Any]:
    """rows of (token, label, position, seq_index) tuples → padded (B, L) long tensors."""
    import torch

    batch = len(rows)
    input_ids = torch.full((batch, length), pad_token_id, dtype=torch.long)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((batch, length), dtype=torch.long)
    seq_index = torch.full((batch, length), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        if not row:
            continue
        tok, lab, pos, seq = (torch.tensor(col, dtype=torch.long) for col in zip(*row))
        n = len(row)
        input_ids[b, :n], labels[b, :n], position_ids[b, :n], seq_index[b, :n] = tok, lab, pos, seq
        # Padding gets its own run of positions (0, 1, ...) so packed-sequence detection
        # treats it as a separate block that no real token attends to.
        position_ids[b, n:] = torch.arange(length - n)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "seq_index": seq_index}


class PaddedCollator:
    """One example per row, right-padded to the longest (rounded up to `pad_to_multiple_of`)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: Sequence[ExampleLike]) -> dict[str, Any]:
        if not examples:
            raise ValueError("cannot collate an empty batch")
        rows = []
        for i, example in enumerate(examples):
            ids, labels = _fields(example)
            rows.append(_example_rows(ids, labels, i))
        length = max(len(r) for r in rows)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            length = -(-length // m) * m
        out = _tensors(rows, length, self.pad_token_id)
        out["attention_mask"] = (out["seq_index"] >= 0).long()
        return out


class PackingCollator:
    """Padding-free rows: examples concatenated (in the order given) into rows of <= `max_tokens`.

    A new row starts when the next example does not fit. Rows are padded to the longest row
    (usually one row when `max_tokens` >= the batch's total length). No `attention_mask`:
    see the module docstring for why and for the `use_cache=False` requirement.
    """

    def __init__(self, max_tokens: int, pad_token_id: int = 0):
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be positive, got {max_tokens}")
        self.max_tokens = max_tokens
        self.pad_token_id = pad_token_id

    def __call__(self, examples: Sequence[ExampleLike]) -> dict[str, Any]:
        if not examples:
            raise ValueError("cannot collate an empty batch")
        rows: list[list[tuple[int, int, int, int]]] = [[]]
        for i, example in enumerate(examples):
            ids, labels = _fields(example)
            if len(ids) > self.max_tokens:
                raise ConfigError(f"an example of {len(ids)} tokens does not fit max_tokens={self.max_tokens}; "
                                  "encode with max_length <= max_tokens")
            if len(rows[-1]) + len(ids) > self.max_tokens:
                rows.append([])
            rows[-1].extend(_example_rows(ids, labels, i))
        return _tensors(rows, max(len(r) for r in rows), self.pad_token_id)


def group_by_length(lengths: Sequence[int], batch_size: int, seed: int = 0, *, by_tokens: bool = False,
                    megabatch: int = 50) -> list[list[int]]:
    """Batches of indices whose examples have similar lengths, in a seeded random order.

    Shuffle, cut into megabatches of `megabatch` batches, sort each by length (longest
    first), cut into batches, shuffle the batches: little padding, still random.
    `batch_size` counts examples, or, with `by_tokens=True`, padded tokens per batch
    (rows × longest row). Every index appears exactly once.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be positive, got {batch_size}")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if by_tokens:
        mean = max(1, sum(lengths) // max(1, len(lengths)))
        chunk = max(1, megabatch * batch_size // mean)
    else:
        chunk = megabatch * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        group = sorted(order[start:start + chunk], key=lambda i: -lengths[i])
        current: list[int] = []
        for i in group:
            if by_tokens:
                longest = lengths[current[0]] if current else lengths[i]
                fits = (len(current) + 1) * max(longest, lengths[i]) <= batch_size
            else:
                fits = len(current) < batch_size
            if current and not fits:
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
    rng.shuffle(batches)
    return batches
