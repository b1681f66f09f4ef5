"""Examples -> micro-batches: which records go together each epoch, and their tensors.

The order of an epoch is a pure function of (seed, epoch), so a resumed run replays the
same micro-batches from its saved position without saving any sampler state. Padded
micro-batches group records of similar length (`group_by_length`); packed micro-batches
fill `pack_tokens` with whole records (every sequence of a record in the same micro-batch).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import torch

from drover.collate import PackingCollator, PaddedCollator, group_by_length
from drover.errors import ConfigError
from drover.train.data import Example
from drover.local.logprobs import TargetIndex, per_sequence, target_index
from drover.train.objective import SequenceBatch


def epoch_plan(examples: list[Example], config: Any, epoch: int) -> list[list[int]]:
    """The micro-batches (lists of example positions) of one epoch, in training order."""
    seed = config.seed * 1000 + epoch
    lengths = [e.num_tokens for e in examples]
    if config.packing:  # packed once (same number of micro-batches every epoch), reordered per epoch
        order = list(range(len(examples)))
        random.Random(config.seed).shuffle(order)
        budget = config.pack_tokens or config.max_length
        plan: list[list[int]] = [[]]
        used = 0
        for i in order:
            if plan[-1] and used + lengths[i] > budget:
                plan.append([])
                used = 0
            plan[-1].append(i)
            used += lengths[i]
        random.Random(seed).shuffle(plan)
        return plan
    if config.group_by_length:
        return group_by_length(lengths, config.micro_batch_size, seed)
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    return [order[i:i + config.micro_batch_size] for i in range(0, len(order), config.micro_batch_size)]


def steps_per_epoch(num_micro_batches: int, grad_accum: int, world: int) -> int:
    """Optimizer steps per epoch: each step takes grad_accum micro-batches on every process."""
    usable = num_micro_batches - num_micro_batches % world  # every process gets as many
    if usable == 0:
        raise ConfigError(f"{num_micro_batches} micro-batch(es) per epoch for {world} processes: every process "
                          f"needs at least one; use more data, a smaller micro_batch_size (pack_tokens when "
                          f"packing) or fewer processes")
    return math.ceil(usable / (grad_accum * world))


def step_micro_batches(plan: list[list[int]], step: int, grad_accum: int, world: int, rank: int) -> list[list[int]]:
    """This process's micro-batches for optimizer step `step` of the epoch (possibly fewer at the end)."""
    usable = len(plan) - len(plan) % world
    chunk = plan[step * grad_accum * world: min(usable, (step + 1) * grad_accum * world)]
    return chunk[rank::world]


@dataclass
class MicroBatch:
    """Collated tensors of the sequences of some records (N sequences, B rows of L tokens)."""

    inputs: dict[str, torch.Tensor]   # input_ids, position_ids, (attention_mask): (B, L)
    index: TargetIndex
    group: torch.Tensor               # (N,) record within the micro-batch
    rank: torch.Tensor                # (N,)
    scores: torch.Tensor              # (N,)
    example_index: list[int]          # positions of the records in the training set
    num_targets: int
    num_tokens: int = 0               # real (not padding) tokens, what MFU counts

    def to(self, device: torch.device) -> "MicroBatch":
        inputs = {k: None if v is None else v.to(device) for k, v in self.inputs.items()}
        return MicroBatch(inputs, self.index.to(device), self.group.to(device), self.rank.to(device),
                          self.scores.to(device), self.example_index, self.num_targets, self.num_tokens)

    def model_args(self) -> dict[str, Any]:
        return {**self.inputs, "src": self.index.src, "ids": self.index.ids, "last": self.index.last}


class Collate:
    """Build a `MicroBatch` from examples, padded or packed."""

    def __init__(self, pad_token_id: int, packing: bool, pack_tokens: int):
        self.packing, self.pack_tokens, self.pad_token_id = packing, pack_tokens, pad_token_id
        self.collator = (PackingCollator(pack_tokens, pad_token_id) if packing
                         else PaddedCollator(pad_token_id))

    def settings(self) -> dict[str, Any]:
        """What decides the rows a micro-batch becomes (part of the reference cache key)."""
        return {"packing": self.packing, "pack_tokens": self.pack_tokens if self.packing else None,
                "pad_token_id": self.pad_token_id}

    def __call__(self, examples: list[Example]) -> MicroBatch:
        seqs = [s for e in examples for s in e.sequences]
        out = self.collator(seqs)
        index = target_index(out["labels"], out["seq_index"], len(seqs))
        inputs = {"input_ids": out["input_ids"], "position_ids": out["position_ids"],
                  "attention_mask": out.get("attention_mask")}
        group = torch.tensor([g for g, e in enumerate(examples) for _ in e.sequences], dtype=torch.long)
        rank = torch.tensor([r for e in examples for r in e.rank], dtype=torch.long)
        scores = torch.tensor([s for e in examples for s in e.scores], dtype=torch.float32)
        return MicroBatch(inputs, index, group, rank, scores, [e.index for e in examples],
                          int(index.lengths.sum()), int((out["seq_index"] >= 0).sum()))


def sequence_batch(mb: MicroBatch, values: torch.Tensor | None, scalar_head: bool,
                   ref: torch.Tensor | None) -> SequenceBatch:
    """The objective's view of a micro-batch. `values` are the model's per-target log-probs (M,)
    or per-sequence rewards (N,); None gives the structure-only batch (all zeros)."""
    n = mb.index.lengths.shape[0]
    device = mb.index.ids.device
    rewards = None
    if scalar_head or values is None:
        lp = torch.zeros(mb.index.ids.shape[0], device=device)
        rewards = values if scalar_head and values is not None else (torch.zeros(n, device=device)
                                                                     if scalar_head else None)
    else:
        lp = values
    token_logps, mask = per_sequence(lp, mb.index)
    if ref is not None and values is None:
        ref = torch.zeros_like(ref)
    return SequenceBatch(token_logps=token_logps, token_mask=mask, seq_logps=token_logps.sum(-1),
                         seq_lengths=mb.index.lengths, group=mb.group, rank=mb.rank, scores=mb.scores,
                         ref_seq_logps=ref, rewards=rewards)
