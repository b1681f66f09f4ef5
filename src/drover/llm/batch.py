"""Batch mode (`mode: batch`): uncached requests go out as provider batch jobs.

The OpenAI Batch API (and the compatible endpoints of other providers) answers the same
requests as the synchronous API at about half the price, within a completion window
(24 h). The protocol: upload a JSONL file of requests (`POST /v1/files`, purpose
"batch"; one line `{"custom_id", "method": "POST", "url": "/v1/chat/completions",
"body"}` per request), create a job (`POST /v1/batches`), poll it (`GET
/v1/batches/{id}`: validating -> in_progress -> finalizing -> completed, or failed /
expired / cancelled), then download its output file (one line per answered request,
`{"custom_id", "response": {"status_code", "body"}, "error"}`) and error file.

`BatchBackend` is the OpenAI backend with one change: `_call` does not POST a request,
it queues it, so request shaping and response parsing stay in one place
(`OpenAIBackend.complete` / `score`). The client's driver queues every uncached request
of a `run` and then seals the queue (`seal`); the queue is cut into jobs by the
provider's limits (`batch_max_requests` per job, `batch_max_bytes` per file, one
endpoint per job). Each job's id and the custom ids in it are journaled in the run
directory (`BatchJournal`) *before* anything waits on it, so a killed process, run again,
finds its requests in the journal and polls the same jobs instead of paying again.
A custom id is the digest of the request itself (URL + body): the same request always
has the same id. Answers are mapped back by custom id and cached by the client like any
other answer; requests a job could not answer (an error line, a failed or expired job)
come back as errors, are not cached, and are submitted again by the next run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from drover.atomic import write_json
from drover.errors import LLMError
from drover.identity import canonical_json
from drover.llm.openai_backend import ItemError, OpenAIBackend
from drover.llm.retry import Verdict, backoff_delay, classify_status

TERMINAL = ("completed", "failed", "expired", "cancelled")
_SAVE_LOCK = threading.Lock()  # clients run their event loops on threads of their own


def custom_id(url: str, body: dict[str, Any], sample: int = 0) -> str:
    """The id of one request inside a batch: the digest of what is sent and, past the first,
    which independent sample it is (stable across runs). Unseeded samples of one prompt send
    the same body; keyed by body alone they were one request, answered once for all of them."""
    key: dict[str, Any] = {"url": url, "body": body}
    if sample:
        key["sample"] = sample
    return hashlib.sha256(canonical_json(key).encode("utf-8")).hexdigest()[:40]


class BatchJournal:
    """The batch jobs of one endpoint + model, in a JSON file in the run directory.

    {"jobs": [{"id", "input_file_id", "endpoint", "custom_ids": [...], "status",
    "collected": bool, "created"}]}: written (atomically) once the input file is uploaded
    (id still null), when the job is created, and when its results have been handed back.
    No path: kept in memory (no resume).
    """

    def __init__(self, path: Path | None):
        self.path = path
        self.jobs: list[dict[str, Any]] = []
        if path is not None and path.exists():
            try:
                self.jobs = list(json.loads(path.read_text(encoding="utf-8"))["jobs"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise LLMError(f"{path}: unreadable batch journal ({exc}); move it away to submit "
                               "the uncached requests as new batch jobs") from None

    def open_jobs(self) -> dict[str, dict[str, Any]]:
        """custom id -> the job (not yet collected) that holds it."""
        return {cid: job for job in self.jobs if not job.get("collected") for cid in job["custom_ids"]}

    def add(self, job: dict[str, Any]) -> None:
        self.jobs.append(job)
        self.save()

    def save(self) -> None:
        """Write this client's jobs, keeping those another client of the same endpoint and
        model (a teacher and a judge on one provider model) wrote meanwhile."""
        if self.path is None:
            return
        with _SAVE_LOCK:
            mine = {job["input_file_id"] for job in self.jobs}  # known before the job id is
            try:
                theirs = [j for j in json.loads(self.path.read_text(encoding="utf-8"))["jobs"]
                          if j["input_file_id"] not in mine]
            except (OSError, ValueError, KeyError, TypeError):
                theirs = []
            write_json(self.path, {"jobs": theirs + self.jobs}, indent=None)


class _Pending:
    __slots__ = ("url", "body", "line", "future", "queued")

    def __init__(self, url: str, body: dict[str, Any], line: bytes, future: asyncio.Future[Any]):
        self.url, self.body, self.line, self.future = url, body, line, future
        self.queued = time.monotonic()


class BatchBackend(OpenAIBackend):
    name = "openai"

    def __init__(self, config: Any, journal_path: Path | None = None, say: Any = None):
        super().__init__(config)
        self.journal = BatchJournal(journal_path)
        self._say = say or (lambda line: None)  # one line per job event (submitted, status, done)
        self._queue: dict[str, _Pending] = {}  # queued, not yet in a job
        self._waiting: dict[str, dict[str, _Pending]] = {}  # job id -> custom id -> request
        self._watchers: dict[str, asyncio.Task[Any]] = {}
        self._flusher: asyncio.Task[Any] | None = None
        self._sealed = False
        self.jobs_created = 0
        self.jobs_resumed = 0

    # --- queueing (instead of POSTing) -------------------------------------------------------
    async def _call(self, path: str, body: dict[str, Any], est_tokens: float,
                    sample: int = 0) -> tuple[dict[str, Any], float]:
        url = "/v1" + path
        cid = custom_id(url, body, sample)
        pending = self._queue.get(cid) or self._find_waiting(cid)
        if pending is None:
            line = (json.dumps({"custom_id": cid, "method": "POST", "url": url, "body": body},
                               ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
            pending = self._queue[cid] = _Pending(url, body, line, asyncio.get_running_loop().create_future())
            if self._sealed or len(self._queue) >= self.config.batch_max_requests:
                self._kick()
        return await asyncio.shield(pending.future)

    def _find_waiting(self, cid: str) -> _Pending | None:
        for waiting in self._waiting.values():
            if cid in waiting:
                return waiting[cid]
        return None

    async def begin(self) -> None:
        """A `run` starts queueing: hold its requests until it seals (or a job is full)."""
        self._sealed = False

    async def seal(self) -> None:
        """Every request of this `run` is queued: cut the queue into jobs now (and flush
        any request queued later at once)."""
        self._sealed = True
        self._kick()

    def _kick(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        """Cut the queue into jobs until nothing flushable is left (requests queued while a
        job is being uploaded are taken on the next turn of this loop)."""
        while self._queue and (self._sealed or len(self._queue) >= self.config.batch_max_requests):
            # Requests queued by tasks that started a moment later (n samples sent one by
            # one) join this flush: wait until a few loop turns add nothing.
            size = -1
            while size != len(self._queue):
                size = len(self._queue)
                for _ in range(3):
                    await asyncio.sleep(0)
            if self._sealed:
                queue, self._queue = self._queue, {}
            else:  # a run still queueing: only a full job goes now
                queue = {cid: self._queue.pop(cid) for cid in list(self._queue)[:self.config.batch_max_requests]}
            try:
                await self._dispatch(queue)
            except BaseException as exc:
                for pending in queue.values():
                    if not pending.future.done():
                        pending.future.set_exception(exc if isinstance(exc, (LLMError, ItemError)) else
                                                     ItemError(f"batch submission failed: {exc}"))
                if not isinstance(exc, Exception):
                    raise

    async def _dispatch(self, queue: dict[str, _Pending]) -> None:
        """Attach requests already in journaled jobs; put the rest into new jobs."""
        journaled = self.journal.open_jobs()
        fresh: dict[str, list[tuple[str, _Pending]]] = {}
        for cid, pending in queue.items():
            job = journaled.get(cid)
            if job is not None:
                if job.get("id") is None:  # killed between upload and create: find or create its job
                    await self._create(job, adopt=True)
                self._waiting.setdefault(job["id"], {})[cid] = pending
                if job["id"] not in self._watchers:
                    self.jobs_resumed += 1
                    self._say(f"batch job {job['id']}: resumed from {self.journal.path} (polling it again)")
                    self._watch(job)
            else:
                fresh.setdefault(pending.url, []).append((cid, pending))
        for url, items in fresh.items():
            for part in self._split(items):
                job = await self._submit(url, part)
                self._waiting[job["id"]] = dict(part)
                self._watch(job)

    def _split(self, items: list[tuple[str, _Pending]]) -> list[list[tuple[str, _Pending]]]:
        """Cut one endpoint's requests by the provider's limits (requests per job, bytes per file)."""
        parts: list[list[tuple[str, _Pending]]] = []
        part: list[tuple[str, _Pending]] = []
        size = 0
        for cid, pending in items:
            if len(pending.line) > self.config.batch_max_bytes:
                pending.future.set_exception(ItemError(
                    f"request of {len(pending.line)} bytes exceeds batch_max_bytes={self.config.batch_max_bytes}"))
                continue
            if part and (len(part) >= self.config.batch_max_requests or size + len(pending.line) > self.config.batch_max_bytes):
                parts.append(part)
                part, size = [], 0
            part.append((cid, pending))
            size += len(pending.line)
        if part:
            parts.append(part)
        return parts

    # --- the provider's files and batches endpoints --------------------------------------------
    async def _control(self, what: str, call: Any) -> Any:
        """One files/batches API call, with the client's retry policy (fatal errors raise LLMError)."""
        import openai

        attempt = 0
        while True:
            status: int | None = None
            try:
                return await call()
            except openai.APIStatusError as exc:
                status = exc.status_code
                message = f"HTTP {status}: {exc.message}"
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                message = f"connection error: {exc.__cause__ or exc}"
            verdict = Verdict.RETRY if status is None else classify_status(status)
            message = self.redact(message)
            where = self.config.base_url or "the OpenAI API"
            if verdict is not Verdict.RETRY or attempt >= self.config.max_retries:
                raise LLMError(f"{where}: batch API {what} failed: {message} (check {self.config.api_key_env} "
                               "and that the endpoint offers /v1/files and /v1/batches)")
            await asyncio.sleep(backoff_delay(attempt, self.config.backoff_base, self.config.backoff_max))
            attempt += 1

    async def _submit(self, url: str, part: list[tuple[str, _Pending]]) -> dict[str, Any]:
        client = self._clients[0]
        data = b"".join(p.line for _, p in part)
        uploaded = await self._control("upload", lambda: client.files.create(
            file=("drover-batch.jsonl", data, "application/jsonl"), purpose="batch"))
        job = {"id": None, "input_file_id": uploaded.id, "endpoint": url, "status": "uploaded",
               "custom_ids": [cid for cid, _ in part], "collected": False, "created": time.time()}
        self.journal.add(job)  # before the job exists: a kill from here on resumes it, never pays twice
        await self._create(job, adopt=False)
        self.jobs_created += 1
        self._say(f"batch job {job['id']}: {len(part)} requests to {url} submitted ({len(data):,} bytes)")
        return job

    async def _create(self, job: dict[str, Any], adopt: bool) -> None:
        """Create the job of an uploaded file; `adopt`: first look for one a killed run created
        from that file (among the provider's most recent 100) and take it."""
        client = self._clients[0]
        batch = None
        if adopt:
            page = await self._control("list", lambda: client.batches.list(limit=100))
            batch = next((b for b in page.data if b.input_file_id == job["input_file_id"]), None)
        if batch is None:
            batch = await self._control("create", lambda: client.batches.create(
                input_file_id=job["input_file_id"], endpoint=job["endpoint"],
                completion_window=self.config.batch_window, metadata={"created_by": "drover"}))
        job["id"], job["status"] = batch.id, batch.status
        self.journal.save()

    def _watch(self, job: dict[str, Any]) -> None:
        self._watchers[job["id"]] = asyncio.get_running_loop().create_task(self._poll(job))

    async def _poll(self, job: dict[str, Any]) -> None:
        client = self._clients[0]
        try:
            seen = None
            while True:
                batch = await self._control("status", lambda: client.batches.retrieve(job["id"]))
                counts = getattr(batch, "request_counts", None)
                now = (batch.status, getattr(counts, "completed", None))
                if now != seen:
                    done = f" ({counts.completed}/{counts.total} done, {counts.failed} failed)" if counts else ""
                    self._say(f"batch job {job['id']}: {batch.status}{done}")
                    seen = now
                if batch.status in TERMINAL:
                    break
                await asyncio.sleep(self.config.batch_poll_interval)
            lines: dict[str, dict[str, Any]] = {}
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    content = await self._control("download", lambda f=file_id: client.files.content(f))
                    for raw in content.content.splitlines():
                        if raw.strip():
                            obj = json.loads(raw)
                            lines[obj.get("custom_id")] = obj
            self._resolve(job, batch, lines)
        except Exception as exc:  # noqa: BLE001 - handed to the requests waiting on this job
            for pending in self._waiting.pop(job["id"], {}).values():
                if not pending.future.done():
                    pending.future.set_exception(exc if isinstance(exc, (LLMError, ItemError)) else
                                                 ItemError(f"batch {job['id']}: {exc}"))

    def _resolve(self, job: dict[str, Any], batch: Any, lines: dict[str, dict[str, Any]]) -> None:
        waiting = self._waiting.pop(job["id"], {})
        why = _job_problem(batch)
        for cid, pending in waiting.items():
            if pending.future.done():
                continue
            line = lines.get(cid)
            response = (line or {}).get("response") or {}
            body = response.get("body")
            if line is not None and response.get("status_code") == 200 and isinstance(body, dict) \
                    and isinstance(body.get("choices"), list):
                pending.future.set_result((body, time.monotonic() - pending.queued))
            elif line is not None:
                pending.future.set_exception(ItemError(f"batch {job['id']}: {_line_error(line)}"))
            else:
                pending.future.set_exception(ItemError(f"batch {job['id']} {batch.status}{why}: no answer "
                                                       "for this request (a re-run submits it again)"))
        job["status"] = batch.status
        job["collected"] = True
        self.journal.save()

    async def aclose(self) -> None:
        for task in list(self._watchers.values()) + ([self._flusher] if self._flusher else []):
            task.cancel()
        await super().aclose()


def _job_problem(batch: Any) -> str:
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    return f" ({errors[0].message})" if errors and getattr(errors[0], "message", None) else ""


def _line_error(line: dict[str, Any]) -> str:
    error = line.get("error")
    if isinstance(error, dict) and (error.get("message") or error.get("code")):
        return f"{error.get('code') or 'error'}: {error.get('message') or ''}".strip()
    response = line.get("response") or {}
    body = response.get("body") or {}
    inner = body.get("error") if isinstance(body, dict) else None
    message = inner.get("message") if isinstance(inner, dict) else str(body)[:200]
    return f"HTTP {response.get('status_code')}: {message}"


def journal_path(cache_path: Path | None, identity: str) -> Path | None:
    """RUN/llm-batches/<digest of endpoint + model>.json, beside the run's LLM cache."""
    if cache_path is None:
        return None
    name = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]
    return Path(cache_path).parent / "llm-batches" / f"{name}.json"
