"""Log-probabilities of given text under a local causal LM (likelihood benchmarks, ranking).

Tokenization boundary (lm-evaluation-harness style): trailing whitespace of the context
moves to the continuation (`align_boundary`), then the context and context+continuation
are encoded with `drover.tokenization.encode_rendered` (training's BOS rule: one BOS,
even when a `--chat-format model` prompt already starts with it), and the continuation
tokens are the suffix of the whole encoding after the context's token count (so the
continuation never gets a BOS of its own). That scores the continuation as
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

Shared contexts: requests with the same context tokens (MMLU's " A".." D", TruthfulQA's
answers) run the context once. Single-token continuations are read from the context's
last-position log-softmax; multi-token ones run on a copy of the context's KV cache. The
tokens scored are exactly those of the per-pair path, so results agree to float tolerance.
Merged continuations, empty ones and ones whose sequence would be truncated keep the
per-pair path (their token sequence is not "context + suffix" or not shared).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from drover.completions import Score
from drover.tokenization import encode_rendered, encode_rendered_offsets


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
    ctx, cont, _ = _encode(tokenizer, context, continuation)
    return ctx, cont


def _encode(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int], bool]:
    """`encode_pair` plus whether the continuation merged into the context (encoded on its own)."""
    context, continuation = align_boundary(context, continuation)
    ctx = encode_rendered(tokenizer, context) if context else []
    whole = encode_rendered(tokenizer, context + continuation)
    if not ctx:
        prefix = _prefix_token(tokenizer)
        ctx = [prefix]
        if not whole or whole[0] != prefix:
            whole = [prefix, *whole]
    cont = whole[len(ctx):]
    if not cont and continuation:
        # BPE merged the continuation into the context's last token ("Hello wor" + "ld"):
        # score its own tokens after the context rather than nothing.
        return ctx, list(tokenizer(continuation, add_special_tokens=False)["input_ids"]), True
    return ctx, cont, False


def score_pairs(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 8,
                max_length: int | None = None, share_context: bool = True) -> list[Score]:
    """One Score per (context, continuation), in input order; shared contexts run once."""
    from drover.local.decode import max_positions

    limit = max_positions(model, tokenizer, max_length)
    encoded = [_encode(tokenizer, context, continuation) for context, continuation in pairs]
    results: list[Score | None] = [None] * len(pairs)
    groups: dict[tuple[int, ...], list[int]] = {}
    solo: list[int] = []
    for i, (ctx, cont, merged) in enumerate(encoded):
        if share_context and cont and not merged and len(ctx) + len(cont) <= limit + 1:
            groups.setdefault(tuple(ctx), []).append(i)
        else:
            solo.append(i)
    last_only: list[tuple[list[int], list[int]]] = []  # (context ids, request indices)
    for ctx_key, members in groups.items():
        if len(members) == 1:
            solo.extend(members)
        elif all(len(encoded[i][1]) == 1 for i in members):
            last_only.append((list(ctx_key), members))
        else:
            shared = _score_shared(model, tokenizer, list(ctx_key), members, encoded, batch_size)
            if shared is None:  # the model keeps no repeatable KV cache
                solo.extend(members)
            for i, score in shared or []:
                results[i] = score
    last_only.sort(key=lambda group: -len(group[0]))
    for start in range(0, len(last_only), batch_size):
        part = last_only[start:start + batch_size]
        for (ctx, members), row in zip(part, _last_logprobs(model, tokenizer, [ctx for ctx, _ in part])):
            for i in members:
                results[i] = _make_score(tokenizer, encoded[i][1], row[None, :])
    # keep the continuation; drop the oldest context tokens
    plain = {i: (encoded[i][0] + encoded[i][1])[-(limit + 1):] for i in solo}
    order = sorted(solo, key=lambda i: -len(plain[i]))
    for start in range(0, len(order), batch_size):
        part = order[start:start + batch_size]
        batch = [(plain[i], len(encoded[i][1])) for i in part]
        for i, score in zip(part, _score_batch(model, tokenizer, batch)):
            results[i] = score
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def _make_score(tokenizer: Any, targets: list[int], rows: Any) -> Score:
    """A Score from the log-softmax rows predicting `targets` (row k predicts targets[k])."""
    import torch

    target = torch.tensor(targets, device=rows.device)
    values = rows.gather(1, target[:, None]).squeeze(1)
    token_logprobs = values.tolist()
    return Score(token_logprobs=token_logprobs, tokens=[tokenizer.decode([t]) for t in targets],
                 total=float(sum(token_logprobs)), greedy=bool((rows.argmax(-1) == target).all()))


def _last_logprobs(model: Any, tokenizer: Any, contexts: list[list[int]]) -> list[Any]:
    """The log-softmax at each context's last position (right-padded batch, one pass)."""
    import torch

    device = next(model.parameters()).device
    width = max(len(ctx) for ctx in contexts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    inputs = torch.full((len(contexts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(contexts), width), dtype=torch.long)
    for b, ctx in enumerate(contexts):
        inputs[b, :len(ctx)] = torch.tensor(ctx)
        mask[b, :len(ctx)] = 1
    last = torch.tensor([len(ctx) - 1 for ctx in contexts])
    with torch.inference_mode():
        logits = model(input_ids=inputs.to(device), attention_mask=mask.to(device)).logits
        rows = logits[torch.arange(len(contexts)), last.to(logits.device)].float()
        return list(torch.log_softmax(rows, dim=-1))


def _score_shared(model: Any, tokenizer: Any, ctx: list[int], members: list[int],
                  encoded: list[tuple[list[int], list[int], bool]], batch_size: int) -> list[tuple[int, Score]] | None:
    """Score continuations of one context: the context once (KV cache), then the continuations on copies."""
    import copy

    import torch

    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ctx], device=device), use_cache=True)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        cache = out.past_key_values
        if cache is None or not hasattr(cache, "batch_repeat_interleave"):
            return None
        scores = [(i, _make_score(tokenizer, encoded[i][1], first[None, :]))
                  for i in members if len(encoded[i][1]) == 1]
        multi = sorted((i for i in members if len(encoded[i][1]) > 1), key=lambda i: -len(encoded[i][1]))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        for start in range(0, len(multi), batch_size):
            part = multi[start:start + batch_size]
            width = max(len(encoded[i][1]) - 1 for i in part)
            inputs = torch.full((len(part), width), pad, dtype=torch.long)
            mask = torch.zeros((len(part), len(ctx) + width), dtype=torch.long)
            mask[:, :len(ctx)] = 1
            for b, i in enumerate(part):
                cont = encoded[i][1]
                inputs[b, :len(cont) - 1] = torch.tensor(cont[:-1])
                mask[b, len(ctx):len(ctx) + len(cont) - 1] = 1
            expanded = copy.deepcopy(cache)
            expanded.batch_repeat_interleave(len(part))
            logits = model(input_ids=inputs.to(device), attention_mask=mask.to(device),
                           past_key_values=expanded, use_cache=True).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            for b, i in enumerate(part):
                n = len(encoded[i][1])
                rows = torch.cat([first[None, :], logp[b, :n - 1]])
                scores.append((i, _make_score(tokenizer, encoded[i][1], rows)))
    return scores


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
        rows = logp[b, len(ids) - 1 - n_cont:len(ids) - 1]  # position t predicts token t+1
        scores.append(_make_score(tokenizer, ids[-n_cont:], rows))
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
    encodings = []
    for text in texts:
        ids, offsets = encode_rendered_offsets(tokenizer, text)
        encodings.append((ids, [int(s) for s, _ in offsets]))
    return encoded_prompt_logprobs(model, tokenizer, encodings, top_k=top_k, batch_size=batch_size)


def token_offsets(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    """Character offsets of given token ids in the concatenation of their decoded strings
    (the text a token-id prompt echoes as)."""
    offsets, position = [], 0
    for token in ids:
        offsets.append(position)
        position += len(tokenizer.decode([token]))
    return offsets


def encoded_prompt_logprobs(model: Any, tokenizer: Any, encodings: Sequence[tuple[list[int], list[int]]],
                            top_k: int = 1, batch_size: int = 8) -> list[PromptLogprobs]:
    """`prompt_logprobs` of prompts given as (token ids, character offsets), e.g. token-id prompts."""
    import torch

    device = next(model.parameters()).device
    results: list[PromptLogprobs | None] = [None] * len(encodings)
    order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i][0]))
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
