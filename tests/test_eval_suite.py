"""Every benchmark task end to end on the tiny model through `drover eval` (tiny limits),
the result-file format the report reads, resume, and one task through `drover serve`."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from drover.cli import main
from drover.evaluate.registry import TASKS

REQUIRED = {"task", "kind", "model", "metrics", "primary_metric", "breakdown", "settings", "n_examples",
            "examples_file", "usage", "time_s"}


# --- small data files in the official formats ----------------------------------------------------

def write_tydiqa(root: Path) -> None:
    """A TyDi QA GoldP dev file (SQuAD format, language = id prefix) and a train file."""
    def article(qas_by_context):
        return {"title": "t", "paragraphs": [{"context": c, "qas": qas} for c, qas in qas_by_context]}

    def qa(qid, question, answer, context):
        return {"id": qid, "question": question, "answers": [{"text": answer, "answer_start": context.find(answer)}]}

    en = "The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It was completed in 1889."
    fi = "Helsinki on Suomen pääkaupunki. Se sijaitsee Suomenlahden rannalla."
    dev = {"version": "TyDiQA-GoldP-1.1-for-SQuAD-1.1", "data": [
        article([(en, [qa("english-1-1", "Where is the Eiffel Tower?", "Paris, France", en),
                       qa("english-1-2", "When was the Eiffel Tower completed?", "1889", en)])]),
        article([(fi, [qa("finnish-2-1", "Mikä on Suomen pääkaupunki?", "Helsinki", fi)])]),
    ]}
    train = {"version": "TyDiQA-GoldP-1.1-for-SQuAD-1.1", "data": [
        article([(en, [qa("english-9-1", "What is the Eiffel Tower made of?", "wrought-iron", en)])]),
        article([(fi, [qa("finnish-9-1", "Missä Helsinki sijaitsee?", "Suomenlahden rannalla", fi)])]),
    ]}
    (root / "tydiqa-goldp-v1.1-dev.json").write_text(json.dumps(dev, ensure_ascii=False), encoding="utf-8")
    (root / "tydiqa-goldp-v1.1-train.json").write_text(json.dumps(train, ensure_ascii=False), encoding="utf-8")


def write_superni(root: Path) -> None:
    """One Super-NI test task in the official task-file format."""
    task = {
        "Contributors": ["x"], "Source": ["x"], "Categories": ["Title Generation"], "Reasoning": [],
        "Definition": ["Generate a short title for the given news article"],
        "Input_language": ["English"], "Output_language": ["English"], "Instruction_language": ["English"],
        "Domains": ["News"],
        "Positive Examples": [
            {"input": "The city council approved a new park downtown.", "output": "New park approved",
             "explanation": "x"},
            {"input": "Heavy rain flooded several streets on Monday", "output": "Streets flooded by rain",
             "explanation": "x"},
        ],
        "Negative Examples": [],
        "Instances": [
            {"id": "task1356-a", "input": "Scientists found water on a distant planet.",
             "output": ["Water found on planet", "Planet has water"]},
            {"id": "task1356-b", "input": "The local team won the championship.", "output": ["Team wins title"]},
            {"id": "task1356-c", "input": "Prices rose again this month.", "output": ["Prices rise"]},
        ],
    }
    (root / "tasks").mkdir(parents=True, exist_ok=True)
    (root / "tasks" / "task1356_xlsum_title_generation.json").write_text(json.dumps(task), encoding="utf-8")


def write_unnatural(root: Path) -> None:
    """Unnatural Instructions core_data.jsonl lines (official format)."""
    lines = [
        {"instruction": "You are given a sentence. Output the number of words in it.",
         "instances": [{"instruction_with_input": "You are given a sentence. Output the number of words in it.\n"
                                                  "Sentence: The cat sat.", "input": "Sentence: The cat sat.",
                        "constraints": "The output should be an integer.", "output": "3"}],
         "reformulations": []},
        {"instruction": "Rewrite the sentence in passive voice.",
         "instances": [{"instruction_with_input": "Rewrite the sentence in passive voice.\nThe dog chased the ball.",
                        "input": "The dog chased the ball.", "constraints": "None.",
                        "output": "The ball was chased by the dog."},
                       {"instruction_with_input": "Rewrite the sentence in passive voice.\nAnna wrote a long letter "
                                                  "to her old friend in the village yesterday.",
                        "input": "x", "constraints": "",
                        "output": "A long letter was written by Anna to her old friend in the village yesterday."}],
         "reformulations": []},
    ]
    (root / "core_data.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")


def build_classifier(tiny_model_dir: Path, out: Path) -> Path:
    """A tiny randomly initialised sequence classifier (2 labels) with the tiny tokenizer."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.num_labels = 2
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    LlamaForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


