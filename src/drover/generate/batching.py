"""Several LLM requests per record, streamed through one `llm.run` in input order.

`llm.run` reads requests ahead in chunks and yields completions in input order, so a
record's requests can be produced lazily and its completions regrouped as they arrive:
the producer notes each record's request count in a queue that always runs ahead of
the consumer.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def run_grouped(llm: Any, groups: Iterable[tuple[T, list[Any]]], desc: str = "",
                total: int | None = None) -> Iterator[tuple[T, list[Any]]]:
    """For each (item, requests), yield (item, completions) in order; items with no requests too."""
    pending: collections.deque[tuple[T, int]] = collections.deque()

    def requests() -> Iterator[Any]:
        for item, reqs in groups:
            pending.append((item, len(reqs)))
            yield from reqs

    results = iter(llm.run(requests(), desc=desc, total=total))
    while True:
        if not pending:
            # Pull one completion to advance the producer (or finish).
            try:
                first = next(results)
            except StopIteration:
                while pending:  # trailing items without requests
                    item, _ = pending.popleft()
                    yield item, []
                return
            item, count = pending.popleft()
            while count == 0:
                yield item, []
                item, count = pending.popleft()
            got = [first] + [next(results) for _ in range(count - 1)]
            yield item, got
        else:
            item, count = pending.popleft()
            yield item, [next(results) for _ in range(count)]
