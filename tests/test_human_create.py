"""`drover human create / results / export`: matching, assignment, one-line errors, records."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from human_helpers import make_study, pg_url, write_outputs

from drover.cli import main
from drover.human.create import StudyConfig, assign
from drover.human.store import Study
from drover.records import read_ranked
from drover.results import iter_results


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_create_matches_by_id_and_reports_mismatches(tmp_path, capsys):
    a = write_outputs(tmp_path, 5, "modelA", ids=["p1", "p2", "p3", "p4", "only-a"])
    b = write_outputs(tmp_path, 5, "modelB", ids=["p1", "p2", "p3", "only-b", "p4"])
    # p4 has a different prompt in B (line 5 holds i=4 in both files, but p4 is i=3 in A)
    code, out, err = run_cli(["human", "create", "--a", str(a), "--b", str(b), "--raters", "alice,bob",
                              "--out", str(tmp_path / "s")], capsys)
    assert code == 0, err
    assert "matched 3 prompts" in out and "only in modelA: 1 (only-a)" in out and "only in modelB: 1 (only-b)" in out
    assert "same id, different prompt (left out): 1 (p4)" in out
    s = Study(tmp_path / "s")
    assert [i.id for i in s.items()] == ["p1", "p2", "p3"] and (s.name_a, s.name_b) == ("modelA", "modelB")
    assert s.items()[0].output_a == "modelA says 0" and s.items()[0].output_b == "modelB says 0"
    invites = (tmp_path / "s" / "invites.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in invites] == ["alice", "bob", "admin"]
    assert (tmp_path / "s" / "invites.txt").stat().st_mode & 0o077 == 0
    token = invites[0].split("\t")[1]
    assert token not in (tmp_path / "s" / "study.sqlite").read_bytes().decode("latin-1")  # only hashes stored


def test_create_matches_by_prompt(tmp_path, capsys):
    a = write_outputs(tmp_path, 3, "x", ids=["a1", "a2", "a3"])
    b = write_outputs(tmp_path, 2, "y", ids=["zz", "yy"])
    code, out, _ = run_cli(["human", "create", "--a", str(a), "--b", str(b), "--match", "prompt", "--out",
                            str(tmp_path / "s")], capsys)
    assert code == 0 and "matched 2 prompts" in out and "only in x: 1 (a3)" in out
    assert [i.id for i in Study(tmp_path / "s").items()] == ["a1", "a2"]


def test_assignment_gives_k_raters_per_item_and_an_overlap_set():
    cfg = StudyConfig(a="", b="", out="", raters=["r1", "r2", "r3", "r4"], per_item=1, overlap=5, overlap_raters=2,
                      seed=3)
    plan = assign(41, cfg)
    per_item = Counter(index for _, index, _ in plan)
    assert sorted(Counter(per_item.values()).items()) == [(1, 36), (2, 5)]
    load = Counter(rater for rater, _, _ in plan)
    assert max(load.values()) - min(load.values()) <= 1 and sum(load.values()) == 46
    assert len({(r, i) for r, i, _ in plan}) == len(plan)
    swaps = [s for _, _, s in plan]
    assert 0 < sum(swaps) < len(swaps)  # both display orders occur
    assert assign(41, cfg) == plan  # deterministic in the seed
    everyone = assign(10, StudyConfig(a="", b="", out="", raters=["a", "b", "c"], per_item=2, overlap=3))
    assert sorted(Counter(Counter(i for _, i, _ in everyone).values()).items()) == [(2, 7), (3, 3)]


@pytest.mark.parametrize("extra,expected", [
    (["--form", "hh"], "unknown form 'hh' (did you mean 'hhh'?)"),
    (["--raters", "alice,alice"], "--raters: a name is given twice"),
    (["--raters", "al ice"], "is not a valid rater name"),
    (["--per-item", "3"], "--per-item must be between 1 and the number of raters (2)"),
    (["--overlap", "2", "--overlap-raters", "1"], "--overlap-raters must be between 2"),
    (["--db", "nosuchdialect://x"], "database URL nosuchdialect://x"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, extra, expected):
    a, b = write_outputs(tmp_path, 2, "a"), write_outputs(tmp_path, 2, "b")
    code, _, err = run_cli(["human", "create", "--a", str(a), "--b", str(b), "--out", str(tmp_path / "s"), *extra],
                           capsys)
    assert code == 2 and expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_input_files_name_file_line_and_field(tmp_path, capsys):
    good = write_outputs(tmp_path, 2, "good")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "q0", "messages": [{"role": "user", "content": "hi"},
                                                        {"role": "assistant", "content": "ok"}]}) + "\n"
                   + json.dumps({"id": "q1", "prompt": "old format"}) + "\n")
    code, _, err = run_cli(["human", "create", "--a", str(good), "--b", str(bad), "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and f"{bad}:2: prompt: unknown field" in err
    bad.write_text(json.dumps({"id": "q0", "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    code, _, err = run_cli(["human", "create", "--a", str(good), "--b", str(bad), "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and f"{bad}:1: messages: record 'q0' has no assistant turn" in err
    dup = write_outputs(tmp_path, 2, "dup", ids=["q0", "q0"])
    code, _, err = run_cli(["human", "create", "--a", str(dup), "--b", str(good), "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and f"{dup}:2: id: duplicate id 'q0' (first on line 1)" in err
    other = write_outputs(tmp_path, 2, "other", ids=["x", "y"])
    code, _, err = run_cli(["human", "create", "--a", str(good), "--b", str(other), "--out", str(tmp_path / "s")],
                           capsys)
    assert code == 2 and "no prompt is in both files" in err
    assert not (tmp_path / "s" / "study.json").exists()
    for argv, expected in [(["human", "serve", str(tmp_path / "nope")], "not a study (no study.json)"),
                           (["human", "results", str(tmp_path)], "not a study"),
                           (["human", "serve", str(tmp_path), "--port", "0"], "--port must be between 1 and 65535")]:
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and expected in err


def test_create_refuses_an_existing_study(tmp_path, capsys):
    directory, _ = make_study(tmp_path)
    a, b = tmp_path / "sysa.jsonl", tmp_path / "sysb.jsonl"
    code, _, err = run_cli(["human", "create", "--a", str(a), "--b", str(b), "--out", str(directory)], capsys)
    assert code == 2 and "a study exists there already" in err


def test_results_and_export_from_saved_answers(tmp_path, capsys):
    directory, _ = make_study(tmp_path, "tulu", n=3, raters=("alice", "bob"), overlap=3)
    s = Study(directory)
    # alice prefers system a on q0 and q1, bob agrees on q0, calls q1 a tie; q2: both prefer b; bob flags nothing
    votes = {("alice", "q0"): 2, ("bob", "q0"): 1, ("alice", "q1"): 1, ("bob", "q1"): 0,
             ("alice", "q2"): -2, ("bob", "q2"): -1}
    for (rater, item), score in votes.items():
        s.save(rater, item, 0, {"acceptable_a": score > 0, "acceptable_b": score <= 0, "preference": score}, "", [])
    s.save("bob", "q1", 1, {"acceptable_a": True, "acceptable_b": True, "preference": 0}, "still a tie", [])
    code, out, err = run_cli(["human", "results", str(directory), "--out", str(tmp_path / "r.json"),
                              "--run", str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert "preference: win 50.0% / tie 16.7% / loss 33.3% (n = 3 items, 6 ratings)" in out
    full = json.loads((tmp_path / "r.json").read_text())
    assert full["questions"]["preference"]["agreement"]["tie_discounted_accuracy"] == pytest.approx((1 + 0.5 + 1) / 3)
    [record] = iter_results(tmp_path / "run", kind="human")
    assert record["name"] == "human-tulu-vs-sysb" and record["model"]["label"] == "sysa"
    assert record["metrics"]["preference.win"] == pytest.approx(0.5) and record["n_examples"] == 6
    code, _, _ = run_cli(["human", "results", str(directory), "--format", "csv", "--out", str(tmp_path / "r.csv")],
                         capsys)
    assert code == 0 and "agreement,preference,,tie_discounted_accuracy," in (tmp_path / "r.csv").read_text()
    code, out, _ = run_cli(["human", "export", str(directory), "--out", str(tmp_path / "prefs.jsonl")], capsys)
    assert code == 0 and "3 Ranked records" in out
    records = {r.id: r for r in read_ranked(tmp_path / "prefs.jsonl")}
    assert [r.source for r in records["q0"].responses] == ["sysa", "sysb"]
    assert records["q0"].responses[0].score == pytest.approx(1.5)
    assert records["q1"].responses[0].source == "sysa" and records["q1"].responses[0].score == pytest.approx(0.5)
    assert [r.source for r in records["q2"].responses] == ["sysb", "sysa"]
    assert records["q2"].pairs() == [(0, 1)] and records["q2"].messages[-1].content == "Question 2?"
    code, _, err = run_cli(["human", "export", str(directory), "--out", str(tmp_path / "x.jsonl"), "--question",
                            "acceptable_a"], capsys)
    assert code == 2 and "not a preference question" in err


def test_schema_is_versioned_and_a_newer_one_refused(tmp_path):
    from sqlalchemy import insert

    from drover.errors import ConfigError
    from drover.human import db

    directory, _ = make_study(tmp_path)
    s = Study(directory)
    with s.engine.begin() as conn:
        assert [v for (v,) in conn.execute(db.schema_version.select())] == list(range(1, db.SCHEMA_VERSION + 1))
        conn.execute(insert(db.schema_version).values(version=db.SCHEMA_VERSION + 1))
    s.close_engine()
    with pytest.raises(ConfigError, match="upgrade drover"):
        Study(directory)


def test_missing_browser_or_database_fails_under_ci(monkeypatch):
    from human_helpers import require

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must install and start it"):
        require("PostgreSQL", False)
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        require("PostgreSQL", False)


def test_a_study_made_before_sessions_is_upgraded_when_opened(tmp_path):
    """A version-1 database (no sessions table: a study created by the drover before sign-in
    sessions) is migrated when opened, and its raters sign in and out."""
    from sqlalchemy import delete, inspect

    from drover.human import db
    from drover.human.tokens import hash_token

    directory, tokens = make_study(tmp_path)
    s = Study(directory)
    with s.engine.begin() as conn:  # back to version 1
        db.sessions.drop(conn)
        conn.execute(delete(db.schema_version).where(db.schema_version.c.version > 1))
    s.close_engine()
    s = Study(directory)
    try:
        with s.engine.begin() as conn:
            assert inspect(conn).has_table("sessions")
            assert [v for (v,) in conn.execute(db.schema_version.select())] == list(range(1, db.SCHEMA_VERSION + 1))
        rater = next(name for name in tokens if name != "admin")
        session = s.open_session(rater)
        assert s.rater_for_session(session).name == rater and s.rater_for_session(tokens[rater]) is None
        s.close_session(session)
        assert s.rater_for_session(session) is None
        stale = s.open_session(rater)
        with s.engine.begin() as conn:  # signed in longer ago than a session lasts
            conn.execute(db.sessions.update().values(created="2000-01-01T00:00:00Z"))
        assert s.rater_for_session(stale) is None
        s.open_session(rater)  # the next sign-in deletes the expired session
        with s.engine.begin() as conn:
            assert conn.execute(db.sessions.select().where(db.sessions.c.token_hash == hash_token(stale))).first() is None
    finally:
        s.close_engine()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_study_made_before_sessions_opened_by_many_at_once_is_upgraded_once(tmp_path, backend):
    """After an upgrade every open of a version-1 study migrates it: the server and a
    `drover human results` started together both did, and on PostgreSQL the loser failed
    ("relation sessions already exists" / a duplicate schema_version row). Migrations queue."""
    import threading

    from sqlalchemy import delete

    from drover.human import db

    directory, _ = make_study(tmp_path, db=pg_url() if backend == "postgresql" else "")
    for _ in range(3):
        s = Study(directory)
        with s.engine.begin() as conn:  # back to version 1
            db.sessions.drop(conn)
            conn.execute(delete(db.schema_version).where(db.schema_version.c.version > 1))
        s.close_engine()
        start, errors = threading.Barrier(4), []

        def open_study() -> None:
            start.wait()
            try:
                Study(directory).close_engine()
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                errors.append(exc)

        threads = [threading.Thread(target=open_study) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        s = Study(directory)
        with s.engine.begin() as conn:
            versions = sorted(v for (v,) in conn.execute(db.schema_version.select()))
        assert versions == list(range(1, db.SCHEMA_VERSION + 1))
        s.close_engine()
