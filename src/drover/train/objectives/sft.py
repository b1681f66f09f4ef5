"""Supervised fine-tuning: masked negative log-likelihood of the target (assistant) tokens.

Protocol: allenai/open-instruct `open_instruct/finetune.py`: labels only on assistant
content and its EOS (`encode_with_messages_format`, Tülu-1-era commit cd06c6fb0); the
normalisation is its later `--reduce_loss sum` (January 2024) over the whole accumulated
batch. Deliberate difference: the Tülu-1 script used the model's per-micro-batch mean
(`outputs.loss`), which weighs tokens of short and long micro-batches differently.

loss = - sum_{target tokens} log p(token) / number of target tokens in the whole
(accumulated, global) batch — each token weighs the same however the batch is split,
as in open-instruct's `sum` loss reduction.
"""

from __future__ import annotations

from typing import Any

from drover.train.objective import ObjectiveOutput, ObjectiveSpec, SequenceBatch


def sft_loss(batch: SequenceBatch, params: Any = None) -> ObjectiveOutput:
    nll = -(batch.token_logps * batch.token_mask).sum()
    tokens = batch.token_mask.sum()
    return ObjectiveOutput(loss_sum=nll, units=tokens, metrics={})


SPEC = ObjectiveSpec(name="sft", fn=sft_loss, data="conversation",
                     paper="masked NLL on assistant tokens (Wang et al. 2023, Tülu; arXiv:2306.04751)")
