"""The model's one worker for `drover serve`: continuous batching of concurrent requests.

One model thread owns the model and a `Decoder` (`drover.local.decode`): a running
batch of up to `max_batch_size` sequences over a static KV cache. Between two decoding
steps it takes the jobs that arrived, prefills their prompts into free slots (requests join
the running batch) and hands back every request whose samples have all finished (requests
leave it); sequences beyond the free slots wait in arrival order. When the batch is idle,
the first job waits `batch_wait` seconds for companions, so a burst is prefilled together.
The event loop only queues jobs and receives results, so it keeps accepting requests (and
answering `/health`) while the model computes.

Two kinds of job: "generate" (a `GenerationItem`, decoded in the running batch) and "echo"
(prompt log-probs of given token ids and offsets, `drover.local.scoring.encoded_prompt_logprobs`,
run between two steps). A request whose caller has gone (its future cancelled) leaves the
batch at the next step. `stats` counts steps and how many sequences joined a running batch.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from drover.local.decode import Decoder, result_of, rows_of


@dataclass(eq=False)
class _Job:
    kind: str  # "generate" | "echo"
    payload: Any
    future: asyncio.Future
    rows: int
    left: int = 0  # generate: samples not finished yet
    done: list = field(default_factory=list)


class ModelWorker:
    """Owns the model; decodes the jobs of many concurrent requests as one running batch."""

    def __init__(self, model: Any, tokenizer: Any, max_batch_size: int = 8, batch_wait: float = 0.005,
                 max_length: int | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size = max_batch_size
        self.batch_wait = batch_wait
        self.max_length = max_length
        self._inbox: queue.Queue[_Job | None] = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.decoder: Decoder | None = None

    @property
    def stats(self) -> dict[str, int]:
        """The running batch's counters (steps, admitted, joined_running, max_live)."""
        return dict(self.decoder.stats) if self.decoder is not None else {}

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.decoder = Decoder(self.model, self.tokenizer, self.max_batch_size, self.max_length)
        self._thread = threading.Thread(target=self._serve, name="drover-model", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stopping = True
        self._inbox.put(None)

    async def submit(self, kind: str, payload: Any, rows: int) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._inbox.put(_Job(kind, payload, future, rows))
        return await future

    # ---- the model thread ----

    def _serve(self) -> None:
        waiting: list[tuple[Any, _Job]] = []  # (row, job) not yet admitted, in arrival order
        owner: dict[int, _Job] = {}  # id(row) -> its job, for live rows
        while not self._stopping:
            assert self.decoder is not None
            arrived = self._collect(idle=not self.decoder.live and not waiting)
            echo = [j for j in arrived if j.kind == "echo" and not j.future.done()]
            if echo:
                self._echo(echo)
            for job in arrived:
                if job.kind == "generate" and not job.future.done():
                    waiting += [(row, job) for row in self._rows(job)]
            try:
                self._drop_abandoned(owner)
                waiting = [(row, job) for row, job in waiting if not job.future.done()]
                if waiting and self.decoder.free:
                    take, waiting = waiting[:self.decoder.free], waiting[self.decoder.free:]
                    try:
                        self._admit(take, owner)
                    except Exception as exc:  # one job's own trouble: it alone fails
                        self._resolve(take[0][1], exc)
                for row in self.decoder.advance():
                    self._finished(row, owner.pop(id(row)))
            except Exception as exc:  # a bug or out-of-memory: fail the live requests, keep serving
                for row in self.decoder.fail():
                    self._resolve(owner.pop(id(row)), exc)

    def _collect(self, idle: bool) -> list[_Job]:
        """Jobs that arrived; when idle, block for the first and wait `batch_wait` for more."""
        jobs: list[_Job] = []
        if idle:
            first = self._inbox.get()
            if first is None:
                return []
            jobs.append(first)
            deadline = time.monotonic() + self.batch_wait
            while sum(j.rows for j in jobs) < self.max_batch_size:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    job = self._inbox.get(timeout=timeout)
                except queue.Empty:
                    break
                if job is None:
                    return jobs
                jobs.append(job)
        while True:
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                return jobs
            if job is not None:
                jobs.append(job)

    def _rows(self, job: _Job) -> list[Any]:
        rows = rows_of(job.payload)
        job.left = len(rows)
        return rows

    def _admit(self, take: list[tuple[Any, _Job]], owner: dict[int, _Job]) -> None:
        assert self.decoder is not None
        try:
            done = self.decoder.admit([(row, job.payload) for row, job in take])
        except Exception:  # e.g. a grammar the engine rejects: admit job by job, fail only the culprit
            if len({id(job) for _, job in take}) == 1:
                raise
            for job in dict.fromkeys(job for _, job in take):
                try:
                    self._admit([(row, j) for row, j in take if j is job], owner)
                except Exception as exc:
                    self._resolve(job, exc)
            return
        for row, job in take:
            owner[id(row)] = job
        for row in done:
            self._finished(row, owner.pop(id(row)))

    def _drop_abandoned(self, owner: dict[int, _Job]) -> None:
        """Rows whose request is already answered or cancelled end at the next step."""
        assert self.decoder is not None
        for live in self.decoder.live:
            if owner[id(live.row)].future.done():
                live.row.finish = "abort"

    def _finished(self, row: Any, job: _Job) -> None:
        job.done.append(row)
        job.left -= 1
        if job.left == 0:
            self._resolve(job, result_of(job.payload, job.done))

    def _echo(self, jobs: list[_Job]) -> None:
        from drover.local.scoring import encoded_prompt_logprobs

        try:
            top_k = max(j.payload[1] for j in jobs)
            results = encoded_prompt_logprobs(self.model, self.tokenizer, [j.payload[0] for j in jobs], top_k=top_k,
                                              batch_size=self.max_batch_size)
            for job, result in zip(jobs, results):
                self._resolve(job, result)
        except Exception as exc:
            for job in jobs:
                self._resolve(job, exc)

    def _resolve(self, job: _Job, value: Any) -> None:
        def settle() -> None:
            if job.future.done():
                return
            if isinstance(value, BaseException):
                job.future.set_exception(value)
            else:
                job.future.set_result(value)

        assert self._loop is not None
        self._loop.call_soon_threadsafe(settle)
