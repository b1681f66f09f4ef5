"""A fake provider batch API (the OpenAI files and batches endpoints) for tests.

`FakeBatchServer` is `FakeOpenAIServer` (same synchronous answers) plus:

    POST /v1/files                  multipart upload (purpose=batch) -> a file object
    GET  /v1/files/{id}/content     the file's bytes
    POST /v1/batches                {input_file_id, endpoint, completion_window} -> a batch
    GET  /v1/batches                the batches, most recent first (one page)
    GET  /v1/batches/{id}           the batch, advanced one state every `steps` polls:
                                    validating -> in_progress -> finalizing -> completed

Scripted behaviour, for the next jobs or for particular requests:

    server.hold = True              jobs stop at in_progress until it is set back to False
    server.fail_contents = {"q3"}   those requests get a 400 line in the error file
    server.expire_next(k)           the next job answers its first k requests, then expires
    server.fail_next("reason")      the next job fails validation (status failed, errors)
    server.max_requests = 10        a job with more lines is refused at creation (HTTP 400)

Counters (`uploads`, `jobs`, `polls`) let a test prove that a resumed run paid nothing twice.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from typing import Any

from drover.llm.testing import FakeOpenAIServer, _content


class FakeBatchServer(FakeOpenAIServer):
    def __init__(self, steps: int = 1, **kwargs: Any):
        super().__init__(**kwargs)
        self.steps = steps
        self.hold = False
        self.fail_contents: set[str] = set()
        self.max_requests: int | None = None
        self.files: dict[str, bytes] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.uploads = 0
        self.polls = 0
        self._expire: list[int] = []
        self._fail: list[str] = []
        self._ids = 0
        self._batch_lock = threading.Lock()

    # --- scripting --------------------------------------------------------------------------
    def expire_next(self, answered: int) -> None:
        self._expire.append(answered)

    def fail_next(self, reason: str) -> None:
        self._fail.append(reason)

    def job_sizes(self) -> list[int]:
        return [len(job["lines"]) for job in self.jobs.values()]

    # --- the endpoints ----------------------------------------------------------------------
    def _next_id(self, prefix: str) -> str:
        with self._batch_lock:
            self._ids += 1
            return f"{prefix}-{self._ids}"

    async def _respond(self, method: str, path: str, headers: dict[str, str],
                       body: bytes) -> tuple[int, dict[str, str], Any]:
        path = path.split("?", 1)[0]
        if path.endswith("/files") and method == "POST":
            return self._upload(headers, body)
        if "/files/" in path and path.endswith("/content") and method == "GET":
            file_id = path.rsplit("/", 2)[-2]
            if file_id not in self.files:
                return 404, {}, {"error": {"message": f"no file {file_id}", "type": "invalid_request_error"}}
            return 200, {}, self.files[file_id]
        if path.endswith("/batches") and method == "POST":
            return self._create(json.loads(body or b"{}"))
        if path.endswith("/batches") and method == "GET":  # the most recent first, one page
            jobs = [_public(job) for job in reversed(list(self.jobs.values()))]
            return 200, {}, {"object": "list", "data": jobs, "has_more": False,
                             "first_id": jobs[0]["id"] if jobs else None, "last_id": jobs[-1]["id"] if jobs else None}
        if "/batches/" in path and method == "GET":
            return self._poll(path.rsplit("/", 1)[-1])
        return await super()._respond(method, path, headers, body)

    def _upload(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], Any]:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + headers.get("content-type", "").encode() + b"\r\n\r\n" + body)
        fields: dict[str, bytes] = {}
        for part in message.iter_parts():
            fields[part.get_param("name", header="content-disposition")] = part.get_payload(decode=True)
        if fields.get("purpose") != b"batch" or "file" not in fields:
            return 400, {}, {"error": {"message": "expected purpose=batch and a file", "type": "invalid_request_error"}}
        file_id = self._next_id("file")
        self.files[file_id] = fields["file"]
        self.uploads += 1
        return 200, {}, {"id": file_id, "object": "file", "bytes": len(fields["file"]), "created_at": int(time.time()),
                         "filename": "batch.jsonl", "purpose": "batch", "status": "processed"}

    def _create(self, request: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        data = self.files.get(request.get("input_file_id", ""))
        if data is None:
            return 404, {}, {"error": {"message": "no such input file", "type": "invalid_request_error"}}
        lines = [json.loads(line) for line in data.splitlines() if line.strip()]
        if self.max_requests is not None and len(lines) > self.max_requests:
            return 400, {}, {"error": {"message": f"at most {self.max_requests} requests per batch",
                                       "type": "invalid_request_error"}}
        if any(line.get("url") != request.get("endpoint") for line in lines):
            return 400, {}, {"error": {"message": "every line must use the batch's endpoint", "type": "error"}}
        job = {"id": self._next_id("batch"), "object": "batch", "endpoint": request.get("endpoint"),
               "errors": None, "input_file_id": request["input_file_id"],
               "completion_window": request.get("completion_window", "24h"), "status": "validating",
               "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
               "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
               "metadata": request.get("metadata"), "lines": lines, "polls": 0,
               "expire": self._expire.pop(0) if self._expire else None,
               "fail": self._fail.pop(0) if self._fail else None}
        self.jobs[job["id"]] = job
        return 200, {}, _public(job)

    def _poll(self, job_id: str) -> tuple[int, dict[str, str], Any]:
        job = self.jobs.get(job_id)
        if job is None:
            return 404, {}, {"error": {"message": f"no batch {job_id}", "type": "invalid_request_error"}}
        self.polls += 1
        job["polls"] += 1
        if job["status"] not in ("completed", "failed", "expired") and job["polls"] % self.steps == 0:
            self._advance(job)
        return 200, {}, _public(job)

    def _advance(self, job: dict[str, Any]) -> None:
        status = job["status"]
        if status == "validating":
            if job["fail"]:
                job["status"] = "failed"
                job["errors"] = {"object": "list", "data": [{"code": "invalid_request", "message": job["fail"],
                                                             "line": 1, "param": None}]}
            else:
                job["status"] = "in_progress"
        elif status == "in_progress" and not self.hold:
            job["status"] = "finalizing"
        elif status == "finalizing":
            self._finish(job)

    def _finish(self, job: dict[str, Any]) -> None:
        out, err = [], []
        for i, line in enumerate(job["lines"]):
            base = {"id": f"batch_req_{job['id']}_{i}", "custom_id": line["custom_id"]}
            content = _content(line["body"])
            if job["expire"] is not None and i >= job["expire"]:
                err.append({**base, "response": None, "error": {
                    "code": "batch_expired",
                    "message": "This request could not be executed before the completion window expired."}})
            elif content in self.fail_contents:
                err.append({**base, "response": {"status_code": 400, "request_id": f"req_{i}", "body": {
                    "error": {"message": f"bad request: {content}", "type": "invalid_request_error"}}},
                    "error": None})
            else:
                with self._lock:
                    self.answered.append(content)
                out.append({**base, "response": {"status_code": 200, "request_id": f"req_{i}",
                                                 "body": self._answer(line["url"], line["body"])}, "error": None})
        for lines, key in ((out, "output_file_id"), (err, "error_file_id")):
            if lines:
                file_id = self._next_id("file")
                self.files[file_id] = "".join(json.dumps(x) + "\n" for x in lines).encode()
                job[key] = file_id
        job["request_counts"] = {"total": len(job["lines"]), "completed": len(out), "failed": len(err)}
        job["status"] = "expired" if job["expire"] is not None else "completed"


def _public(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k not in ("lines", "polls", "expire", "fail")}
