"""Batched generation with a local Hugging Face causal LM (the `hf` backend and `drover serve`).

One decoding loop, written out rather than delegated to `model.generate`, because it
needs three things `generate` does not give together:

* reproducible sampling per row: each sample draws from its own `torch.Generator`,
  seeded from (request, sample index), so a sample does not depend on which other
  requests shared its batch or on the batch size;
* per-row decoding parameters (temperature, top_p, max_tokens, stop strings) in one batch;
* per-token log-probs and top alternatives in the OpenAI shape.

Prompts are left-padded (so every row's next token is at the last position) and rows
are sorted by prompt length before batching, so little compute goes to padding.
Log-probs are those of the model's own distribution (temperature 1, no top_p, no
constraint mask), as in OpenAI's and vLLM's APIs. A row with a `Constraint` draws only
tokens its grammar allows (`drover.infer.constrained`); rows without one are untouched.
`on_token` (streaming) hears every token of a row as soon as it is drawn.

Stop strings truncate the text at the first occurrence (finish_reason "stop", like an
EOS token, or a constrained output whose grammar admits nothing more); hitting
max_tokens gives "length".
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from drover.llm.types import Choice, Constraint, TokenLogprob

# on_token(sample index, token id, its log-prob entry or None): called on the worker thread;
# returning False ends that row at once (finish_reason "abort": the stream's client left).
TokenCallback = Callable[[int, int, "TokenLogprob | None"], "bool | None"]


@dataclass
class GenerationItem:
    """One prompt (already tokenized) and how to decode it."""

    prompt_ids: list[int]
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    n: int = 1
    seeds: list[int] = field(default_factory=list)  # one per sample; derived from the request if empty
    logprobs: bool = False
    top_logprobs: int = 0
    constraint: Constraint | None = None
    on_token: TokenCallback | None = None


@dataclass
class GenerationResult:
    choices: list[Choice]
    prompt_tokens: int
    completion_tokens: int


def sample_seed(*parts: object) -> int:
    """A 63-bit seed from any identifying parts (e.g. a request fingerprint and sample index)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


@dataclass
class _Row:
    item: int
    sample: int
    ids: list[int]
    seed: int
    out: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish: str | None = None
    text: str = ""
    cut: bool = False  # text already truncated at a stop string


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(tokenizer, "eos_token_id", None),
                   getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(x) for x in source)
    return ids


def max_positions(model: Any, tokenizer: Any, limit: int | None = None) -> int:
    candidates = [limit, getattr(model.config, "max_position_embeddings", None)]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and tok_max < 10**8:
        candidates.append(tok_max)
    values = [c for c in candidates if isinstance(c, int) and c > 0]
    return min(values) if values else 4096


def generate(model: Any, tokenizer: Any, items: Sequence[GenerationItem], batch_size: int = 8,
             max_length: int | None = None) -> Iterator[tuple[int, GenerationResult]]:
    """Yield (index into items, result) as soon as all of an item's samples are done."""
    rows: list[_Row] = []
    for i, item in enumerate(items):
        for j in range(max(1, item.n)):
            seed = item.seeds[j] if j < len(item.seeds) else sample_seed(item.prompt_ids, j)
            rows.append(_Row(i, j, list(item.prompt_ids), seed))
    limit = max_positions(model, tokenizer, max_length)
    order = sorted(range(len(rows)), key=lambda r: -len(rows[r].ids))
    remaining = [max(1, it.n) for it in items]
    finished: dict[int, list[_Row]] = {}
    stops = eos_ids(model, tokenizer)
    for start in range(0, len(order), batch_size):
        batch = [rows[r] for r in order[start:start + batch_size]]
        _decode_batch(model, tokenizer, batch, [items[r.item] for r in batch], stops, limit)
        for row in batch:
            finished.setdefault(row.item, []).append(row)
            remaining[row.item] -= 1
            if remaining[row.item] == 0:
                done = sorted(finished.pop(row.item), key=lambda r: r.sample)
                item = items[row.item]
                choices = [Choice(text=r.text, finish_reason=r.finish,
                                  logprobs=r.logprobs if item.logprobs else None) for r in done]
                yield row.item, GenerationResult(choices, len(item.prompt_ids), sum(len(r.out) for r in done))


