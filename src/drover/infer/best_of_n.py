"""Best-of-n: sample n responses per prompt, score them, keep the ranking and the winner.

GPT-4 technical report, Figure 4(a,b): rejection sampling against a reward model. The
full ranking is written as `Ranked` (best first, `score` = reward), so "ranked group
1..n" comparisons are one judge call away; the winner is written as a `Conversation`
(ready for SFT: expert iteration). The same scorer re-ranks any `Ranked` file, which is
Tuna's proxy ranking model when the reward model was trained on contextual rankings.

Sampling goes through the one LLM client (cached: a re-run pays nothing twice);
outputs are appended record by record and a resumed run skips the ids already written.
Scorers are plain callables `(items) -> rewards`, items being (prompt messages,
response text), so a reward model, a judge or a test stub all fit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drover.records import Conversation, JsonlAppender, Message, Ranked, Record, Response, prompt_of

Scorer = Callable[[list[tuple[list[Message], str]]], list[float]]


@dataclass
class SampleOptions:
    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int = 0


def sample(llm: Any, records: Iterable[Record], options: SampleOptions) -> Iterator[tuple[Record, list[str]]]:
    """(record, n sampled texts) per record, in input order; failed requests give no texts."""
    from drover.completions import Request

    records = list(records)
    requests = [Request.chat([m.to_dict() for m in prompt_of(r)], key=r.id, n=options.n,
                             temperature=options.temperature, top_p=options.top_p,
                             max_tokens=options.max_tokens, seed=options.seed)
                for r in records]
    for record, completion in zip(records, llm.run(requests, desc="sample", total=len(requests))):
        texts = [c.text for c in completion.choices if c.text.strip()] if completion.ok else []
        yield record, texts


def rank(record_id: str, messages: list[Message], responses: list[Response], rewards: list[float],
         meta: dict[str, Any] | None = None, reference: str | None = None) -> Ranked:
    """A Ranked record of `responses` sorted by reward, best first (stable for ties)."""
    order = sorted(range(len(responses)), key=lambda i: -rewards[i])
    ranked = [Response(responses[i].content, float(rewards[i]), responses[i].source) for i in order]
    return Ranked(record_id, list(messages), ranked, reference, dict(meta or {}))


def winner(ranked: Ranked, source: str = "best-of-n") -> Conversation:
    """The top response of a ranking as an SFT-ready Conversation."""
    best = ranked.responses[0]
    return Conversation(ranked.id, list(ranked.messages) + [Message("assistant", best.content)],
                        source=best.source or source,
                        meta={**ranked.meta, "reward": best.score, "n": len(ranked.responses)})


@dataclass
class BestOfNSummary:
    prompts: int = 0
    skipped_done: int = 0
    written: int = 0
    no_samples: int = 0
    mean_best: float = 0.0
    mean_all: float = 0.0


def _score_and_write(items: list[tuple[Record, list[Response]]], scorer: Scorer, ranked_out: JsonlAppender,
                     best_out: JsonlAppender | None, summary: BestOfNSummary, reference_of: Callable[[Record], str | None]
                     ) -> None:
    flat = [(prompt_of(r), resp.content) for r, resps in items for resp in resps]
    rewards = scorer(flat) if flat else []
    offset = 0
    for record, responses in items:
        mine = rewards[offset:offset + len(responses)]
        offset += len(responses)
        ranked = rank(record.id, prompt_of(record), responses, mine, record.meta, reference_of(record))
        if best_out is not None and ranked.id not in best_out.done_ids:
            best_out.write(winner(ranked))
        ranked_out.write(ranked)                 # last: its ids mark what a resumed run skips
        summary.written += 1
        summary.mean_best += ranked.responses[0].score or 0.0
        summary.mean_all += sum(mine) / len(mine)


def _finish(summary: BestOfNSummary) -> BestOfNSummary:
    if summary.written:
        summary.mean_best /= summary.written
        summary.mean_all /= summary.written
    return summary


def best_of_n(llm: Any, records: Iterable[Record], scorer: Scorer, ranked_path: str | Path,
              best_path: str | Path | None, options: SampleOptions, policy_name: str = "policy",
              chunk: int = 32) -> BestOfNSummary:
    """Sample n responses per record, score, and append the ranking (and the winner)."""
    summary = BestOfNSummary()
    with JsonlAppender(ranked_path) as ranked_out, \
            (JsonlAppender(best_path) if best_path else _Null()) as best_out:
        todo = []
        for record in records:
            summary.prompts += 1
            if record.id in ranked_out.done_ids:
                summary.skipped_done += 1
            else:
                todo.append(record)
        for start in range(0, len(todo), chunk):
            batch: list[tuple[Record, list[Response]]] = []
            for record, texts in sample(llm, todo[start:start + chunk], options):
                if not texts:
                    summary.no_samples += 1
                    continue
                batch.append((record, [Response(t, None, f"{policy_name}#{k}") for k, t in enumerate(texts)]))
            _score_and_write(batch, scorer, ranked_out, best_out if best_path else None, summary,
                             lambda r: r.reference if isinstance(r, Ranked) else r.last_assistant)
    return _finish(summary)


def rerank_file(records: Iterable[Ranked], scorer: Scorer, ranked_path: str | Path, best_path: str | Path | None,
                chunk: int = 32) -> BestOfNSummary:
    """Re-score every response of existing Ranked records and re-order them by reward."""
    summary = BestOfNSummary()
    with JsonlAppender(ranked_path) as ranked_out, \
            (JsonlAppender(best_path) if best_path else _Null()) as best_out:
        batch: list[tuple[Record, list[Response]]] = []
        for record in records:
            summary.prompts += 1
            if record.id in ranked_out.done_ids:
                summary.skipped_done += 1
                continue
            batch.append((record, list(record.responses)))
            if len(batch) >= chunk:
                _score_and_write(batch, scorer, ranked_out, best_out if best_path else None, summary,
                                 lambda r: r.reference)
                batch = []
        if batch:
            _score_and_write(batch, scorer, ranked_out, best_out if best_path else None, summary,
                             lambda r: r.reference)
    return _finish(summary)


class _Null:
    """Stands in for an output that was not asked for."""

    done_ids: set[str] = set()

    def __enter__(self) -> "_Null":
        return self

    def __exit__(self, *exc: object) -> None:
        return None
