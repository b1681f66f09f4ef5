"""The contract between the training engine and every objective.

The engine turns a micro-batch of records into N scored *sequences* (one per
response; a Conversation is one sequence, a Ranked record with K responses is K
sequences, plus its `reference` when the objective wants it) and hands them to a pure
objective function as a `SequenceBatch`. The objective returns a loss *sum* and the
number of units it was summed over; the engine divides by the units of the whole
accumulated (and, distributed, global) batch, so how a batch is split never changes
the result.

Objectives declare what they need (`ObjectiveSpec`) instead of the engine branching
on their names.

How the engine uses an objective (the whole protocol):

1. `fn(batch, params) -> ObjectiveOutput` where `params` is an instance of
   `spec.params` (a dataclass built from the config's `objective_params`, unknown keys
   are config errors) or `{}` when the objective has no parameters.
2. `units` must depend only on the batch's *structure* (token_mask, seq_lengths, group,
   rank, scores), never on log-prob or reward values: before the backward passes of an
   optimizer step the engine calls `fn` once per micro-batch on a structure-only copy
   (log-probs, reference log-probs and rewards all zero, no grad) to learn the global
   unit count, then back-propagates `loss_sum / global_units` per micro-batch.
3. `metrics` values are sums over the micro-batch (like `loss_sum`); the engine sums
   them over the accumulated, global batch and divides by the same global units.
4. Sequences of one record are always in the same micro-batch, consecutive, in rank
   order (rank 0 first), with the `reference` sequence (rank -1) after them when
   requested, and the *mismatched* sequences (rank -2, `needs_mismatched`) last: the
   record's prompt followed by each response of the previous record in the data (the
   first record takes the last one's), TRL's completion rotation for KTO's KL estimate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

    from drover.records import Record

REFERENCE_RANK = -1    # the record's `reference` answer (needs_reference_text)
MISMATCHED_RANK = -2   # this prompt + a response of the previous record (needs_mismatched)


@dataclass
class SequenceBatch:
    """N sequences of a micro-batch; all tensors share the leading dimension N.

    token_logps:   (N, T) log p(target token) under the policy, 0 where not a target
    token_mask:    (N, T) bool, True on trained target tokens
    seq_logps:     (N,)   sum of token_logps over the mask
    seq_lengths:   (N,)   number of target tokens
    group:         (N,)   index of the record within the micro-batch (0..B-1)
    rank:          (N,)   position in the record's ranking, 0 = best; -1 for `reference`,
                          -2 (MISMATCHED) for another record's response after this prompt
    scores:        (N,)   the record's score for the response (NaN when unscored)
    ref_seq_logps: (N,)   same sums under the frozen reference model (if needs_reference)
    rewards:       (N,)   scalar-head outputs (if scalar_head)
    """

    token_logps: "torch.Tensor"
    token_mask: "torch.Tensor"
    seq_logps: "torch.Tensor"
    seq_lengths: "torch.Tensor"
    group: "torch.Tensor"
    rank: "torch.Tensor"
    scores: "torch.Tensor"
    ref_seq_logps: "torch.Tensor | None" = None
    rewards: "torch.Tensor | None" = None


@dataclass
class ObjectiveOutput:
    """loss_sum / units is this micro-batch's loss; units are summed across the whole
    accumulated batch before dividing (tokens for SFT, records or pairs for rankings)."""

    loss_sum: "torch.Tensor"
    units: "torch.Tensor | float"
    metrics: dict[str, float] = field(default_factory=dict)  # sums over units, averaged by the engine


@dataclass(frozen=True)
class ObjectiveSpec:
    """An objective and what it needs from the engine."""

    name: str
    fn: Callable[[SequenceBatch, Any], ObjectiveOutput]
    data: Literal["conversation", "ranked"] = "conversation"
    needs_reference: bool = False        # frozen reference log-probs, computed once and cached
    needs_reference_text: bool = False   # the Ranked.reference response as an extra sequence (rank -1)
    wants_reference_text: bool = False   # the same when the record has one; records without are kept
    scalar_head: bool = False            # reward model: a scalar per sequence instead of LM log-probs
    min_responses: int = 1               # records with fewer responses are reported before training
    needs_scores: bool = False           # records whose scores are all tied are reported
    needs_mismatched: bool = False       # each prompt with the previous record's responses (rank -2)
    record_problem: "Callable[[Record], str | None] | None" = None  # why a record is unusable, beyond the above
    paper: str = ""                      # citation shown in docs and `drover tune --help`
    formula: str = ""                    # the loss in one line, for `drover tune --help`
    params: type | None = None           # dataclass of the objective's parameters (config `objective_params`)
