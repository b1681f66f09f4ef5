"""Every judge end to end against the real `drover serve` with the tiny model.

The tiny model's verdicts are random (mostly unparseable): what is tested is the
plumbing - prompts reach the server, both orders are judged, failures are counted and
listed, the result JSON and examples JSONL have their documented shape, a re-run costs
zero requests, and a run cut short resumes from its examples file and the LLM cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drover.cli import main

pytestmark = pytest.mark.slow

RESULT_KEYS = {"task", "kind", "model", "judge", "metrics", "primary_metric", "breakdown", "settings", "n_examples",
               "examples_file", "usage", "time_s"}


@pytest.fixture(scope="module")
def judge_spec(tiny_model_dir):
    from drover.infer.server import serve_in_thread

    with serve_in_thread(str(tiny_model_dir)) as url:
        yield f"{url}#tiny"


def _judge(spec: str, run_dir: Path, *args: str) -> dict:
    # seeded: what the random tiny judge says (and so which verdicts parse) is the same every run
    code = main(["judge", *args, "--judge", spec, "--run-dir", str(run_dir), "--max-judge-tokens", "8",
                 "judge_options.seed=0"])
    assert code == 0
    results = sorted((run_dir / "eval").glob("*/*.json"), key=lambda p: p.stat().st_mtime)  # per model
    result = json.loads(results[-1].read_text())
    assert RESULT_KEYS <= set(result) and result["kind"] == "judge"
    assert all(v is None or isinstance(v, float) for v in result["metrics"].values())  # NaN is written as null
    return result


def _examples(run_dir: Path, result: dict) -> list[dict]:
    return [json.loads(line) for line in (run_dir / result["examples_file"]).read_text().splitlines()]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_vicuna_both_orders_rerun_and_resume(judge_spec: str, tmp_path: Path) -> None:
    model = _write_jsonl(tmp_path / "mine.jsonl", [{"question_id": q, "text": f"My answer {q}.", "model_id": "mine"}
                                                   for q in (1, 2)])
    ref = _write_jsonl(tmp_path / "ref.jsonl", [{"question_id": q, "text": f"Reference {q}."} for q in (1, 2)])
    run = tmp_path / "run"
    args = ("vicuna", "--model-outputs", str(model), "--reference", str(ref))
    first = _judge(judge_spec, run, *args)
    assert first["task"] == "vicuna80" and first["model"]["label"] == "mine" and first["settings"]["orders"] == ["ab", "ba"]
    records = _examples(run, first)
    assert sorted(r["id"] for r in records) == ["1/ab", "1/ba", "2/ab", "2/ba"]
    assert all(r["decoding"] == {"temperature": 0.2, "max_tokens": 8} and r["judge"] == "tiny" for r in records)
    m = first["metrics"]
    assert m["n_scored"] + m["n_unscored"] == 2
    n_parse_failures = sum(r["verdict"]["type"] == "parse_failure" for r in records)
    assert len(first["breakdown"]["failures"]) == n_parse_failures == first["failures"]
    assert first["usage"]["misses"] == 4

    again = _judge(judge_spec, run, *args)  # done already (same key), or re-judged from the cache after failures
    assert again["metrics"] == first["metrics"] and (again == first or again["usage"]["misses"] == 0)

    path = run / first["examples_file"]
    path.write_text(path.read_text().splitlines(keepends=True)[0])  # as if killed after one judgment:
    Path(str(path).replace(".examples.jsonl", ".json")).unlink()     # the record is written last
    resumed = _judge(judge_spec, run, *args)
    assert resumed["usage"]["misses"] == 0 and resumed["usage"]["hits"] == 3  # the LLM cache answers the rest
    assert resumed["metrics"] == first["metrics"]
    assert len(_examples(run, resumed)) == 4


def test_alpaca_eval_v1_and_v2(judge_spec: str, tmp_path: Path) -> None:
    outputs = tmp_path / "model_outputs.json"
    outputs.write_text(json.dumps([
        {"instruction": 'Write "Test"', "output": "Test", "generator": "tiny-policy"},
        {"instruction": "What color is the sky", "output": "Blue.", "generator": "tiny-policy"}]))
    run = tmp_path / "run"
    v1 = _judge(judge_spec, run, "alpaca-eval", "--version", "v1", "--model-outputs", str(outputs))
    assert v1["task"] == "alpaca_eval_v1" and v1["settings"]["reference"] == "text_davinci_003"
    assert v1["n_examples"] == 2 and v1["model"]["label"] == "tiny-policy"
    m = v1["metrics"]
    assert m["n_total"] + m["n_missing"] == 2
    assert m["avg_length"] == pytest.approx((4 + 5) / 2)

    v2 = _judge(judge_spec, run, "alpaca-eval", "--model-outputs", str(outputs))
    records = _examples(run, v2)
    assert {r["decoding"]["max_tokens"] for r in records} == {1}
    assert all(r["decoding"]["logprobs"] is True and r["decoding"]["top_logprobs"] == 5 for r in records)
    for r in records:  # a verdict from the top log-probs, or a listed failure naming what was there
        assert r["verdict"]["type"] in ("preference", "parse_failure")
    annotations_file = run / v2["settings"]["files"]["annotations"]  # eval/<model>/annotations/<name>.json
    annotations = json.loads(annotations_file.read_text())
    assert [a["generator_2"] for a in annotations] == ["tiny-policy"] * 2

    bias = main(["judge", "bias", "--run-dir", str(run), "--annotations",
                 str(annotations_file)])
    assert bias == 0 and list((run / "eval").glob("*/bias.json"))


def test_mt_bench_single_and_pairwise(judge_spec: str, tmp_path: Path) -> None:
    a = _write_jsonl(tmp_path / "a.jsonl", [{"question_id": 81, "model_id": "a", "choices": [{"turns": ["A1", "A2"]}]}])
    b = _write_jsonl(tmp_path / "b.jsonl", [{"id": "81", "messages": [
        {"role": "user", "content": "q1"}, {"role": "assistant", "content": "B1"},
        {"role": "user", "content": "q2"}, {"role": "assistant", "content": "B2"}]}])
    run = tmp_path / "run"
    single = _judge(judge_spec, run, "mt-bench", "--model-outputs", str(a))
    assert sorted(r["id"] for r in _examples(run, single)) == ["81/t1", "81/t2"]
    assert single["metrics"]["n_scored"] + single["metrics"]["n_failed"] == 2
    pair = _judge(judge_spec, run, "mt-bench", "--mode", "pairwise", "--model-outputs", str(a),
                  "--baseline-outputs", str(b))
    assert len(_examples(run, pair)) == 4
    m = pair["metrics"]
    assert m["n_games"] + m["n_failed"] == 2


def test_listwise_rank(judge_spec: str, tmp_path: Path) -> None:
    rows = [("Name a color.", "Red.", "Blue is a color."), ("Say hi.", "Hi!", "Hello there.")]
    files = []
    for k in (1, 2):
        files.append(str(_write_jsonl(tmp_path / f"sys{k}.jsonl", [
            {"id": str(i), "source": f"sys{k}", "messages": [{"role": "user", "content": r[0]},
                                                             {"role": "assistant", "content": r[k]}]}
            for i, r in enumerate(rows)])))
    run = tmp_path / "run"
    result = _judge(judge_spec, run, "rank", "--model-outputs", *files)
    assert result["settings"]["systems"] == ["sys1", "sys2"]
    records = _examples(run, result)
    assert sorted(r["id"] for r in records) == ["0/fwd", "0/rev", "1/fwd", "1/rev"]
    assert sorted(records[0]["meta"]["shown"]) == [0, 1]


def test_llmbar_meta_vanilla_and_swap(judge_spec: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    vanilla = _judge(judge_spec, run, "meta", "--strategy", "vanilla", "--sets", "Neighbor", "--limit", "2")
    m = vanilla["metrics"]
    examples = _examples(run, vanilla)
    assert sorted(r["id"] for r in examples) == ["Neighbor/0/ab", "Neighbor/0/ba", "Neighbor/1/ab", "Neighbor/1/ba"]
    # the figure is the examples' own: each judgment mapped back to the original order against
    # the gold label, averaged over both orders (a parse failure counts as wrong)
    picked = {r["id"]: None if r["verdict"]["type"] != "choice" else
              (1 if (r["verdict"]["outcome"] == "first") == (r["meta"]["order"] == "ab") else 2) for r in examples}
    correct = [picked[r["id"]] == r["meta"]["label"] for r in examples]
    assert m["Neighbor/accuracy"] == pytest.approx(100 * sum(correct) / len(correct)) and vanilla["n_examples"] == 2
    assert m["n_failed"] == sum(p is None for p in picked.values())
    swap = _judge(judge_spec, run, "meta", "--strategy", "swap", "--sets", "Neighbor", "--limit", "2")
    assert swap["settings"]["strategy"] == "swap" and swap["metrics"]["n_failed"] >= 0
