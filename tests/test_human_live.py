"""`drover human serve` as a real server on 127.0.0.1: restarts lose nothing, and a bounded
load test (50 simulated raters submitting concurrently for a fixed time) loses or
duplicates no answer, on SQLite and on PostgreSQL."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterator

import httpx
import pytest
from human_helpers import LiveServer, csrf_of, make_study, pg_url, version_of

from drover.errors import ConfigError
from drover.human.store import Study

LOAD_RATERS = 50
LOAD_SECONDS = 4.0


@contextlib.contextmanager
def signed_in(server: LiveServer, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        page = client.get("/login", params={"token": token})
        assert client.post("/login", data={"token": token, "csrf": csrf_of(page.text)}).status_code == 303
        yield client


def answer(client: httpx.Client, item: int, preference: str) -> httpx.Response:
    page = client.get(f"/item/{item}").text
    return client.post(f"/item/{item}", data={"csrf": csrf_of(page), "version": version_of(page),
                                              "acceptable_a": "yes", "acceptable_b": "no", "preference": preference})


def test_a_server_restart_mid_study_loses_nothing(tmp_path):
    directory, tokens = make_study(tmp_path, "tulu", n=4, raters=("alice",))
    plan = Study(directory).assignments("alice")
    items = [a.item_position for a in plan]
    server = LiveServer(directory).start()
    try:
        with signed_in(server, tokens["alice"]) as client:
            assert answer(client, items[0], "2").status_code == 303
            assert answer(client, items[1], "-1").status_code == 303
            server.proc.kill()  # no graceful shutdown at all
            server.proc.wait(20)
            server.stop()
            server.start()
            # the same browser session carries on: resumes at the first unanswered item, answers intact
            assert client.get("/").headers["location"] == f"/item/{items[2]}"
            page = client.get(f"/item/{items[1]}").text
            assert version_of(page) == "1" and "2 answered" in page
            assert answer(client, items[1], "0").status_code == 303  # and the edit after the restart is v2
    finally:
        server.stop()
    study = Study(directory)
    assert [h.version for h in study.history("alice", plan[1].item_id)] == [1, 2]
    assert len(study.all_answers()) == 2


def _load(directory, tokens: dict[str, str]) -> tuple[dict, list[str]]:
    """Every rater thread submits (new answers and edits) until the deadline (and at least once:
    how many get through in the time depends on the machine's load); returns what
    the server acknowledged, per (rater, item) in order, and any failure."""
    study = Study(directory)
    plans = {r: [a for a in study.assignments(r)] for r in tokens if r != "admin"}
    study.close_engine()
    acked: dict[tuple[str, str], list[tuple[int, int, bool]]] = defaultdict(list)
    failures: list[str] = []
    server = LiveServer(directory).start()
    start = threading.Barrier(len(plans), timeout=120)  # a rater that cannot sign in breaks it: a failure, not a hang

    def rater(name: str) -> None:
        rng = random.Random(name)
        try:
            with signed_in(server, tokens[name]) as client:
                start.wait()
                deadline = time.monotonic() + LOAD_SECONDS
                give_up = deadline + 60  # on a loaded machine, a rater not yet acknowledged keeps going
                k = mine = 0
                while time.monotonic() < deadline or (mine == 0 and time.monotonic() < give_up):
                    a = plans[name][k % len(plans[name])]
                    k += 1
                    page = client.get(f"/item/{a.item_position}").text
                    shown = rng.choice(["2", "1", "0", "-1", "-2"])
                    r = client.post(f"/item/{a.item_position}", data={
                        "csrf": csrf_of(page), "version": version_of(page), "acceptable_a": "yes",
                        "acceptable_b": "no", "preference": shown})
                    if r.status_code != 303:
                        failures.append(f"{name} {a.item_id}: HTTP {r.status_code}")
                        continue
                    acked[(name, a.item_id)].append((int(version_of(page)) + 1, int(shown), a.swapped))
                    mine += 1
        except Exception as exc:  # reported below, with the rater
            failures.append(f"{name}: {exc!r}")

    threads = [threading.Thread(target=rater, args=(name,)) for name in plans]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        server.stop()
    return acked, failures


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_fifty_concurrent_raters_lose_and_duplicate_nothing(tmp_path, backend):
    url = pg_url() if backend == "postgresql" else ""
    raters = tuple(f"r{i:02d}" for i in range(LOAD_RATERS))
    directory, tokens = make_study(tmp_path, "tulu", n=100, raters=raters, per_item=2, overlap=10, db=url)
    acked, failures = _load(directory, tokens)
    assert not failures, failures[:5]
    submissions = sum(len(v) for v in acked.values())
    assert len({rater for rater, _ in acked}) == LOAD_RATERS, "every simulated rater got answers through"
    study = Study(directory)
    try:
        saved = {(a.rater, a.item_id): a for a in study.all_answers()}
        assert set(saved) == set(acked)  # no answer lost, none that nobody sent
        for key, events in acked.items():
            assert [v for v, _, _ in events] == list(range(1, len(events) + 1))
            history = study.history(*key)
            assert [h.version for h in history] == [v for v, _, _ in events]  # none lost, none twice
            expected = [-shown if swapped else shown for _, shown, swapped in events]
            assert [h.answers["preference"] for h in history] == expected
            assert saved[key].version == len(events) and saved[key].answers["preference"] == expected[-1]
        assert study.history_count() == submissions
    finally:
        study.close_engine()
    print(f"{backend}: {submissions} acknowledged submissions by {LOAD_RATERS} raters in {LOAD_SECONDS} s")


def test_postgresql_study_is_created_once_and_migrated(tmp_path):
    url = pg_url()
    directory, _ = make_study(tmp_path, "hhh", n=2, raters=("alice",), db=url)
    assert Study(directory).url == url and len(Study(directory).items()) == 2
    (tmp_path / "again").mkdir()
    with pytest.raises(ConfigError, match="already holds a study"):
        make_study(tmp_path / "again", "hhh", n=2, raters=("alice",), db=url)
    assert not (tmp_path / "again" / "study" / "study.json").exists()
