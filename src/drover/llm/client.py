"""`LLM`: the one client every teacher, judge, rater and policy call goes through.

    with LLM(LLMConfig.from_spec("http://127.0.0.1:8000/v1#tiny"), run.llm_cache) as llm:
        for completion in llm.run(requests, desc="answers"):   # input order, streamed
            ...

`run` is a plain synchronous generator: the OpenAI-compatible backend runs on an asyncio
loop in a background thread, the local HF backend in the caller's thread. Requests are
read in chunks, looked up in the cache with one query per chunk, and only the misses are
sent (in `mode: batch`, as provider batch jobs: `drover.llm.batch`); each answer is committed to the cache as soon as it arrives, so killing the
process loses nothing already answered. A request that still fails after retries comes
back as `Completion(error=...)`; only errors no retry can fix (bad key, unknown model)
raise `LLMError`, once.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from drover.errors import LLMError
from drover.llm.cache import LLMCache
from drover.llm.config import LLMConfig
from drover.llm.progress import Progress
from drover.completions import (Completion, Decoding, Request, Score, ScoreRequest, Usage, request_fingerprint,
                              score_fingerprint)

CHUNK = 256  # requests read (and looked up in the cache) at a time


@dataclass
class LLMStats:
    hits: int = 0
    misses: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    errors: int = 0
    first_error: str = ""  # the first failed item's message: the count alone does not say why

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _wait(future: concurrent.futures.Future) -> Any:
    """`future.result()` that Ctrl-C can interrupt.

    SIGINT may be delivered to the event-loop thread; the main thread, blocked in an
    untimed lock wait, would then only see it once the request finishes (and a stream of
    requests keeps it blocked). Short timed waits return to the interpreter, which runs
    the pending KeyboardInterrupt.
    """
    while True:
        try:
            return future.result(timeout=0.2)
        except concurrent.futures.TimeoutError:
            continue


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _reusable(future: concurrent.futures.Future) -> bool:
    """An in-flight (or successfully finished) call an identical request can share."""
    if not future.done():
        return True
    return not future.cancelled() and future.exception() is None and future.result().error is None


class LLM:
    def __init__(self, config: LLMConfig, cache_path: str | Path | None = None, progress: bool = True,
                 progress_interval: float = 30.0):
        config.validate()
        self.config = config
        self.cache = LLMCache(cache_path) if cache_path is not None else None
        self.stats = LLMStats()
        self._stats_lock = threading.Lock()
        self._progress = progress
        self._progress_interval = progress_interval
        self._backend: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._resolved: dict[Decoding, Decoding] = {}
        self.identity = config.identity()  # content of the model / endpoint: part of every cache key

    # --- lifecycle ------------------------------------------------------------------------
    @property
    def is_async(self) -> bool:
        return self.config.backend == "openai"

    def _ensure_backend(self) -> Any:
        if self._closed:
            raise LLMError("this LLM client is closed")
        if self._backend is not None:
            return self._backend
        if self.config.backend == "openai":
            if self.config.mode == "batch":
                from drover.llm.batch import BatchBackend, journal_path

                identity = f"{self.config.endpoint_identity()}#{self.config.model}"
                say = (lambda line: print(f"drover llm: {line}", file=sys.stderr, flush=True)) if self._progress else None
                backend = BatchBackend(self.config, journal_path(self.cache.path if self.cache else None, identity), say)
            else:
                from drover.llm.openai_backend import OpenAIBackend

                backend = OpenAIBackend(self.config)
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="drover-llm-loop", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
            try:
                asyncio.run_coroutine_threadsafe(backend.start(), loop).result()
            except BaseException:
                self._stop_loop()
                raise
        else:
            from drover.llm.hf_backend import HFBackend

            backend = HFBackend(self.config)
        self._backend = backend
        return backend

    def _stop_loop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._loop.close()
            self._loop = self._thread = None

    async def _shutdown(self) -> None:
        """Cancel requests still in flight (a job stopped early) and close the HTTP clients."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._backend.aclose()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._backend is not None and self._loop is not None:
                try:
                    asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
                except Exception:
                    pass
            self._stop_loop()
            if self._backend is not None and hasattr(self._backend, "close"):
                self._backend.close()
        finally:
            if self.cache is not None:
                self.cache.close()

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- accounting -----------------------------------------------------------------------
    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        cost = (prompt_tokens * self.config.price_input_per_1k + completion_tokens * self.config.price_output_per_1k) / 1000.0
        return cost * self.config.batch_discount if self.config.mode == "batch" else cost

    def _record(self, hits: int = 0, misses: int = 0, errors: int = 0, prompt_tokens: int = 0,
                completion_tokens: int = 0) -> None:
        with self._stats_lock:
            self.stats.hits += hits
            self.stats.misses += misses
            self.stats.errors += errors
            self.stats.prompt_tokens += prompt_tokens
            self.stats.completion_tokens += completion_tokens
            self.stats.cost += self._cost(prompt_tokens, completion_tokens)
        if self.cache is not None:
            self.cache.count(hits=hits, misses=misses, errors=errors)

    def _store(self, kind: str, fp: str, obj: Completion | Score, prompt_tokens: int = 0,
               completion_tokens: int = 0, latency: float = 0.0) -> None:
        if self.cache is None:
            return
        data = obj.to_dict()
        if kind == "completion":
            data["key"] = None
            data["cached"] = False
            if data["constrained"] is False:  # a fallback answer, kept under the plain key as the plain answer
                data["constrained"] = None
        self.cache.put(fp, kind, self.config.backend, self.config.model, data, prompt_tokens, completion_tokens,
                       self._cost(prompt_tokens, completion_tokens), latency)

    def _finish(self, kind: str, fp: str, result: Completion | Score) -> None:
        """Account for and cache one fresh result (any thread)."""
        if result.error is not None:
            with self._stats_lock:
                self.stats.first_error = self.stats.first_error or result.error
            self._record(misses=1, errors=1)
            return
        if isinstance(result, Completion):
            pt, ct = result.usage.prompt_tokens, result.usage.completion_tokens
            self._store(kind, fp, result, pt, ct, result.latency)
            self._record(misses=1, prompt_tokens=pt, completion_tokens=ct)
        else:
            self._store(kind, fp, result)
            self._record(misses=1)

    def _progress_bar(self, desc: str, total: int | None) -> Progress:
        return Progress(desc, total, interval=self._progress_interval, enabled=self._progress)

    def _progress_extra(self) -> dict[str, float]:
        s = self.stats
        return {"tokens": s.prompt_tokens + s.completion_tokens, "cost": s.cost, "hits": s.hits, "errors": s.errors}

    # --- completions ----------------------------------------------------------------------
    def resolve(self, request: Request) -> Decoding:
        """The request's decoding with the config's defaults filled in (memoized: most requests share one)."""
        decoding = request.decoding
        try:
            return self._resolved[decoding]
        except KeyError:
            resolved = self._resolved[decoding] = self._resolve_now(decoding)
            return resolved
        except TypeError:  # unhashable (a list in `stop`)
            return self._resolve_now(decoding)

    def _resolve_now(self, decoding: Decoding) -> Decoding:
        resolved = self.config.resolve(decoding)
        if self.config.constraints == "off" and resolved.constraint is not None:
            resolved = replace(resolved, constraint=None)  # sent, keyed and cached as the plain request it is
        return resolved

    def fingerprint(self, request: Request) -> str:
        return request_fingerprint(self.identity, request, self.resolve(request))

    def cache_key(self, item: Request | ScoreRequest) -> str:
        """The cache key of a completion or scoring request (what `ShardedLLM` shards by)."""
        return self._prepare("completion" if isinstance(item, Request) else "score", item)[2]

    def run(self, requests: Iterable[Request], desc: str = "", total: int | None = None) -> Iterator[Completion]:
        """Answer every request, yielding Completions in input order (see the module docstring)."""
        if total is None and hasattr(requests, "__len__"):
            total = len(requests)  # type: ignore[arg-type]
        return self._drive("completion", requests, desc, total)

    def complete(self, request: Request) -> Completion:
        return next(iter(self._drive("completion", [request], "", 1, show=False)))

    def score(self, requests: Iterable[ScoreRequest], desc: str = "", total: int | None = None) -> Iterator[Score]:
        """Log-probability of each continuation given its context, in input order."""
        if total is None and hasattr(requests, "__len__"):
            total = len(requests)  # type: ignore[arg-type]
        return self._drive("score", requests, desc, total)

    # --- the batch engine -----------------------------------------------------------------
    def _prepare(self, kind: str, item: Any) -> tuple[Any, Decoding | None, str]:
        if kind == "completion":
            if not isinstance(item, Request):
                raise TypeError(f"LLM.run expects Request objects, got {type(item).__name__}")
            decoding = self.resolve(item)
            return item, decoding, request_fingerprint(self.identity, item, decoding)
        if not isinstance(item, ScoreRequest):
            raise TypeError(f"LLM.score expects ScoreRequest objects, got {type(item).__name__}")
        return item, None, score_fingerprint(self.identity, item)

    def _from_cache(self, kind: str, item: Any, data: dict[str, Any]) -> Completion | Score:
        if kind == "completion":
            completion = Completion.from_dict(data)
            completion.cached = True
            completion.key = item.key
            return completion
        return Score.from_dict(data)

    def _drive(self, kind: str, items: Iterable[Any], desc: str, total: int | None,
               show: bool = True) -> Iterator[Any]:
        backend = self._ensure_backend()
        progress = self._progress_bar(desc or kind, total) if show else None
        done = 0
        engine = self._drive_async if self.is_async else self._drive_sync
        try:
            for result in engine(kind, backend, items):
                done += 1
                if progress is not None:
                    progress.update(done, self._progress_extra)
                yield result
        finally:
            if progress is not None:
                progress.update(done, self._progress_extra)
                progress.close()
            if self.cache is not None:
                self.cache.flush_counters()

    def _lookup(self, kind: str, chunk: list[Any]) -> tuple[list[tuple[Any, Decoding | None, str]], dict[str, Any]]:
        prepared = [self._prepare(kind, item) for item in chunk]
        hits = self.cache.get_many([fp for _, _, fp in prepared]) if self.cache is not None else {}
        return prepared, hits

    def _drive_sync(self, kind: str, backend: Any, items: Iterable[Any]) -> Iterator[Any]:
        chunk_size = max(CHUNK, self.config.batch_size * 16)
        for chunk in _chunks(items, chunk_size):
            prepared, hits = self._lookup(kind, chunk)
            results: list[Any] = [None] * len(prepared)
            todo: list[int] = []
            first: dict[str, int] = {}
            for i, (item, _, fp) in enumerate(prepared):
                if fp in hits:
                    results[i] = self._from_cache(kind, item, hits[fp])
                elif fp not in first:
                    first[fp] = i
                    todo.append(i)
            self._record(hits=sum(1 for r in results if r is not None))
            if todo:
                if kind == "completion":
                    stream = backend.complete_batch([(prepared[i][0], prepared[i][1]) for i in todo])
                else:
                    stream = backend.score_batch([prepared[i][0] for i in todo])
                for j, result in stream:
                    i = todo[j]
                    self._finish(kind, prepared[i][2], result)
                    results[i] = result
            for i, (item, _, fp) in enumerate(prepared):
                result = results[i]
                if result is None:  # a duplicate of an earlier request in this chunk
                    result = self._copy(kind, results[first[fp]], item)
                elif kind == "completion":
                    result.key = item.key
                yield result

    def _copy(self, kind: str, result: Any, item: Any) -> Any:
        clone = (Completion if kind == "completion" else Score).from_dict(result.to_dict())
        if kind == "completion":
            clone.key = item.key
        return clone

    async def _one_async(self, kind: str, backend: Any, item: Any, decoding: Decoding | None, fp: str) -> Any:
        from drover.llm.openai_backend import ItemError

        try:
            if kind == "completion" and (decoding.n or 1) > 1 and not self.config.supports_n:
                result = await self._samples_one_by_one(backend, item, decoding)
            elif kind == "completion":
                result = await self._complete_one(backend, item, decoding)
            else:
                result = await backend.score(item)
        except ItemError as exc:
            result = (Completion(choices=[], error=str(exc), model=self.config.model) if kind == "completion"
                      else Score([], [], 0.0, False, error=str(exc)))
        if kind == "completion" and result.cached:  # the plain request's cached answer (a fallback)
            self._record(hits=1)
            return result
        self._finish(kind, self._answer_key(item, decoding, fp, result), result)
        return result

    def _plain_key(self, request: Request, decoding: Decoding) -> str:
        """The key of `request` without its constraint: what an unconstrained fallback answered."""
        return request_fingerprint(self.identity, request, replace(decoding, constraint=None))

    def _answer_key(self, request: Request | ScoreRequest, decoding: Decoding | None, fp: str, result: Any) -> str:
        """Where a fresh answer is cached: an answer given without the asked constraint
        (`constrained is False`) under the plain request's key, so it never answers the
        constrained request later (with `constraints: on`, or once the endpoint honours them)."""
        if isinstance(result, Completion) and result.constrained is False and decoding is not None:
            return self._plain_key(request, decoding)  # type: ignore[arg-type]
        return fp

    async def _complete_one(self, backend: Any, request: Request, decoding: Decoding) -> Completion:
        """backend.complete, offering the plain request's cached answer for a fallback."""
        if decoding.constraint is None or self.cache is None:
            return await backend.complete(request, decoding)
        cache, key = self.cache, self._plain_key(request, decoding)

        def plain_cached() -> Completion | None:
            data = cache.get(key)
            if data is None:
                return None
            hit = Completion.from_dict(data)
            hit.cached, hit.constrained = True, False
            return hit

        return await backend.complete(request, decoding, plain_cached)

    async def _samples_one_by_one(self, backend: Any, request: Request, decoding: Decoding) -> Completion:
        """n samples from an endpoint that cannot do `n`: n single-sample requests, each its own
        cache entry: sample index request.sample_index·n + j (sent with the prompt's seed + that index
        when seeded), the same entry as that sample asked for alone."""
        from drover.llm.openai_backend import ItemError

        n = decoding.n or 1
        subs = []
        for j in range(n):
            sub_decoding = replace(decoding, n=1)
            sub = replace(request, decoding=sub_decoding, sample_index=request.sample_index * n + j)
            subs.append((sub, sub_decoding, request_fingerprint(self.identity, sub, sub_decoding)))
        hits = self.cache.get_many([fp for _, _, fp in subs]) if self.cache is not None else {}

        async def one(sub: Request, sub_decoding: Decoding, fp: str) -> Completion:
            if fp in hits:
                return Completion.from_dict(hits[fp])
            part = await self._complete_one(backend, sub, sub_decoding)
            if not part.cached:
                self._store("completion", self._answer_key(sub, sub_decoding, fp, part), part,
                            part.usage.prompt_tokens, part.usage.completion_tokens, part.latency)
            return part

        parts = await asyncio.gather(*(one(*s) for s in subs), return_exceptions=True)
        for part in parts:
            if isinstance(part, BaseException) and not isinstance(part, ItemError):
                raise part
        failed = [p for p in parts if isinstance(p, ItemError)]
        if failed:
            raise ItemError(f"{len(failed)} of {n} samples failed: {failed[0]}")
        fresh = [p for p, (_, _, fp) in zip(parts, subs) if fp not in hits and not p.cached]
        return Completion(choices=[c for p in parts for c in p.choices], model=parts[0].model,
                          usage=Usage(sum(p.usage.prompt_tokens for p in fresh),
                                      sum(p.usage.completion_tokens for p in fresh)),
                          latency=max((p.latency for p in fresh), default=0.0), constrained=parts[0].constrained)

    def _drive_async(self, kind: str, backend: Any, items: Iterable[Any]) -> Iterator[Any]:
        assert self._loop is not None
        loop = self._loop
        # (item, value, state): state 0 = a finished result, 1 = a future, 2 = a future shared
        # with an earlier identical request in the window (its result is copied).
        window: collections.deque[tuple[Any, Any, int]] = collections.deque()
        inflight: dict[str, concurrent.futures.Future] = {}
        max_window = max(2 * CHUNK, 4 * self.config.concurrency)
        batch = self.config.mode == "batch"
        if batch:  # every uncached request is queued before any answer can come back
            max_window = 1 << 62
            asyncio.run_coroutine_threadsafe(backend.begin(), loop).result()

        def pop() -> Any:
            item, value, state = window.popleft()
            if state == 0:
                return value
            result = _wait(value)
            if state == 2:
                return self._copy(kind, result, item)
            if kind == "completion":
                result.key = item.key
            return result

        try:
            for chunk in _chunks(items, CHUNK):
                prepared, hits = self._lookup(kind, chunk)
                n_hits = 0
                for item, decoding, fp in prepared:
                    if fp in hits:
                        n_hits += 1
                        window.append((item, self._from_cache(kind, item, hits[fp]), 0))
                        continue
                    future = inflight.get(fp)
                    if future is not None and _reusable(future):
                        window.append((item, future, 2))
                        continue
                    future = asyncio.run_coroutine_threadsafe(self._one_async(kind, backend, item, decoding, fp), loop)
                    inflight[fp] = future
                    window.append((item, future, 1))
                self._record(hits=n_hits)
                while window and (window[0][2] == 0 or window[0][1].done() or len(window) > max_window):
                    yield pop()
                if len(inflight) > max_window:
                    inflight = {fp: f for fp, f in inflight.items() if not f.done()}
            if batch:
                asyncio.run_coroutine_threadsafe(backend.seal(), loop).result()
            while window:
                yield pop()
        finally:
            for _, value, state in window:
                if state:
                    value.cancel()
