"""Human-evaluation website (FastAPI TestClient, no port) and the ratings summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from drover.cli import main
from drover.human.app import create_app
from drover.human.instances import load_instances
from drover.human.ratings import format_summary, summarize_ratings
from drover.shipped import data_path

TULU = data_path("tulu_human_eval", "eval_instances_tulu_1.jsonl")


def write_instances(path: Path, n: int = 6) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"q{i}", "prompt": f"Question {i} <b>&</b>?", "completions": [
                {"model": "alpha", "completion": f"alpha answer {i}"},
                {"model": "beta", "completion": f"beta answer {i}"}]}) + "\n")
    return path


def shown_models(client: TestClient, rater: str) -> tuple[str, dict]:
    data = client.get("/api/next", params={"rater": rater}).json()
    inst = data["instance"]
    return ("alpha" if inst["completion_a"].startswith("alpha") else "beta"), inst


@pytest.fixture
def app_files(tmp_path):
    return write_instances(tmp_path / "inst.jsonl"), tmp_path / "ratings.jsonl"


def test_shipped_tulu_instances_load():
    instances = load_instances(TULU)
    assert len(instances) == 996 and len({i.key for i in instances}) == 996
    assert {i.models for i in instances} == {("tulu_65B", "chatgpt"), ("tulu_7B", "tulu_65B"),
                                             ("tulu_human_only_65B", "tulu_65B")}


def test_page_is_self_contained_and_escapes(app_files):
    instances, ratings = app_files
    client = TestClient(create_app(instances, ratings, seed=1))
    welcome = client.get("/")
    assert welcome.status_code == 200 and 'name="rater"' in welcome.text
    page = client.get("/", params={"rater": "alice"})
    assert page.status_code == 200
    text = page.text
    assert "Question 0 &lt;b&gt;&amp;&lt;/b&gt;?" in text and "<b>&</b>" not in text
    assert "alpha answer 0" in text and "beta answer 0" in text
    assert "0 / 6 rated" in text
    for marker in ("<script", "<link", "http://", "https://", "src="):
        assert marker not in text
    assert text.count('name="preference"') == 5


def test_rating_flow_is_recorded_and_resumable(app_files):
    instances, ratings = app_files
    app = create_app(instances, ratings, seed=3)
    client = TestClient(app)
    a_model, inst = shown_models(client, "alice")
    assert inst["id"] == "q0"
    resp = client.post("/rate", data={"rater": "alice", "instance": inst["key"], "acceptable_a": "yes",
                                      "acceptable_b": "no", "preference": "a_slightly"}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "./?rater=alice"
    lines = ratings.read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    b_model = "beta" if a_model == "alpha" else "alpha"
    assert rec["rater"] == "alice" and rec["instance_id"] == "q0" and rec["shown"] == [a_model, b_model]
    assert rec["acceptable"] == {a_model: True, b_model: False}
    assert rec["score"] == (1 if a_model == "alpha" else -1)  # from alpha's (the first model's) side
    # the next page shows the next instance; another rater still starts at the first one
    assert "Question 1 " in client.get("/", params={"rater": "alice"}).text
    assert client.get("/api/next", params={"rater": "bob"}).json()["instance"]["id"] == "q0"
    # submitting the same instance twice does not add a second line
    client.post("/rate", data={"rater": "alice", "instance": inst["key"], "acceptable_a": "yes",
                               "acceptable_b": "yes", "preference": "tie"})
    assert len(ratings.read_text().splitlines()) == 1
    app.state.human_eval.store.close()
    # a new server on the same files resumes at alice's next unrated instance
    client2 = TestClient(create_app(instances, ratings, seed=3))
    assert client2.get("/api/next", params={"rater": "alice"}).json()["instance"]["id"] == "q1"
    assert shown_models(client2, "bob")[0] == a_model  # same seed -> same A/B order


def test_invalid_submission_is_rejected_without_writing(app_files):
    instances, ratings = app_files
    client = TestClient(create_app(instances, ratings))
    _, inst = shown_models(client, "carol")
    resp = client.post("/rate", data={"rater": "carol", "instance": inst["key"], "acceptable_a": "yes",
                                      "acceptable_b": "no"})
    assert resp.status_code == 400 and "please choose which response is better" in resp.text
    resp = client.post("/api/ratings", json={"rater": "carol", "instance": "nope", "acceptable_a": True,
                                             "acceptable_b": True, "preference": "tie"})
    assert resp.status_code == 400 and "unknown instance" in resp.json()["error"]
    resp = client.post("/rate", data={"rater": "  ", "instance": inst["key"]})
    assert resp.status_code == 400
    assert not ratings.exists() or ratings.read_text() == ""


def test_order_is_randomised_per_instance_and_seeded(tmp_path):
    instances = write_instances(tmp_path / "inst.jsonl", n=40)
    orders = {}
    for seed in (0, 0, 1):
        loaded = load_instances(instances)
        orders.setdefault(seed, []).append([i.shown_order(seed) for i in loaded])
    assert orders[0][0] == orders[0][1]
    assert orders[0][0] != orders[1][0]
    flips = sum(o == (1, 0) for o in orders[0][0])
    assert 5 < flips < 35


def test_summary_acceptance_and_win_tie_loss(app_files, capsys):
    instances, ratings = app_files
    client = TestClient(create_app(instances, ratings, seed=7))
    # alice: alpha clearly better, slightly better, tie, beta slightly better; bob: alpha clearly worse
    wanted = [("alice", 2), ("alice", 1), ("alice", 0), ("alice", -1), ("bob", -2)]
    accept_alpha = [True, True, False, True, False]
    accept_beta = [False, True, True, True, True]
    key_for = {2: "clearly", 1: "slightly"}
    for (rater, score), ok_alpha, ok_beta in zip(wanted, accept_alpha, accept_beta):
        a_model, inst = shown_models(client, rater)
        a_score = score if a_model == "alpha" else -score
        pref = "tie" if a_score == 0 else (f"a_{key_for[a_score]}" if a_score > 0 else f"b_{key_for[-a_score]}")
        ok_a, ok_b = (ok_alpha, ok_beta) if a_model == "alpha" else (ok_beta, ok_alpha)
        r = client.post("/api/ratings", json={"rater": rater, "instance": inst["key"], "acceptable_a": ok_a,
                                              "acceptable_b": ok_b, "preference": pref})
        assert r.status_code == 200, r.text
    summary = summarize_ratings(ratings)
    assert summary["ratings"] == 5 and summary["raters"] == {"alice": 4, "bob": 1}
    assert summary["acceptance"]["alpha"] == {"rated": 5, "acceptable": 3, "rate": 0.6}
    assert summary["acceptance"]["beta"] == {"rated": 5, "acceptable": 4, "rate": 0.8}
    pair = summary["pairs"]["alpha vs beta"]
    assert (pair["wins"], pair["ties"], pair["losses"]) == (2, 1, 2)
    assert pair["levels"] == {"clearly better": 1, "slightly better": 1, "tie": 1, "slightly worse": 1,
                              "clearly worse": 1}
    assert client.get("/api/summary").json()["pairs"]["alpha vs beta"]["wins"] == 2
    assert main(["human-eval", "--summary", str(ratings)]) == 0
    out = capsys.readouterr().out
    assert "alpha vs beta: win 2 / tie 1 / loss 2" in out and "60.0%" in out
    assert format_summary(summary) == out.strip()


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": 1, "prompt": "p", "completions": [{"model": "m", "completion": "c"}]}) + "\n")
    assert main(["human-eval", "--instances", str(bad), "--out", str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{bad}:1: completions: expected 2 completions" in err
    ratings = tmp_path / "r2.jsonl"
    ratings.write_text('{"id": "x", "rater": "a", "models": ["m", "n"], "acceptable": {"m": true}, "score": 1}\n')
    assert main(["human-eval", "--summary", str(ratings)]) == 2
    assert f"{ratings}:1: acceptable.n: expected true or false" in capsys.readouterr().err
    assert main(["human-eval"]) == 2
    assert "--out" in capsys.readouterr().err


def test_rater_name_with_markup_is_escaped_and_round_trips(app_files):
    instances, ratings = app_files
    client = TestClient(create_app(instances, ratings))
    name = 'eve "<x>"'
    page = client.get("/", params={"rater": name}).text
    assert 'value="eve &quot;&lt;x&gt;&quot;"' in page and "<x>" not in page
    _, inst = shown_models(client, name)
    resp = client.post("/rate", data={"rater": name, "instance": inst["key"], "acceptable_a": "no",
                                      "acceptable_b": "no", "preference": "tie"}, follow_redirects=True)
    assert resp.status_code == 200 and "1 / 6 rated" in resp.text
    assert json.loads(ratings.read_text())["rater"] == name
