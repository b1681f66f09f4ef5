"""Shared-context scoring: requests with the same context run it once, with results equal
(to float tolerance) to scoring every (context, continuation) pair as its own sequence."""

from __future__ import annotations

import pytest

from drover.local.scoring import _encode, score_pairs

FEW_SHOT = "".join(f"Question {k}: which letter is number {k}?\nA. one\nB. two\nC. three\nD. four\nAnswer: B\n\n"
                   for k in range(3))
LETTERS = [" A", " B", " C", " D"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from drover.models import load_model, load_tokenizer

    return load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)


def _assert_same(grouped, plain) -> None:
    assert len(grouped) == len(plain)
    for g, p in zip(grouped, plain):
        assert g.tokens == p.tokens
        assert g.token_logprobs == pytest.approx(p.token_logprobs, abs=1e-5)
        assert g.total == pytest.approx(p.total, abs=1e-5)
        assert g.greedy == p.greedy


def _compare(model, tok, pairs, batch_size=3, max_length=None):
    grouped = score_pairs(model, tok, pairs, batch_size=batch_size, max_length=max_length)
    plain = score_pairs(model, tok, pairs, batch_size=batch_size, max_length=max_length, share_context=False)
    _assert_same(grouped, plain)
    return grouped


class _TokenCounter:
    """Counts the input tokens the model's forward passes see (to prove the context ran once)."""

    def __init__(self, model) -> None:
        self.tokens = 0
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.tokens += int(ids.numel())


def test_single_token_continuations_read_from_one_pass(tiny):
    model, tok = tiny
    pairs = [(f"{FEW_SHOT}Question {q}: pick one.\nAnswer:", letter) for q in range(5) for letter in LETTERS]
    assert all(len(_encode(tok, c, x)[1]) == 1 and not _encode(tok, c, x)[2] for c, x in pairs)
    counter = _TokenCounter(model)
    try:
        grouped = score_pairs(model, tok, pairs, batch_size=4)
        shared_tokens, counter.tokens = counter.tokens, 0
        plain = score_pairs(model, tok, pairs, batch_size=4, share_context=False)
        plain_tokens = counter.tokens
    finally:
        counter.handle.remove()
    _assert_same(grouped, plain)
    assert [s.tokens[0] for s in grouped[:4]] == [tok.decode([_encode(tok, *p)[1][0]]) for p in pairs[:4]]
    assert shared_tokens * 3 <= plain_tokens  # 4 requests per context: the context ran once, not 4 times
    assert len({round(s.total, 6) for s in grouped[:4]}) > 1  # distinct letters got distinct scores


def test_multi_token_continuations_on_a_shared_cache(tiny):
    model, tok = tiny
    contexts = ["The capital of France is", f"{FEW_SHOT}Question 9: name a colour.\nAnswer:"]
    answers = [" Paris", " the city of Paris, of course", " Lyon or maybe Marseille", " blue", " red and green"]
    pairs = [(c, a) for c in contexts for a in answers]
    assert sum(len(_encode(tok, c, a)[1]) > 1 for c, a in pairs) >= 6
    counter = _TokenCounter(model)
    try:
        score_pairs(model, tok, pairs, batch_size=2)
        shared_tokens, counter.tokens = counter.tokens, 0
        score_pairs(model, tok, pairs, batch_size=2, share_context=False)
        plain_tokens = counter.tokens
    finally:
        counter.handle.remove()
    assert shared_tokens * 2 < plain_tokens  # continuations ran on the cached context
    _compare(model, tok, pairs, batch_size=2)
    # batch_size 1 takes the same path with one continuation per cache copy
    _compare(model, tok, pairs[:5], batch_size=1)


def test_mixed_batch_keeps_input_order(tiny):
    model, tok = tiny
    pairs = [
        ("Q: 2+2?\nA:", " 4"),
        ("The capital of France is ", "Paris"),  # trailing space moves to the continuation
        ("Q: 2+2?\nA:", " four, I think"),
        ("", "hello world"),  # empty context: conditioned on BOS
        ("The capital of France is", " Paris"),  # same tokens as the second after alignment
        ("Hello", " there"),  # a group of one
        ("Q: 2+2?\nA:", ""),  # empty continuation
        ("Q: 2+2?\nA:", " 5"),
        ("", "hello"),
    ]
    grouped = _compare(model, tok, pairs, batch_size=2)
    alone = [score_pairs(model, tok, [pair])[0] for pair in pairs]
    _assert_same(grouped, alone)
    assert grouped[6].token_logprobs == [] and grouped[6].total == 0.0
    _assert_same([grouped[1]], [grouped[4]])


def test_merged_continuation_falls_back_to_the_pair_path(tiny):
    model, tok = tiny
    pairs = [("Hello wor", "ld"), ("Hello wor", " and more"), ("Hello wor", "k"), ("Hello wor", "ld peace"),
             ("Answer: th", "e"), ("Answer: th", " cat")]
    merged = [_encode(tok, c, x)[2] for c, x in pairs]
    assert merged[0] and merged[4]  # the documented edge case is exercised
    assert not all(merged)
    _compare(model, tok, pairs, batch_size=4)


def test_truncated_requests_keep_the_pair_path(tiny):
    model, tok = tiny
    pairs = [(FEW_SHOT, letter) for letter in LETTERS] + [(FEW_SHOT, " B, because two is B")]
    limit = len(_encode(tok, *pairs[0])[0])  # contexts + continuation exceed the limit: oldest tokens drop
    grouped = _compare(model, tok, pairs, batch_size=4, max_length=limit)
    full = score_pairs(model, tok, pairs, batch_size=4)
    assert any(abs(g.total - f.total) > 1e-4 for g, f in zip(grouped, full))  # truncation did change the context
