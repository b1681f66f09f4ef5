"""`ShardedLLM`: an LLM client that answers only the requests its shard owns.

The shard pass of request sharding (`drover.shards`): a job (a benchmark task) runs
unchanged, but of the requests it sends, this shard answers (and caches, into its own
part of the cache) only those whose fingerprint it owns; the others come back as empty
placeholders (no error, not cached) so the job runs to its end without paying for them.
Whatever the job computes from placeholders is thrown away: only the cache part counts,
and the merge pass recomputes everything from the merged cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from drover.completions import Choice, Completion, Request, Score, ScoreRequest


class ShardedLLM:
    def __init__(self, llm: Any, owns: Callable[[str], bool]):
        """`owns(key)`: does this shard answer the request with this cache key
        (`Shard.owns_key`; `lambda key: False` for a client whose calls all belong to the merge)."""
        self.llm = llm
        self.owns = owns
        self.answered = 0
        self.skipped = 0

    def __getattr__(self, name: str) -> Any:  # config, stats, is_async, ... of the wrapped client
        return getattr(self.llm, name)

    def _split(self, items: list[Any]) -> tuple[list[int], list[Any]]:
        mine = [i for i, item in enumerate(items) if self.owns(self.llm.cache_key(item))]
        self.answered += len(mine)
        self.skipped += len(items) - len(mine)
        return mine, [items[i] for i in mine]

    def run(self, requests: Iterable[Request], desc: str = "", total: int | None = None) -> Iterator[Completion]:
        items = list(requests)
        mine, owned = self._split(items)
        answers = dict(zip(mine, self.llm.run(owned, desc=desc))) if owned else {}
        for i, request in enumerate(items):
            if i in answers:
                yield answers[i]
            else:
                n = self.llm.resolve(request).n or 1
                yield Completion(choices=[Choice("", "stop") for _ in range(n)], model=self.llm.config.model,
                                 key=request.key)

    def complete(self, request: Request) -> Completion:
        return next(iter(self.run([request])))

    def score(self, requests: Iterable[ScoreRequest], desc: str = "", total: int | None = None) -> Iterator[Score]:
        items = list(requests)
        mine, owned = self._split(items)
        answers = dict(zip(mine, self.llm.score(owned, desc=desc))) if owned else {}
        for i in range(len(items)):
            yield answers[i] if i in answers else Score([], [], 0.0, False)
