"""Reference-model log-probs, computed once per (data, reference model) and cached on disk.

DPO-style objectives compare the policy with a frozen reference. Keeping the reference in
memory doubles the model footprint and its forward passes cost a third of training, every
epoch. The reference never changes, so (like open-instruct's cached reference log-probs) we
run it once over every sequence before training, store the per-sequence sums in
`<run_dir>/reference/<key>.pt` (key = hash of the tokenized data and the reference
weights), free the model, and reuse the file across epochs and resumes.

`FORWARD_PASSES` counts reference forward passes (tests check it stays at one per batch).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from drover.atomic import atomic_open
from drover.train.batches import Collate
from drover.train.data import Example, examples_hash

FORWARD_PASSES = 0


def _weights_fingerprint(path: str) -> str:
    root = Path(path)
    files = sorted(root.glob("*.safetensors")) + sorted(root.glob("*.bin")) if root.is_dir() else []
    return ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files) or path


def cache_key(examples: list[Example], model_path: str) -> str:
    blob = f"{examples_hash(examples)}|{Path(model_path).resolve() if Path(model_path).exists() else model_path}|"
    blob += _weights_fingerprint(model_path)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@torch.no_grad()
def compute(examples: list[Example], config: Any, collate: Collate, accelerator: Any) -> list[torch.Tensor]:
    """Per-example tensors of per-sequence reference log-prob sums (CPU, float32)."""
    global FORWARD_PASSES
    from drover.train.model import SequenceModel, load_backbone

    model = load_backbone(config.reference_path, False, None, allow_download=config.allow_download)
    scorer = SequenceModel(model, chunk=config.logprob_chunk).to(accelerator.device).eval()
    out: list[torch.Tensor] = []
    size = config.micro_batch_size
    for start in range(0, len(examples), size):
        chunk = examples[start:start + size]
        mb = collate(chunk).to(accelerator.device)
        with accelerator.autocast():
            values = scorer(**mb.model_args())
        FORWARD_PASSES += 1
        sums = torch.zeros(mb.index.lengths.shape[0], device=values.device).index_add_(0, mb.index.seq, values.float())
        sums = sums.cpu()
        offset = 0
        for e in chunk:
            out.append(sums[offset:offset + len(e.sequences)].clone())
            offset += len(e.sequences)
    del scorer, model
    return out


def reference_logps(examples: list[Example], config: Any, collate: Collate, accelerator: Any,
                    cache_dir: Path) -> list[torch.Tensor]:
    """Cached reference log-probs for `examples` (computed on the main process, read by all)."""
    path = cache_dir / f"{cache_key(examples, config.reference_path)}.pt"
    if not path.exists() and accelerator.is_main_process:
        values = compute(examples, config, collate, accelerator)
        with atomic_open(path, "wb") as handle:
            torch.save(values, handle)
    accelerator.wait_for_everyone()
    return torch.load(path, weights_only=True)
