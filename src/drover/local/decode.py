"""Batched generation with a local Hugging Face causal LM (the `hf` backend and `drover serve`).

One decoding loop, written out rather than delegated to `model.generate`, because it
needs three things `generate` does not give together:

* reproducible sampling per row: each sample draws from its own `torch.Generator`,
  seeded from (request, sample index), so a sample does not depend on which other
  requests shared its batch or on the batch size;
* per-row decoding parameters (temperature, top_p, max_tokens, stop strings) in one batch;
* per-token log-probs and top alternatives in the OpenAI shape.

The loop is a `Decoder`: a running batch of rows over a static KV cache
(`drover.local.kv_slots`: preallocated, one slot per row, a direct decode step for
Llama-family models and the model's own forward for the rest). Prompts are prefilled by the
same step (each as if alone) or the model's own forward (left-padded); rows join between steps
and leave as soon as they finish, so `generate` admits rows longest prompt first and refills
a slot the moment it frees, and `drover serve` lets requests join a running batch. Per step
there is one device sync (the drawn tokens), log-probs only for rows that ask for them, and
stop strings are looked for in the newest text only.
Log-probs are those of the model's own distribution (temperature 1, no top_p, no
constraint mask), as in OpenAI's and vLLM's APIs. A row with a `Constraint` draws only
tokens its grammar allows (`drover.local.constrained`); rows without one are untouched.
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

from drover.completions import Choice, Constraint, TokenLogprob

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

    def __post_init__(self) -> None:
        # A model cannot continue nothing, and the direct prefill would hand an empty prompt
        # the last logits of the prompt before it in the batch (a silent leak between rows).
        if len(self.prompt_ids) == 0:
            raise ValueError("prompt: empty (it encodes to no tokens); the model has nothing to continue")


@dataclass
class GenerationResult:
    choices: list[Choice]
    prompt_tokens: int
    completion_tokens: int
    # per choice, the stop token that ended it (a model may have several: generation_config's
    # eos_token_id list); None where it ended otherwise (length, a stop string, a grammar)
    stop_tokens: list[int | None] = field(default_factory=list)


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
    stop_token: int | None = None  # the stop token (EOS) that ended the row, never in `out`


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(tokenizer, "eos_token_id", None),
                   getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(x) for x in source)
    return ids


def skipped_ids(tokenizer: Any) -> frozenset[int]:
    """Token ids that decoding with skip_special_tokens leaves out of the text (they add no byte)."""
    ids = {int(i) for i in getattr(tokenizer, "all_special_ids", None) or ()}
    ids.update(int(i) for i, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items()
               if getattr(added, "special", False))
    return frozenset(ids)


def max_positions(model: Any, tokenizer: Any, limit: int | None = None) -> int:
    candidates = [limit, getattr(model.config, "max_position_embeddings", None)]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and tok_max < 10**8:
        candidates.append(tok_max)
    values = [c for c in candidates if isinstance(c, int) and c > 0]
    return min(values) if values else 4096


def generate(model: Any, tokenizer: Any, items: Sequence[GenerationItem], batch_size: int = 8,
             max_length: int | None = None) -> Iterator[tuple[int, GenerationResult]]:
    """Yield (index into items, result) as soon as all of an item's samples are done.

    Rows are admitted longest prompt first, `batch_size` at a time, and a row that finishes
    hands its slot to the next waiting one at once (continuous batching), so a long sample
    never holds a batch of finished ones."""
    rows = [row for i, item in enumerate(items) for row in rows_of(item, i)]
    pending = sorted(range(len(rows)), key=lambda r: -len(rows[r].ids))
    remaining = [max(1, it.n) for it in items]
    finished: dict[int, list[_Row]] = {}
    decoder = Decoder(model, tokenizer, batch_size, max_length)
    while pending or decoder.live:
        done: list[_Row] = []
        if pending and decoder.free:
            take, pending = pending[:decoder.free], pending[decoder.free:]
            done += decoder.admit([(rows[r], items[rows[r].item]) for r in take])
        done += decoder.advance()
        for row in done:
            finished.setdefault(row.item, []).append(row)
            remaining[row.item] -= 1
            if remaining[row.item] == 0:
                yield row.item, result_of(items[row.item], finished.pop(row.item))


def rows_of(item: GenerationItem, index: int = 0) -> list[_Row]:
    """The rows (one per sample) that decode `item`, each with its own seed."""
    return [_Row(index, j, list(item.prompt_ids), item.seeds[j] if j < len(item.seeds)
                 else sample_seed(item.prompt_ids, j)) for j in range(max(1, item.n))]


def result_of(item: GenerationItem, rows: list[_Row]) -> GenerationResult:
    """An item's result from its finished rows (any order)."""
    done = sorted(rows, key=lambda r: r.sample)
    choices = [Choice(text=r.text, finish_reason=r.finish, logprobs=r.logprobs if item.logprobs else None)
               for r in done]
    return GenerationResult(choices, len(item.prompt_ids), sum(len(r.out) for r in done),
                            [r.stop_token for r in done])


