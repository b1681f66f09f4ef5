"""Batch mode against a fake provider batch API: jobs cut by the provider's limits,
answers mapped back by custom id into the same cache, cost at the batch price, partial
failures, failed and expired jobs (their requests submitted again by the next run), and
a process killed while its job is in progress resuming by polling the same job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drover.config import from_dict
from drover.errors import ConfigError
from drover.llm.batch import custom_id
from drover.llm.client import LLM
from drover.llm.config import LLMConfig
from drover.llm.fake_batch import FakeBatchServer
from drover.completions import Request


@pytest.fixture
def server():
    with FakeBatchServer() as srv:
        yield srv


def _config(server: FakeBatchServer, **overrides) -> LLMConfig:
    fields = {"mode": "batch", "batch_poll_interval": 0.01, "backoff_base": 0.01, "backoff_max": 0.05,
              "max_retries": 2, "price_input_per_1k": 10.0, "price_output_per_1k": 30.0}
    fields.update(overrides)
    return LLMConfig.from_spec(f"{server.base_url}#fake", **fields)


def _chats(n: int, prefix: str = "q") -> list[Request]:
    return [Request.chat([{"role": "user", "content": f"{prefix}{i}"}], key=f"id{i}") for i in range(n)]


def _journal(tmp_path: Path) -> list[dict]:
    files = list((tmp_path / "llm-batches").glob("*.json"))
    assert len(files) == 1
    return json.loads(files[0].read_text())["jobs"]


def test_jobs_split_by_request_limit_answers_cached_at_batch_price(server, tmp_path):
    server.max_requests = 10  # the provider refuses bigger jobs: the client must split
    cache = tmp_path / "llm-cache.sqlite"
    with LLM(_config(server, batch_max_requests=10), cache, progress=False) as llm:
        out = list(llm.run(_chats(25)))
        stats = llm.stats
    assert [c.text for c in out] == [f"answer: q{i}" for i in range(25)]
    assert [c.key for c in out] == [f"id{i}" for i in range(25)]
    assert sorted(server.job_sizes()) == [5, 10, 10] and server.uploads == 3
    assert len(server.requests) == 0  # nothing went to the synchronous endpoints
    # Fake usage: 1 prompt token + 3 completion tokens per request; half the listed price.
    assert stats.prompt_tokens == 25 and stats.completion_tokens == 75
    assert stats.cost == pytest.approx(0.5 * (25 * 10.0 + 75 * 30.0) / 1000)
    jobs = _journal(tmp_path)
    assert len(jobs) == 3 and all(j["collected"] and j["status"] == "completed" for j in jobs)
    # The same requests again: all from the cache, no new job.
    with LLM(_config(server, batch_max_requests=10), cache, progress=False) as llm:
        again = list(llm.run(_chats(25)))
    assert all(c.cached for c in again) and [c.text for c in again] == [c.text for c in out]
    assert len(server.jobs) == 3
    # Synchronous mode reads the same cache entries (same requests, same keys).
    with LLM(_config(server, mode="sync"), cache, progress=False) as llm:
        assert all(c.cached for c in llm.run(_chats(25)))


def test_jobs_split_by_file_bytes(server, tmp_path):
    line = len(json.dumps({"custom_id": custom_id("/v1/chat/completions", {}), "method": "POST",
                           "url": "/v1/chat/completions", "body": {}}))
    limit = 4 * (line + 120)  # room for a few requests per file
    with LLM(_config(server, batch_max_bytes=limit), tmp_path / "c.sqlite", progress=False) as llm:
        out = list(llm.run(_chats(20)))
    assert all(c.ok for c in out)
    assert len(server.jobs) >= 4 and sum(server.job_sizes()) == 20
    assert all(len(server.files[j["input_file_id"]]) <= limit for j in server.jobs.values())


def test_partial_failures_are_errors_and_the_next_run_submits_only_them(server, tmp_path):
    server.fail_contents = {"q3", "q7"}
    cache = tmp_path / "c.sqlite"
    with LLM(_config(server), cache, progress=False) as llm:
        out = list(llm.run(_chats(10)))
        assert llm.stats.errors == 2
    assert [i for i, c in enumerate(out) if not c.ok] == [3, 7]
    assert "HTTP 400: bad request: q3" in out[3].error
    server.fail_contents = set()
    with LLM(_config(server), cache, progress=False) as llm:
        again = list(llm.run(_chats(10)))
    assert all(c.ok for c in again) and server.job_sizes() == [10, 2]


def test_an_expired_job_keeps_what_it_answered(server, tmp_path):
    server.expire_next(4)
    cache = tmp_path / "c.sqlite"
    with LLM(_config(server), cache, progress=False) as llm:
        out = list(llm.run(_chats(10)))
    assert [c.ok for c in out] == [True] * 4 + [False] * 6
    assert "batch_expired" in out[5].error
    assert _journal(tmp_path)[0]["status"] == "expired"
    with LLM(_config(server), cache, progress=False) as llm:
        again = list(llm.run(_chats(10)))
    assert all(c.ok for c in again) and server.job_sizes() == [10, 6]


def test_a_failed_job_fails_its_requests_with_the_reason(server, tmp_path):
    server.fail_next("model not available in batch")
    with LLM(_config(server), tmp_path / "c.sqlite", progress=False) as llm:
        out = list(llm.run(_chats(3)))
    assert all(not c.ok and "failed (model not available in batch)" in c.error for c in out)


def test_n_samples_sent_one_by_one_join_the_same_job(server, tmp_path):
    requests = [Request.chat([("user", f"s{i}")], n=3, temperature=1.0, seed=5) for i in range(4)]
    with LLM(_config(server, supports_n=False), tmp_path / "c.sqlite", progress=False) as llm:
        out = list(llm.run(requests))
    assert [len(c.choices) for c in out] == [3] * 4 and server.job_sizes() == [12]
    from drover.llm.openai_backend import prompt_seed

    assert out[0].choices[1].text == f"answer: s0 seed={prompt_seed(5, requests[0]) + 1}"


def test_batch_mode_config_is_checked():
    with pytest.raises(ConfigError, match="openai backend"):
        from_dict(LLMConfig, {"backend": "hf", "model": "x", "mode": "batch"})
    with pytest.raises(ConfigError, match="one base_url"):
        LLMConfig.from_spec("http://a/v1,http://b/v1#m", mode="batch")
    with pytest.raises(ConfigError, match="not one of"):
        from_dict(LLMConfig, {"model": "m", "mode": "bulk"})


_CHILD = """
import sys
from drover.llm.client import LLM
from drover.llm.config import LLMConfig
from drover.completions import Request
config = LLMConfig.from_spec(sys.argv[1] + "#fake", mode="batch", batch_poll_interval=0.01)
with LLM(config, sys.argv[2], progress=False) as llm:
    list(llm.run([Request.chat([("user", f"k{i}")]) for i in range(30)]))
