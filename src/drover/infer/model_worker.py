"""The model's one worker for `drover serve`: batches jobs from concurrent requests.

A single asyncio task takes the first waiting job, collects more for `batch_wait` seconds
(up to `max_batch_size` sequences) and runs them as one batch on a dedicated model
thread, so the event loop keeps accepting requests (and answering `/health`) while the
model computes. Two kinds of job: "generate" (a `GenerationItem`, through
`drover.infer.generation.generate`) and "echo" (prompt log-probs of given token ids and
offsets, through `drover.infer.scoring.encoded_prompt_logprobs`). This is the one place
requests meet the model: continuous batching would replace `_loop`/`_run` here.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from drover.infer.generation import generate


@dataclass
class _Job:
    kind: str  # "generate" | "echo"
    payload: Any
    future: asyncio.Future
    rows: int


class ModelWorker:
    """Owns the model; batches jobs from many concurrent requests into one call."""

    def __init__(self, model: Any, tokenizer: Any, max_batch_size: int = 8, batch_wait: float = 0.005,
                 max_length: int | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size = max_batch_size
        self.batch_wait = batch_wait
        self.max_length = max_length
        self.queue: asyncio.Queue[_Job] | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drover-model")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, kind: str, payload: Any, rows: int) -> Any:
        assert self.queue is not None
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(kind, payload, future, rows))
        return await future

    async def _loop(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            rows = jobs[0].rows
            deadline = loop.time() + self.batch_wait
            while rows < self.max_batch_size:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                jobs.append(job)
                rows += job.rows
            jobs = [j for j in jobs if not j.future.cancelled()]
            if not jobs:
                continue
            try:
                await loop.run_in_executor(self.executor, self._run, jobs, loop)
            except Exception as exc:  # a bug or out-of-memory: fail these requests, keep serving
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)

    def _run(self, jobs: list[_Job], loop: asyncio.AbstractEventLoop) -> None:
        from drover.infer.scoring import encoded_prompt_logprobs

        def resolve(job: _Job, value: Any) -> None:
            loop.call_soon_threadsafe(lambda: job.future.done() or job.future.set_result(value))

        gen = [j for j in jobs if j.kind == "generate"]
        echo = [j for j in jobs if j.kind == "echo"]
        if echo:
            top_k = max(j.payload[1] for j in echo)
            for job, result in zip(echo, encoded_prompt_logprobs(self.model, self.tokenizer, [j.payload[0] for j in echo],
                                                                 top_k=top_k, batch_size=self.max_batch_size)):
                resolve(job, result)
        if gen:
            for index, result in generate(self.model, self.tokenizer, [j.payload for j in gen],
                                          batch_size=self.max_batch_size, max_length=self.max_length):
                resolve(gen[index], result)