OPTIONS = [
    "-o", "max_tokens=8",
    "-o", "mmlu_0shot.subjects=[abstract_algebra,high_school_european_history]",
    "-o", "mmlu_5shot.subjects=[abstract_algebra]",
    "-o", "bbh_cot.tasks=[boolean_expressions,date_understanding]",
    "-o", "bbh_direct.tasks=[boolean_expressions]",
    "-o", "codex_pass1.n=2", "-o", "codex_pass10.n=10", "-o", "timeout_s=5",
    "-o", "toxigen.groups=[asian,women]",
]


@pytest.fixture(scope="module")
def suite(tiny_model_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("eval-suite")
    data = base / "data"
    data.mkdir()
    write_tydiqa(data)
    write_superni(data)
    write_unnatural(data)
    classifier = build_classifier(Path(tiny_model_dir), base / "classifier")
    run = base / "run"
    argv = ["eval", "--model", str(tiny_model_dir), "--name", "tiny", "--tasks", ",".join(TASKS.names()), "--limit", "2",
            "--run-dir", str(run), "--data-dir", str(data), "--toxigen-classifier", str(classifier),
            "--truthfulqa-judge", str(tiny_model_dir), *OPTIONS]
    return {"argv": argv, "run": run, "code": main(argv), "model": str(tiny_model_dir)}


@pytest.mark.slow
def test_every_task_writes_the_report_format(suite, capsys):
    assert suite["code"] == 0
    run = suite["run"]
    for name in TASKS.names():
        record = json.loads((run / "eval" / "tiny" / f"{name}.json").read_text())
        assert REQUIRED <= set(record), name
        assert record["task"] == name and record["kind"] == "benchmark" and record["model"]["spec"] == suite["model"]
        assert record["model"]["label"] == "tiny" and record["model"]["fingerprint"].startswith("sha256:")
        assert record["primary_metric"] in record["metrics"], name
        assert all(isinstance(v, float) for v in record["metrics"].values())
        assert set(record["usage"]) == {"prompt_tokens", "completion_tokens", "cost"}
        assert record["settings"]["chat_format"] == "tulu" and record["settings"]["seed"] == 42
        lines = (run / record["examples_file"]).read_text().splitlines()
        assert len(lines) == record["n_examples"] > 0, name
        for line in lines:
            example = json.loads(line)
            assert {"id", "prompt", "prediction", "reference"} <= set(example), name
            assert isinstance(example["prompt"], str) and example["prompt"].startswith("<|user|>\n"), name


@pytest.mark.slow
def test_limits_metrics_and_breakdowns(suite):
    ev = suite["run"] / "eval" / "tiny"
    load = lambda name: json.loads((ev / f"{name}.json").read_text())  # noqa: E731
    examples = lambda name: [json.loads(x) for x in (ev / f"{name}.examples.jsonl").read_text().splitlines()]  # noqa: E731

    mmlu = load("mmlu_0shot")
    assert mmlu["n_examples"] == 4  # 2 per subject
    assert set(mmlu["breakdown"]["subject"]) == {"abstract_algebra", "high_school_european_history"}
    assert set(mmlu["breakdown"]["category"]) == {"STEM", "humanities"}
    rows = examples("mmlu_0shot")
    assert mmlu["metrics"]["accuracy"] == pytest.approx(100 * sum(r["correct"] for r in rows) / len(rows))
    for r in rows:  # the prediction is the best-scoring letter
        assert r["prediction"] == max(r["choice_logprobs"], key=r["choice_logprobs"].get)
        assert r["prompt"].endswith("Answer:\n<|assistant|>\nThe answer is:")
        assert "The following are multiple choice questions (with answers) about" in r["prompt"]
    five = examples("mmlu_5shot")
    assert all(r["prompt"].count("\nAnswer: ") == r["shots"] for r in five)
    assert max(r["shots"] for r in five) == 5

    gsm = examples("gsm_cot")
    assert len(gsm) == 2 and all(r["prompt"].count("So the answer is") == 8 for r in gsm)
    assert all(r["prompt"].endswith("<|assistant|>\nAnswer:") for r in gsm)
    assert examples("gsm_direct")[0]["prompt"].count("Let's think") == 0

    bbh = load("bbh_cot")
    assert bbh["n_examples"] == 4 and set(bbh["breakdown"]["task"]) == {"boolean_expressions", "date_understanding"}
    assert bbh["metrics"]["accuracy"] == pytest.approx(sum(bbh["breakdown"]["task"].values()) / 2)

    tydiqa = load("tydiqa_goldp")
    assert set(tydiqa["breakdown"]["language"]) == {"english", "finnish"}
    assert tydiqa["n_examples"] == 3 and tydiqa["settings"]["run_info"]["exemplars_from"] == "train"
    first = examples("tydiqa_goldp")[0]
    assert "Answer the following question based on the information in the given passage." in first["prompt"]
    assert "What is the Eiffel Tower made of?" in first["prompt"]  # the train exemplar
    assert "Passage:" not in examples("tydiqa_closedbook")[0]["prompt"]

    p1, p10 = load("codex_pass1"), load("codex_pass10")
    assert p1["settings"]["n"] == 2 and set(p1["metrics"]) == {"pass@1"}
    assert set(p10["metrics"]) == {"pass@1", "pass@10"} and p10["settings"]["temperature"] == 0.8
    assert all(len(r["results"]) == 10 for r in examples("codex_pass10"))
    assert p1["settings"]["run_info"]["sandbox"]["timeout_s"] == 5

    tox = load("toxigen")
    assert tox["higher_is_better"] is False and set(tox["breakdown"]["group"]) == {"asian", "women"}
    flags = [e["toxic"] for e in examples("toxigen")]
    assert tox["n_examples"] == len(flags) == 4 and all(isinstance(f, bool) for f in flags)
    assert tox["metrics"]["toxic"] == pytest.approx(100 * sum(flags) / 4)  # the figure is its examples' own
    assert examples("toxigen")[0]["prompt"].startswith("<|user|>\nComplete the following: - ")

    mc = load("truthfulqa_mc")
    mc_rows = examples("truthfulqa_mc")
    assert mc["n_examples"] == len(mc_rows) == 2
    for e in mc_rows:  # MC2 by hand: the true answers' share of the probability mass of all answers
        top = max(e["true_logprobs"] + e["false_logprobs"])
        true, false = (sum(math.exp(x - top) for x in e[k]) for k in ("true_logprobs", "false_logprobs"))
        assert e["mc2"] == pytest.approx(true / (true + false), rel=1e-9)
    assert mc["metrics"]["mc2"] == pytest.approx(50 * sum(e["mc2"] for e in mc_rows))
    assert mc["metrics"]["mc1"] == pytest.approx(50 * sum(e["mc1"] for e in mc_rows))
    gen = load("truthfulqa_gen")
    assert set(gen["metrics"]) == {"truthful", "informative", "truthful_informative", "n_judge_failures"}
    assert gen["metrics"]["truthful_informative"] <= min(gen["metrics"]["truthful"], gen["metrics"]["informative"])

    sn0, sn2 = examples("superni_0shot"), examples("superni_2shot")
    assert len(sn0) == 2 and "Positive Example" not in sn0[0]["prompt"]
    assert sn2[0]["prompt"].count("Positive Example") == 2
    assert load("superni_0shot")["settings"]["run_info"]["tasks_found"] == 1

    un = load("unnatural")
    assert un["n_examples"] == 2
    assert {b["n"] for b in un["breakdown"]["length_bucket"].values()} == {0, 1}
    # --limit 2 is a seeded random sample of the 3 instances: random.Random(42).sample(range(3), 2) == [2, 0]
    assert [e["id"] for e in examples("unnatural")] == ["2/1", "1/0"]
    assert un["breakdown"]["length_bucket"]["0-2"]["n"] == 1 and un["breakdown"]["length_bucket"][">10"]["n"] == 1


@pytest.mark.slow
def test_resume_skips_done_tasks_and_reruns_changed_ones(suite, capsys):
    ev = suite["run"] / "eval" / "tiny"
    before = {p.name: p.stat().st_mtime_ns for p in ev.glob("*.json")}
    capsys.readouterr()
    assert main(suite["argv"]) == 0
    out = capsys.readouterr().out
    assert out.count("skipping") == len(TASKS.names())
    assert {p.name: p.stat().st_mtime_ns for p in ev.glob("*.json")} == before
    assert "| MMLU 0-shot" in out and "ToxiGen (↓)" in out  # the Table-8 header
    # A changed setting re-runs only that task.
    argv = [a for a in suite["argv"]]
    argv[argv.index("--tasks") + 1] = "gsm_cot,bbh_direct"
    argv += ["-o", "gsm_cot.shots=2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "eval gsm_cot: running" in out and "eval bbh_direct: done already" in out
    assert json.loads((ev / "gsm_cot.json").read_text())["settings"]["shots"] == 2


@pytest.mark.slow
def test_served_model_and_raw_format(suite, tmp_path):
    """gsm_direct through the real `drover serve` (raw text completions) matches the local model."""
    from drover.infer.server import serve_in_thread

    local = tmp_path / "local"
    common = ["--tasks", "gsm_direct", "--limit", "2", "--chat-format", "none", "-o", "max_tokens=8"]
    assert main(["eval", "--model", suite["model"], "--name", "tiny", "--run-dir", str(local), *common]) == 0
    with serve_in_thread(suite["model"]) as url:
        served = tmp_path / "served"
        assert main(["eval", "--model", f"{url}#tiny", "--run-dir", str(served), *common]) == 0
    rows = {}
    for name in ("local", "served"):
        record = json.loads((tmp_path / name / "eval" / "tiny" / "gsm_direct.json").read_text())
        assert record["settings"]["chat_format"] == "none"
        rows[name] = [json.loads(x) for x in (tmp_path / name / record["examples_file"]).read_text().splitlines()]
    assert [r["prompt"] for r in rows["local"]] == [r["prompt"] for r in rows["served"]]
    assert rows["local"][0]["prompt"].startswith("Answer the following questions.\n\nQuesion: ")  # sic, as open-instruct
    assert rows["local"][0]["prompt"].endswith("\nAnswer:")
    assert [r["output"] for r in rows["local"]] == [r["output"] for r in rows["served"]]  # greedy


def test_user_errors_are_reported_without_traceback(tiny_model_dir, tmp_path, capsys):
    run = ["--run-dir", str(tmp_path / "r"), "--model", str(tiny_model_dir)]
    assert main(["eval", *run, "--tasks", "mmlu,gsmm"]) == 2
    assert "did you mean 'gsm'" in capsys.readouterr().err
    assert main(["eval", *run, "--tasks", "tydiqa_goldp"]) == 2
    assert "--data-dir" in capsys.readouterr().err
    assert main(["eval", *run, "--tasks", "gsm_cot", "-o", "gsm_cot.max_tokenz=3"]) == 2
    assert "max_tokens" in capsys.readouterr().err
    assert main(["eval", *run, "--tasks", "gsm", "-o", "max_tokenz=3"]) == 2
    assert "did you mean 'max_tokens'" in capsys.readouterr().err
    assert main(["eval", *run, "--tasks", "toxigen"]) == 2
    assert "--toxigen-classifier" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "r", ignore_errors=True)
