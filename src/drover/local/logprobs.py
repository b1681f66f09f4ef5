"""Per-token log-probs of the target tokens, without materialising (B, L, V) logits.

A causal LM's last step is `lm_head(hidden)` over every position, then a log-softmax:
(B, L, V) floats, the largest tensor of training (8 x 2048 x 32k x 4 bytes = 2 GiB).
But a loss only reads the log-prob of *one* token per *target* position, and with
assistant-only labels about half the positions are not targets at all. So we gather the
hidden states that predict a target first (M rows), and run the head + log-softmax on
those rows in chunks ("selective log-softmax"; TRL and torchtune do the same). When
there is more than one chunk, each chunk is recomputed in the backward pass instead of
keeping its (chunk, V) logits alive.

Shapes: B rows of length L (padded or packed), N sequences, M target tokens, H hidden,
V vocabulary, T = most target tokens of any sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100


@dataclass
class TargetIndex:
    """Where the targets of a collated batch are, as flat indices into the (B*L) positions.

    src:      (M,) position whose hidden state predicts the target (the one before it)
    ids:      (M,) target token ids
    seq:      (M,) sequence (example) index of each target, 0..N-1
    slot:     (M,) index of the target among its sequence's targets, 0..T-1
    last:     (N,) position of each sequence's last target token (scalar heads read it)
    lengths:  (N,) target tokens per sequence
    """

    src: "torch.Tensor"
    ids: "torch.Tensor"
    seq: "torch.Tensor"
    slot: "torch.Tensor"
    last: "torch.Tensor"
    lengths: "torch.Tensor"

    def to(self, device: "torch.device") -> "TargetIndex":
        return TargetIndex(*(getattr(self, f).to(device) for f in ("src", "ids", "seq", "slot", "last", "lengths")))


def target_index(labels: "torch.Tensor", seq_index: "torch.Tensor", num_sequences: int) -> TargetIndex:
    """Locate targets in collated `labels` (B, L; unshifted, -100 off-target) and `seq_index`
    (B, L; example index per token, -1 on padding). Works for padded and packed rows alike:
    a target's predictor must belong to the same example (its first token never is a target)."""
    import torch

    B, L = labels.shape
    flat_labels = labels.reshape(-1)
    flat_seq = seq_index.reshape(-1)
    pos = torch.nonzero(flat_labels != IGNORE_INDEX, as_tuple=False).squeeze(-1)  # (M,)
    if pos.numel() and bool(((pos % L) == 0).any()):
        raise ValueError("a target token at the start of a row has no position predicting it")
    seq = flat_seq[pos]
    if pos.numel() and bool((flat_seq[pos - 1] != seq).any()):
        raise ValueError("a sequence's first token is labelled as a target: nothing predicts it")
    lengths = torch.bincount(seq, minlength=num_sequences)
    # slot = rank of the target within its sequence (targets come in position order)
    starts = torch.cumsum(lengths, 0) - lengths
    order = torch.argsort(seq, stable=True)
    slot = torch.empty_like(seq)
    slot[order] = torch.arange(pos.numel()) - starts[seq[order]]
    last = torch.zeros(num_sequences, dtype=torch.long)
    last.scatter_reduce_(0, seq, pos, reduce="amax", include_self=False)
    return TargetIndex(src=pos - 1, ids=flat_labels[pos], seq=seq, slot=slot, last=last, lengths=lengths)


def selective_log_softmax(head: "torch.nn.Module", hidden: "torch.Tensor", ids: "torch.Tensor",
                          chunk: int = 2048, temperature: float = 1.0) -> "torch.Tensor":
    """log softmax(head(hidden) / temperature)[ids] for `hidden` (M, H) and `ids` (M,) -> (M,)
    float32. A temperature other than 1 gives the log-probs of the distribution a sampler drew
    from at that temperature (what online RL's ratios and KL are taken under, as TRL does)."""
    import torch
    from torch.utils.checkpoint import checkpoint

    def one(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logits = head(h).float()                                    # (c, V)
        if temperature != 1.0:
            logits = logits / temperature
        return logits.gather(-1, t.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)

    if hidden.shape[0] <= chunk:
        return one(hidden, ids)
    parts = [checkpoint(one, h, t, use_reentrant=False) if torch.is_grad_enabled() else one(h, t)
             for h, t in zip(hidden.split(chunk), ids.split(chunk))]
    return torch.cat(parts)


def per_sequence(values: "torch.Tensor", index: TargetIndex) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Scatter per-target `values` (M,) into (N, T) with a (N, T) bool mask of real targets."""
    import torch

    n = index.lengths.shape[0]
    t = int(index.lengths.max()) if n else 0
    out = values.new_zeros((n, t))
    mask = torch.zeros((n, t), dtype=torch.bool, device=values.device)
    out = out.index_put((index.seq, index.slot), values)
    mask[index.seq, index.slot] = True
    return out, mask