@dataclass
class _Live:
    """A row in a decoder slot: its request, budget, sampler and grammar state."""

    row: _Row
    item: GenerationItem
    budget: int  # new tokens it may produce in all (max_tokens, capped by the context)
    generator: Any
    matcher: Any


class Decoder:
    """A running batch of rows over a static KV cache (`kv_slots`): rows join (`admit`: their
    prompts are prefilled into free slots) and leave (when finished) between steps; `advance`
    draws one token for every live row and runs one decoding step.

    The state after `admit`/`advance`: `live[s]` is the row in slot s, `logits[s]` its
    next-token logits (n, vocab) float32. Counters in `stats` show what the batch did
    (steps, rows admitted while others were decoding) for tests and benchmarks."""

    def __init__(self, model: Any, tokenizer: Any, slots: int, max_length: int | None = None):
        from drover.local.kv_slots import accepts, decode_step

        self.model, self.tokenizer, self.slots = model, tokenizer, max(1, slots)
        self.limit = max_positions(model, tokenizer, max_length)
        self.stops = eos_ids(model, tokenizer)
        self.skipped = skipped_ids(tokenizer)
        self.step = decode_step(model)
        # The prefill needs the last position's logits only (as HF `generate` asks for them):
        # the head over every prompt position was ~10% of a batch prefill, in fp32 logits.
        self._last_logits_only = {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}
        self.device = next(model.parameters()).device
        self.cache: Any = None
        self.live: list[_Live] = []
        self.logits: Any = None
        self.stats = {"steps": 0, "admitted": 0, "joined_running": 0, "max_live": 0}

    @property
    def free(self) -> int:
        return self.slots - len(self.live)

    def admit(self, entries: list[tuple[_Row, GenerationItem]]) -> list[_Row]:
        """Prefill these rows into free slots (at most `free`); return those already finished."""
        import torch

        from drover.local.kv_slots import SlotCache

        assert len(entries) <= self.free, "more rows than free slots"
        joining, done = [], []
        for row, item in entries:
            keep = max(1, self.limit - item.max_tokens)  # left-truncate a prompt that leaves no room
            prompt = row.ids[-keep:]
            budget = max(0, min(item.max_tokens, self.limit - len(prompt)))
            if budget == 0:
                row.finish = "length"
                done.append(row)
                continue
            matcher = _matchers(self.model, self.tokenizer, [item], self.stops)[0]
            joining.append((_Live(row, item, budget, torch.Generator().manual_seed(row.seed), matcher), prompt))
        if not joining:
            return done
        need = max(len(p) + live.budget for live, p in joining)
        if self.cache is None:
            self.cache = SlotCache(self.model, self.slots, need, ceiling=self.limit)
        self.cache.reserve(need)
        logits = self._prefill(joining)
        self.stats["admitted"] += len(joining)
        if self.live:
            self.stats["joined_running"] += len(joining)
        self.live += [live for live, _ in joining]
        self.logits = logits if self.logits is None else torch.cat([self.logits, logits])
        self.stats["max_live"] = max(self.stats["max_live"], len(self.live))
        return done

    def _prefill(self, joining: list[tuple[_Live, list[int]]]) -> Any:
        """The new prompts' keys into slots [n, n + len(joining)); returns their last-position
        logits (len(joining), vocab) float32. Through the fast step's own prefill where it has
        one (each prompt as if alone, no padding, packed projections: 32 Code Alpaca prompts
        in two batches of 16 took 86 ms in fp32 and 54 in bf16 on the 17M model, vs 270 and
        80 left-padded through the model's forward); else the model's own forward over them
        as a left-padded batch."""
        import torch

        from transformers import DynamicCache

        from drover.local.kv_slots import cache_kwarg, returned_cache

        fast = getattr(self.step, "prefill", None)
        if fast is not None:
            with torch.inference_mode():
                return fast(self.cache, [torch.tensor(p, dtype=torch.long, device=self.device) for _, p in joining])
        width = max(len(p) for _, p in joining)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(joining), width), pad, dtype=torch.long)
        mask = torch.zeros((len(joining), width), dtype=torch.long)
        for b, (_, p) in enumerate(joining):
            ids[b, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[b, width - len(p):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            # A cache of plain layers, not the one the forward would make from the config: a
            # sliding-window layer keeps only its last window - 1 keys, and the slots need all
            # of them (the step's masks apply the window).
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                             **{cache_kwarg(self.model): DynamicCache()}, **self._last_logits_only)
            past = returned_cache(out)
            for b, (_, p) in enumerate(joining):
                self.cache.fill(self.cache.n, [(layer.keys[b, :, width - len(p):], layer.values[b, :, width - len(p):])
                                               for layer in past.layers])
                self.cache.n += 1
            return out.logits[:, -1, :].float()

    def advance(self) -> list[_Row]:
        """Draw one token for every live row, retire the finished ones, and step the rest."""
        import torch

        if not self.live:
            return []
        with torch.inference_mode():
            tokens = self._draw()
            done = self._retire(tokens)
            if self.live:
                self.stats["steps"] += 1
                positions = torch.tensor(self.cache.lengths[:self.cache.n], dtype=torch.long, device=self.device)
                self.logits = self.step(self.cache, torch.tensor(tokens, dtype=torch.long, device=self.device),
                                        positions)
                for s in range(self.cache.n):
                    self.cache.lengths[s] += 1
        return done

    def _draw(self) -> list[int | None]:
        """Each live row's next token (None: the row ended without one) and its bookkeeping."""
        import torch

        logits = self.logits
        logp = torch.log_softmax(logits, dim=-1) if any(lv.item.logprobs for lv in self.live) else None
        chosen = logits.argmax(-1).tolist()
        tokens: list[int | None] = []
        for b, live in enumerate(self.live):
            row, item = live.row, live.item
            if row.finish is not None:  # ended from outside (its request was abandoned)
                tokens.append(None)
                continue
            row_logits = logits[b]
            if live.matcher is not None:
                allowed = live.matcher.allowed().to(row_logits.device)
                if not bool(allowed.any()):  # nothing can follow: the row ends here
                    row.finish = "stop"
                    tokens.append(None)
                    continue
                row_logits = row_logits.masked_fill(~allowed, float("-inf"))
                if not item.temperature or item.temperature <= 0:
                    chosen[b] = int(row_logits.argmax())
            if item.temperature and item.temperature > 0:
                chosen[b] = _sample(row_logits, float(item.temperature), item.top_p, live.generator)
            token = chosen[b]
            tokens.append(token)
            if token in self.stops:
                row.finish = "stop"
                row.stop_token = token
                continue
            row.out.append(token)
            if item.logprobs:
                row.logprobs.append(_token_logprob(self.tokenizer, logp[b], token, item.top_logprobs))
            if item.on_token is not None and item.on_token(
                    row.sample, token, row.logprobs[-1] if item.logprobs else None) is False:
                row.finish = "abort"
            elif item.stop and _hit_stop(self.tokenizer, row, item.stop, self.skipped):
                pass  # finish set to "stop" and the text cut
            elif live.matcher is not None and live.matcher.advance(token):
                row.finish = "stop"  # the grammar is complete and admits nothing more
            elif len(row.out) >= live.budget:
                row.finish = "length"
        return tokens

    def _retire(self, tokens: list[Any]) -> list[_Row]:
        """Remove finished rows (the last live slot moves into each freed one, in `tokens` too);
        return them, texts decoded."""
        done = []
        s = 0
        while s < len(self.live):
            row = self.live[s].row
            if row.finish is None:
                s += 1
                continue
            if not row.cut:
                row.text = self.tokenizer.decode(row.out, skip_special_tokens=True)
            done.append(row)
            last = len(self.live) - 1
            if s != last:
                self.cache.move(last, s)
                self.live[s] = self.live[last]
                tokens[s] = tokens[last]
                self.logits[s] = self.logits[last]
            self.live.pop()
            tokens.pop()
            self.cache.n -= 1
        self.logits = self.logits[:len(self.live)]
        if not self.live:
            self.logits = None
        return done

    def fail(self) -> list[_Row]:
        """Drop every live row (after an error in a step); the cache is reused empty."""
        rows = [live.row for live in self.live]
        self.live, self.logits = [], None
        if self.cache is not None:
            self.cache.n = 0
        return rows


def _matchers(model: Any, tokenizer: Any, items: list[GenerationItem], stops: set[int]) -> list[Any]:
    """One grammar matcher per constrained row (None for the others)."""
    if not any(it.constraint is not None for it in items):
        return [None] * len(items)
    from drover.local.constrained import RowMatcher

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
    # top_p 0 keeps the most likely token only (HF's TopPLogitsWarper keeps at least one),
    # never the whole distribution.
    if top_p is not None and top_p < 1:
        sorted_probs, sorted_idx = probs.sort(descending=True)
        cumulative = sorted_probs.cumsum(-1)
        drop = cumulative - sorted_probs > top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(0, sorted_idx, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def _token_logprob(tokenizer: Any, logp: Any, token: int, top_k: int) -> TokenLogprob:
    top = None
    if top_k and top_k > 0:
        values, indices = logp.topk(min(top_k, logp.shape[-1]))  # more than the vocabulary: all of it
        top = {}
        for v, i in zip(values.tolist(), indices.tolist()):
            top.setdefault(tokenizer.decode([i]), float(v))
    return TokenLogprob(token=tokenizer.decode([token]), logprob=float(logp[token]), top=top)


def _hit_stop(tokenizer: Any, row: _Row, stop: tuple[str, ...], skipped: frozenset[int] = frozenset()) -> bool:
    """Truncate the row at the first stop string, if one has appeared; True if so.

    A stop string that appears now ends in the newest token and, each token being at least
    one byte, starts within its byte length of tokens before: only that tail is decoded at
    every step (the whole text only once one is seen). Tokens in `skipped` (special tokens,
    which the text leaves out) add no byte, so they do not count toward that tail: a stop
    string with several of them inside it is still found (issue #19 review)."""
    window = max(len(s.encode()) for s in stop) + 2
    start, seen = len(row.out), 0
    while start > 0 and seen < window:
        start -= 1
        seen += row.out[start] not in skipped
    if start > 0:
        tail = tokenizer.decode(row.out[start:], skip_special_tokens=True)
        if not any(s and s in tail for s in stop):
            return False
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