print("finished")
"""


def test_killed_while_a_job_is_in_progress_resumes_by_polling_the_same_job(server, tmp_path):
    server.hold = True
    cache = tmp_path / "llm-cache.sqlite"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, server.base_url, str(cache)],
                             env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (server.jobs and list(server.jobs.values())[0]["status"] == "in_progress"
                   and server.polls >= 3):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never got its job in progress"
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    jobs = _journal(tmp_path)
    assert len(jobs) == 1 and not jobs[0]["collected"] and len(jobs[0]["custom_ids"]) == 30
    uploads = server.uploads
    server.hold = False
    with LLM(_config(server), cache, progress=False) as llm:
        out = list(llm.run([Request.chat([("user", f"k{i}")]) for i in range(30)]))
        backend = llm._backend
    assert [c.text for c in out] == [f"answer: k{i}" for i in range(30)]
    assert server.uploads == uploads and len(server.jobs) == 1  # polled the same job, paid once
    assert backend.jobs_resumed == 1 and backend.jobs_created == 0
    assert _journal(tmp_path)[0]["collected"]


def test_two_clients_of_one_model_keep_each_others_jobs(server, tmp_path):
    server.hold = True
    cache = tmp_path / "c.sqlite"
    import threading

    first = LLM(_config(server), cache, progress=False)
    second = LLM(_config(server), cache, progress=False)
    results: dict[str, list] = {}
    threads = [threading.Thread(target=lambda name=name, llm=llm: results.setdefault(name, list(llm.run(_chats(3, name)))))
               for name, llm in (("a", first), ("b", second))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120  # two clients starting up in threads: slow on a loaded machine
    journal = tmp_path / "llm-batches"
    while not (len(server.jobs) == 2 and all(j["status"] == "in_progress" for j in server.jobs.values())
               and journal.is_dir() and len(_journal(tmp_path)) == 2):
        assert time.monotonic() < deadline, "both jobs journaled, neither overwriting the other"
        time.sleep(0.01)
    server.hold = False
    for thread in threads:
        thread.join(120)
        assert not thread.is_alive(), "a client never collected its job"
    first.close()
    second.close()
    assert all(c.ok for c in results["a"] + results["b"]) and all(j["collected"] for j in _journal(tmp_path))


def test_killed_between_upload_and_create_adopts_the_job_instead_of_paying_twice(server, tmp_path, monkeypatch):
    from drover.llm import batch as batch_module

    cache = tmp_path / "c.sqlite"
    original = batch_module.BatchBackend._create

    async def created_then_killed(self, job, adopt):
        await original(self, job, adopt)
        raise RuntimeError("killed")  # the job exists at the provider; the journal still says id null

    monkeypatch.setattr(batch_module.BatchJournal, "save", _save_only_uploads(batch_module.BatchJournal.save))
    monkeypatch.setattr(batch_module.BatchBackend, "_create", created_then_killed)
    with LLM(_config(server), cache, progress=False) as llm:
        assert all("killed" in c.error for c in llm.run(_chats(4)))
    assert len(server.jobs) == 1 and _journal(tmp_path)[0]["id"] is None
    monkeypatch.undo()
    with LLM(_config(server), cache, progress=False) as llm:
        out = list(llm.run(_chats(4)))
        assert llm._backend.jobs_resumed == 1 and llm._backend.jobs_created == 0
    assert all(c.ok for c in out) and len(server.jobs) == 1 and server.uploads == 1
    assert _journal(tmp_path)[0]["id"] == next(iter(server.jobs))


def _save_only_uploads(save):
    """A journal that is killed before it records the job id (it keeps the upload)."""
    def wrapped(self):
        if all(job.get("id") is None for job in self.jobs):
            save(self)
    return wrapped


def test_unseeded_samples_of_one_prompt_are_separate_batch_requests(server, tmp_path):
    """k independent samples of a prompt with no seed send the same body: keyed by the body
    alone they were one request in the job, and its one answer came back as all k samples."""
    requests = [Request.chat([("user", "same")], sample_index=k, temperature=1.0) for k in range(3)]
    with LLM(_config(server), tmp_path / "c.sqlite", progress=False) as llm:
        out = list(llm.run(requests))
    assert all(c.ok for c in out) and server.job_sizes() == [3]
    ids = [line["custom_id"] for job in server.jobs.values() for line in job["lines"]]
    assert len(set(ids)) == 3
