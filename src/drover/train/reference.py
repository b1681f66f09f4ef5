"""Reference-model log-probs, computed once per (data, reference model) and cached on disk.

DPO-style objectives compare the policy with a frozen reference. Keeping the reference in
memory doubles the model footprint and its forward passes cost a third of training, every
epoch. The reference never changes, so (like open-instruct's cached reference log-probs) we
run it once over every sequence before training, store the per-sequence sums in
`<run_dir>/reference/<key>.pt`, free the model, and reuse the file across epochs and resumes.

The key (`cache_key`) is everything the stored numbers depend on: the tokenized data, the
reference model's content (`identity.model_fingerprint`: weights, config, tokenizer, not
its path or file dates), and how they were computed: device type, mixed precision (the
autocast and load dtype), attention kernel, the micro-batches (micro_batch_size, the number
of processes sharing the pass, padding or packing and the pack budget, the pad id) and the
log-softmax chunk (another row split is another matmul shape, which may round differently).
Any of these changed computes the reference again instead of reading another run's values.

`FORWARD_PASSES` counts reference forward passes (tests check it stays at one per batch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from drover.atomic import atomic_open
from drover.identity import PREFIX, digest, model_fingerprint
from drover.train.batches import Collate
from drover.train.data import Example, examples_hash

FORWARD_PASSES = 0


def cache_key(examples: list[Example], config: Any, collate: Collate, accelerator: Any, attention: str) -> str:
    """16 hex of the digest of what `compute` returns depends on (see the module docstring)."""
    settings = {"data": examples_hash(examples), "reference": model_fingerprint(config.reference_path),
                "device": torch.device(accelerator.device).type,
                "mixed_precision": str(accelerator.mixed_precision), "dtype": str(compute_dtype(accelerator)),
                "attention": attention, "processes": accelerator.num_processes,
                "micro_batch_size": config.micro_batch_size, "collate": collate.settings(),
                "logprob_chunk": config.logprob_chunk}
    return digest(settings).removeprefix(PREFIX)[:16]


def compute_dtype(accelerator: Any) -> torch.dtype:
    """The dtype autocast computes in: a frozen model needs no float32 master weights."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(accelerator.mixed_precision), torch.float32)


@torch.no_grad()
def compute(examples: list[Example], config: Any, collate: Collate, accelerator: Any,
            attention: str = "sdpa") -> list[torch.Tensor]:
    """Per-example tensors of per-sequence reference log-prob sums (CPU, float32).

    Each process scores its share (`examples[rank::world]`) with a whole, unsharded copy of
    the reference (no ZeRO-3 partitioning, so no collective calls, and processes may run
    different numbers of passes); the shares are gathered back into the original order."""
    global FORWARD_PASSES
    from accelerate.utils import gather_object

    from drover.local.sequence_model import SequenceModel, load_backbone
    from drover.train.model import unpartitioned_loading

    rank, world = accelerator.process_index, accelerator.num_processes
    with unpartitioned_loading(accelerator):
        model = load_backbone(config.reference_path, False, None, allow_download=config.allow_download,
                              dtype=compute_dtype(accelerator), attention=attention)
    scorer = SequenceModel(model, chunk=config.logprob_chunk).to(accelerator.device).eval()
    mine = list(range(rank, len(examples), world))
    out: list[tuple[int, torch.Tensor]] = []
    size = config.micro_batch_size
    for start in range(0, len(mine), size):
        positions = mine[start:start + size]
        chunk = [examples[i] for i in positions]
        mb = collate(chunk).to(accelerator.device)
        with accelerator.autocast():
            values = scorer(**mb.model_args())
        FORWARD_PASSES += 1
        sums = torch.zeros(mb.index.lengths.shape[0], device=values.device).index_add_(0, mb.index.seq, values.float())
        sums = sums.cpu()
        offset = 0
        for i, e in zip(positions, chunk):
            out.append((i, sums[offset:offset + len(e.sequences)].clone()))
            offset += len(e.sequences)
    del scorer, model
    gathered = sorted(gather_object(out), key=lambda pair: pair[0]) if world > 1 else out
    if [i for i, _ in gathered] != list(range(len(examples))):
        raise RuntimeError(f"reference log-probs: gathered {len(gathered)} of {len(examples)} examples")
    return [values for _, values in gathered]


def reference_logps(examples: list[Example], config: Any, collate: Collate, accelerator: Any,
                    cache_dir: Path, attention: str = "sdpa") -> list[torch.Tensor]:
    """Cached reference log-probs for `examples` (computed by all processes, written by the main one).

    The main process decides whether the cache file is there and, if so, reads it and sends
    the values to the others: every process takes the same branch (the computation is
    collective) even when nodes do not share the run directory's storage."""
    path = cache_dir / f"{cache_key(examples, config, collate, accelerator, attention)}.pt"
    if accelerator.num_processes == 1:
        if path.exists():
            return torch.load(path, weights_only=True)
    else:
        from accelerate.utils import broadcast_object_list

        found = broadcast_object_list([path.exists() if accelerator.is_main_process else None])[0]
        if found:
            loaded = torch.load(path, weights_only=True) if accelerator.is_main_process else None
            return broadcast_object_list([loaded])[0]
    values = compute(examples, config, collate, accelerator, attention)  # every process, or none: it gathers
    if accelerator.is_main_process:
        with atomic_open(path, "wb") as handle:
            torch.save(values, handle)
    accelerator.wait_for_everyone()
    return values