def _decode_batch(model: Any, tokenizer: Any, batch: list[_Row], items: list[GenerationItem], stops: set[int],
                  limit: int) -> None:
    import torch

    device = next(model.parameters()).device
    max_new = max(it.max_tokens for it in items)
    # Left-truncate prompts that would not fit with their completion budget.
    prompts = []
    for row, item in zip(batch, items):
        keep = max(1, limit - item.max_tokens)
        prompts.append(row.ids[-keep:])
    width = max(len(p) for p in prompts)
    max_new = max(0, min(max_new, limit - width)) if width < limit else 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[b, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    generators = [torch.Generator().manual_seed(r.seed) for r in batch]
    temps = [float(it.temperature or 0.0) for it in items]
    active = [it.max_tokens > 0 for it in items]
    matchers = _matchers(model, tokenizer, items, stops)
    for b, it in enumerate(items):
        if it.max_tokens <= 0:
            batch[b].finish = "length"
    if max_new == 0 or not any(active):
        for b, row in enumerate(batch):
            row.finish = row.finish or "length"
        return
    with torch.inference_mode():
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        past = out.past_key_values
        logits = out.logits[:, -1, :].float()
        last_pos = positions[:, -1:]
        for step in range(max_new):
            logp = torch.log_softmax(logits, dim=-1)
            next_ids = logits.argmax(-1)
            for b, row in enumerate(batch):
                if not active[b]:
                    continue
                row_logits = logits[b]
                if matchers[b] is not None:
                    allowed = matchers[b].allowed().to(row_logits.device)
                    if not bool(allowed.any()):  # nothing can follow: the row ends here
                        row.finish, active[b] = "stop", False
                        continue
                    row_logits = row_logits.masked_fill(~allowed, float("-inf"))
                    if temps[b] <= 0:
                        next_ids[b] = row_logits.argmax()
                if temps[b] > 0:
                    next_ids[b] = _sample(row_logits, temps[b], items[b].top_p, generators[b])
            next_cpu = next_ids.tolist()
            for b, row in enumerate(batch):
                if not active[b]:
                    continue
                token = next_cpu[b]
                if token in stops:
                    row.finish = "stop"
                    active[b] = False
                    continue
                row.out.append(token)
                if items[b].logprobs:
                    row.logprobs.append(_token_logprob(tokenizer, logp[b], token, items[b].top_logprobs))
                if items[b].on_token is not None and items[b].on_token(
                        row.sample, token, row.logprobs[-1] if items[b].logprobs else None) is False:
                    row.finish, active[b] = "abort", False
                elif items[b].stop and _hit_stop(tokenizer, row, items[b].stop):
                    active[b] = False
                elif matchers[b] is not None and matchers[b].advance(token):
                    row.finish = "stop"  # the grammar is complete and admits nothing more
                    active[b] = False
                elif len(row.out) >= items[b].max_tokens:
                    row.finish = "length"
                    active[b] = False
            if not any(active):
                break
            mask = torch.cat([mask, torch.ones((len(batch), 1), dtype=mask.dtype, device=device)], dim=1)
            last_pos = last_pos + 1
            out = model(input_ids=next_ids[:, None].to(device), attention_mask=mask, position_ids=last_pos,
                        past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[:, -1, :].float()
    for row in batch:
        if row.finish is None:
            row.finish = "length"
        if not row.cut:
            row.text = tokenizer.decode(row.out, skip_special_tokens=True)


def _matchers(model: Any, tokenizer: Any, items: list[GenerationItem], stops: set[int]) -> list[Any]:
    """One grammar matcher per constrained row (None for the others)."""
    if not any(it.constraint is not None for it in items):
        return [None] * len(items)
    from drover.infer.constrained import RowMatcher

    vocab = logits_width(model)
    return [None if it.constraint is None else RowMatcher(it.constraint, tokenizer, vocab, stops) for it in items]


def logits_width(model: Any) -> int:
    """The size of the model's output vocabulary (may exceed the tokenizer's own)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.vocab_size)


def _sample(logits: Any, temperature: float, top_p: float, generator: Any) -> int:
    import torch

    probs = torch.softmax(logits.cpu() / temperature, dim=-1)
    if top_p is not None and 0 < top_p < 1:
        sorted_probs, sorted_idx = probs.sort(descending=True)
        cumulative = sorted_probs.cumsum(-1)
        drop = cumulative - sorted_probs > top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(0, sorted_idx, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def _token_logprob(tokenizer: Any, logp: Any, token: int, top_k: int) -> TokenLogprob:
    top = None
    if top_k and top_k > 0:
        values, indices = logp.topk(top_k)
        top = {}
        for v, i in zip(values.tolist(), indices.tolist()):
            top.setdefault(tokenizer.decode([i]), float(v))
    return TokenLogprob(token=tokenizer.decode([token]), logprob=float(logp[token]), top=top)


def _hit_stop(tokenizer: Any, row: _Row, stop: tuple[str, ...]) -> bool:
    """Truncate the row at the first stop string, if one has appeared; True if so."""
    text = tokenizer.decode(row.out, skip_special_tokens=True)
    cuts = [pos for pos in (text.find(s) for s in stop if s) if pos >= 0]
    if not cuts:
        return False
    cut = min(cuts)
    row.text = text[:cut]
    row.finish = "stop"
    row.cut = True
    if row.logprobs:
        # Keep the log-probs of the tokens that start before the cut.
        kept = 0
        for k in range(1, len(row.out) + 1):
            if len(tokenizer.decode(row.out[:k - 1], skip_special_tokens=True)) >= cut:
                break
            kept = k
        row.logprobs = row.logprobs[:kept]
    return True
