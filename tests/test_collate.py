"""Padded and packed batches: layout, and packed == padded per-example log-probs on the tiny model."""

from __future__ import annotations

import pytest
import torch

from drover.collate import PackingCollator, PaddedCollator, group_by_length
from drover.errors import ConfigError
from drover.tokenization import IGNORE_INDEX, EncodedExample, encode_conversation

A = EncodedExample([1, 2, 3], [-100, 2, 3])
B = EncodedExample([4, 5], [4, 5])  # first label must still be dropped: nothing predicts it
C = {"input_ids": [6, 7, 8, 9], "labels": [-100, -100, 8, 9]}


def test_padded_layout():
    batch = PaddedCollator(pad_token_id=0, pad_to_multiple_of=8)([A, B, C])
    assert set(batch) == {"input_ids", "labels", "position_ids", "seq_index", "attention_mask"}
    assert all(t.shape == (3, 8) and t.dtype == torch.long for t in batch.values())
    assert batch["input_ids"][1].tolist() == [4, 5, 0, 0, 0, 0, 0, 0]
    assert batch["labels"][1].tolist() == [-100, 5] + [-100] * 6
    assert batch["attention_mask"][2].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert batch["seq_index"][2].tolist() == [2, 2, 2, 2, -1, -1, -1, -1]
    assert batch["position_ids"][0, :3].tolist() == [0, 1, 2]


def test_packed_layout():
    batch = PackingCollator(max_tokens=16)([A, B, C])
    assert "attention_mask" not in batch
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    assert batch["seq_index"].tolist() == [[0, 0, 0, 1, 1, 2, 2, 2, 2]]
    assert batch["labels"].tolist() == [[-100, 2, 3, -100, 5, -100, -100, 8, 9]]


def test_packing_starts_new_rows_and_pads():
    batch = PackingCollator(max_tokens=5, pad_token_id=0)([A, B, C])
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]]
    assert batch["seq_index"].tolist() == [[0, 0, 0, 1, 1], [2, 2, 2, 2, -1]]
    assert batch["labels"][1, 4].item() == IGNORE_INDEX
    assert batch["position_ids"][1].tolist() == [0, 1, 2, 3, 0]  # padding is its own block
    with pytest.raises(ConfigError, match="max_tokens=3"):
        PackingCollator(max_tokens=3)([C])


def test_group_by_length():
    lengths = [5, 50, 7, 48, 6, 51, 8, 49, 100, 3] * 5
    batches = group_by_length(lengths, 5, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches == group_by_length(lengths, 5, seed=1)
    assert batches != group_by_length(lengths, 5, seed=2)
    grouped_pad = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    naive_pad = sum(5 * max(lengths[i:i + 5]) for i in range(0, len(lengths), 5))
    assert grouped_pad < naive_pad
    by_tokens = group_by_length(lengths, 200, seed=0, by_tokens=True)
    assert sorted(i for b in by_tokens for i in b) == list(range(len(lengths)))
    assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 200 for b in by_tokens)


def _per_example_logprobs(model, batch, n):
    """Sum of log p(label) per example, located with seq_index (what the engine does)."""
    kwargs = {"attention_mask": batch["attention_mask"]} if "attention_mask" in batch else {}
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False,
                       **kwargs).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    labels, seq = batch["labels"][:, 1:], batch["seq_index"][:, 1:]
    mask = labels != IGNORE_INDEX
    token_logp = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    return torch.stack([token_logp[seq == i].sum() for i in range(n)]), mask.sum()


def test_packed_and_padded_give_the_same_log_probs(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    chats = [[{"role": "user", "content": "Hi " * k}, {"role": "assistant", "content": "Hello there " * (k + 1)}]
             for k in (1, 6, 2, 4)]
    examples = [encode_conversation(tiny_tokenizer, c) for c in chats]
    padded, n_padded = _per_example_logprobs(model, PaddedCollator(tiny_tokenizer.pad_token_id)(examples), 4)
    packed, n_packed = _per_example_logprobs(model, PackingCollator(max_tokens=4096)(examples), 4)
    assert n_padded == n_packed == sum(e.num_trained for e in examples)
    assert torch.allclose(padded, packed, atol=1e-4), (padded, packed)
    # and each equals the example run alone
    alone = torch.stack([_per_example_logprobs(model, PaddedCollator(0)([e]), 1)[0][0] for e in examples])
    assert torch.allclose(alone, packed, atol=1e-4)
