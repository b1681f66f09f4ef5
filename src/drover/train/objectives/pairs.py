"""Shared pieces of the ranking objectives: derived pairs, per-record lists, parameters.

Pairs are *derived* from a `SequenceBatch` the same way `Ranked.pairs()` derives them
from a record: within one record (same `group`), response i beats response j when
both are scored and s_i > s_j (ties give no pair), or, when the record is unscored,
when i comes first (rank_i < rank_j). The `reference` sequence (rank -1) never takes
part in a pair. Keeping this in one place is what makes the reward model, DPO and
SLiC agree on which pairs a record holds.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, TypeVar

from drover.config import from_dict
from drover.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from drover.train.objective import SequenceBatch

O = TypeVar("O")


def resolve_params(cls: type[O], params: Any) -> O:
    """The objective's parameter dataclass from None (defaults), a mapping or an instance.

    The engine may pass the objective parameters as a plain mapping from the config file;
    unknown keys are a ConfigError naming the key.
    """
    if params is None:
        return cls()
    if isinstance(params, cls):
        return params
    if dataclasses.is_dataclass(params):
        params = dataclasses.asdict(params)
    if not isinstance(params, dict):
        raise ConfigError(f"objective_params: expected a mapping, got {type(params).__name__}")
    return from_dict(cls, params, where=f"objective_params ({cls.__name__})")


def preference_pairs(batch: "SequenceBatch") -> tuple["torch.Tensor", "torch.Tensor"]:
    """Indices (better, worse), each (P,), of every derived pair in the batch.

    Sorted by (better, worse) so the order is deterministic.
    """
    import torch

    group, rank, scores = batch.group, batch.rank, batch.scores
    same = group[:, None] == group[None, :]                     # (N, N)
    ranked = (rank >= 0)[:, None] & (rank >= 0)[None, :]
    scored = ~torch.isnan(scores)
    both_scored = scored[:, None] & scored[None, :]
    by_score = scores[:, None] > scores[None, :]
    by_position = rank[:, None] < rank[None, :]
    better = torch.where(both_scored, by_score, by_position)
    mask = same & ranked & better
    hi, lo = mask.nonzero(as_tuple=True)
    return hi, lo


def ordered_lists(batch: "SequenceBatch") -> tuple["torch.Tensor", "torch.Tensor"]:
    """The ranked responses of each record as a padded (G, K) index matrix, best first.

    Returns (index, valid): index[g, k] is the sequence at rank k of the g-th record
    present in the batch (records are taken in order of `group`), valid marks real
    entries (records may have different K). The reference (rank -1) is left out.
    """
    import torch

    rows = []
    for g in torch.unique(batch.group).tolist():               # sorted
        members = ((batch.group == g) & (batch.rank >= 0)).nonzero(as_tuple=True)[0]
        if len(members):
            rows.append(members[torch.argsort(batch.rank[members])])
    k_max = max((len(r) for r in rows), default=0)
    index = torch.zeros(len(rows), k_max, dtype=torch.long, device=batch.rank.device)
    valid = torch.zeros(len(rows), k_max, dtype=torch.bool, device=batch.rank.device)
    for row, members in enumerate(rows):
        index[row, : len(members)] = members
        valid[row, : len(members)] = True
    return index, valid


def position_pairs(index: "torch.Tensor", valid: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """Indices (earlier, later), each (P,), of every pair j < k of positions within each
    row of `ordered_lists`: the pairs of an *order*, whatever the scores say."""
    import torch

    k = index.shape[1]
    earlier = torch.arange(k)[:, None] < torch.arange(k)[None, :]              # (K, K): j < k
    both = valid[:, :, None] & valid[:, None, :] & earlier.to(valid.device)     # (G, K, K)
    row, j, col = both.nonzero(as_tuple=True)
    return index[row, j], index[row, col]


def mean_token_logps(batch: "SequenceBatch") -> "torch.Tensor":
    """(N,) length-normalised log-probs v = log p(y|x) / |y| (0 for empty sequences)."""
    return batch.seq_logps / batch.seq_lengths.clamp(min=1).to(batch.seq_logps.dtype)


def nll_target(batch: "SequenceBatch", index: "torch.Tensor") -> "torch.Tensor":
    """(G,) the NLL target of each record row of `ordered_lists`: its `reference`
    (rank -1) when the batch holds one, else its best response (rank 0)."""
    import torch

    out = index[:, 0].clone()
    for row in range(index.shape[0]):
        g = batch.group[index[row, 0]]
        ref = ((batch.group == g) & (batch.rank == -1)).nonzero(as_tuple=True)[0]
        if len(ref):
            out[row] = ref[0]
    return out


def mean_token_nll(batch: "SequenceBatch", seq: "torch.Tensor") -> "torch.Tensor":
    """Per-token mean negative log-likelihood of the sequences `seq`, shape like `seq`."""
    return -mean_token_logps(batch)[seq]


def ranking_accuracy_sum(values: "torch.Tensor", group: "torch.Tensor", hi: "torch.Tensor",
                         lo: "torch.Tensor") -> float:
    """Sum over records of the fraction of their pairs (hi better than lo) for which
    `values` (N,) is strictly higher on the better response; the engine divides by
    the record count, giving the mean per-record ranking accuracy."""
    import torch

    correct = (values[hi] > values[lo]).detach().float()
    total = 0.0
    for g in torch.unique(group[hi]).tolist():
        total += float(correct[group[hi] == g].mean())
    return total
