"""Log-probabilities of given text under a local causal LM (likelihood benchmarks, ranking).

Tokenization boundary (lm-evaluation-harness style): trailing whitespace of the context
moves to the continuation (`align_boundary`), then the context and context+continuation
are encoded with the tokenizer's defaults, and the continuation tokens are the suffix of
the whole encoding after the context's token count. That scores the continuation as
the model would see it in running text, even where BPE would merge across the boundary.
An empty context is conditioned on a single BOS token (EOS if there is no BOS). If BPE
merges the whole continuation into the context's last token, the continuation is
encoded on its own instead (the HTTP path then scores the merged token: a rare edge case
where the two can differ).

`prompt_logprobs` serves `/v1/completions` with `echo=True`: the log-prob of every prompt
token given the ones before it (the first is None), with character offsets, as OpenAI's
legacy completions API returns them; the HTTP client picks the continuation tokens by
offset, which matches the suffix rule whenever the context's tokens are a prefix of the
whole encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from drover.llm.types import Score


def align_boundary(context: str, continuation: str) -> tuple[str, str]:
    """Move the context's trailing whitespace to the continuation ("Answer: ", "Paris")."""
    stripped = context.rstrip()
    if len(stripped) == len(context):
        return context, continuation
    return stripped, context[len(stripped):] + continuation


def _prefix_token(tokenizer: Any) -> int:
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    raise ValueError("the tokenizer has no BOS/EOS/pad token to condition an empty context on")


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) by the suffix rule in the module docstring."""
    context, continuation = align_boundary(context, continuation)
    ctx = list(tokenizer(context)["input_ids"]) if context else []
    whole = list(tokenizer(context + continuation)["input_ids"])
    if not ctx:
        prefix = _prefix_token(tokenizer)
        ctx = [prefix]
        if not whole or whole[0] != prefix:
            whole = [prefix, *whole]
    cont = whole[len(ctx):]
    if not cont and continuation:
        # BPE merged the continuation into the context's last token ("Hello wor" + "ld"):
        # score its own tokens after the context rather than nothing.
        cont = list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
    return ctx, cont


def score_pairs(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 8,
                max_length: int | None = None) -> list[Score]:
    """One Score per (context, continuation), computed in length-sorted, right-padded batches."""
    from drover.infer.generation import max_positions

    limit = max_positions(model, tokenizer, max_length)
    encoded = []
    for context, continuation in pairs:
        ctx, cont = encode_pair(tokenizer, context, continuation)
        ids = (ctx + cont)[-(limit + 1):]  # keep the continuation; drop the oldest context tokens
        encoded.append((ids, len(cont)))
    results: list[Score | None] = [None] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: -len(encoded[i][0]))
    for start in range(0, len(order), batch_size):
        part = order[start:start + batch_size]
        for i, score in zip(part, _score_batch(model, tokenizer, [encoded[i] for i in part])):
            results[i] = score
    return [r for r in results if r is not None]


def _score_batch(model: Any, tokenizer: Any, batch: list[tuple[list[int], int]]) -> list[Score]:
    import torch

    device = next(model.parameters()).device
    width = max(len(ids) - 1 for ids, _ in batch)
    scores: list[Score] = []
    if width <= 0:
        return [Score([], [], 0.0, True) for _ in batch]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    inputs = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for b, (ids, _) in enumerate(batch):
        inputs[b, :len(ids) - 1] = torch.tensor(ids[:-1])
        mask[b, :len(ids) - 1] = 1
    with torch.inference_mode():
        logits = model(input_ids=inputs.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
    for b, (ids, n_cont) in enumerate(batch):
        if n_cont == 0:
            scores.append(Score([], [], 0.0, True))
            continue
        targets = torch.tensor(ids[-n_cont:], device=logp.device)
        rows = logp[b, len(ids) - 1 - n_cont:len(ids) - 1]  # position t predicts token t+1
        values = rows.gather(1, targets[:, None]).squeeze(1)
        greedy = bool((rows.argmax(-1) == targets).all())
        token_logprobs = values.tolist()
        scores.append(Score(token_logprobs=token_logprobs, tokens=[tokenizer.decode([t]) for t in ids[-n_cont:]],
                            total=float(sum(token_logprobs)), greedy=greedy))
    return scores


@dataclass
class PromptLogprobs:
    """OpenAI legacy `logprobs` of a prompt: one entry per token, the first has no log-prob."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


def prompt_logprobs(model: Any, tokenizer: Any, texts: Sequence[str], top_k: int = 1,
                    batch_size: int = 8) -> list[PromptLogprobs]:
    """Log-prob of every prompt token given its prefix (for `echo=True` requests)."""
    import torch

    device = next(model.parameters()).device
    encodings = []
    for text in texts:
        enc = tokenizer(text, return_offsets_mapping=True)
        encodings.append((list(enc["input_ids"]), [int(s) for s, _ in enc["offset_mapping"]]))
    results: list[PromptLogprobs | None] = [None] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: -len(encodings[i][0]))
    for start in range(0, len(order), batch_size):
        part = order[start:start + batch_size]
        width = max(1, max(len(encodings[i][0]) for i in part))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        inputs = torch.full((len(part), width), pad, dtype=torch.long)
        mask = torch.zeros((len(part), width), dtype=torch.long)
        for b, i in enumerate(part):
            ids = encodings[i][0]
            if ids:
                inputs[b, :len(ids)] = torch.tensor(ids)
                mask[b, :len(ids)] = 1
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=inputs.to(device), attention_mask=mask.to(device)).logits.float(), -1)
        for b, i in enumerate(part):
            ids, offsets = encodings[i]
            values: list[float | None] = [None]
            tops: list[dict[str, float] | None] = [None]
            for t in range(1, len(ids)):
                row = logp[b, t - 1]
                values.append(float(row[ids[t]]))
                if top_k > 0:
                    v, idx = row.topk(top_k)
                    top: dict[str, float] = {}
                    for val, tok in zip(v.tolist(), idx.tolist()):
                        top.setdefault(tokenizer.decode([tok]), float(val))
                    tops.append(top)
                else:
                    tops.append(None)
            results[i] = PromptLogprobs(tokens=[tokenizer.decode([t]) for t in ids], token_logprobs=values[:len(ids)],
                                        top_logprobs=tops[:len(ids)], text_offset=offsets)
    return [r for r in results if r is not None]
