"""Benchmark protocols pinned to their reference implementations with hand-derived values:
prompt text, sampling of examples and exemplars, answer lists, metric settings."""

from __future__ import annotations

import json
import random

import pytest

from drover.evaluate.task import EvalOptions
from test_eval_tasks import ScriptedLLM, _data, ctx


def test_mmlu_header_has_format_subjects_double_space():
    from drover.evaluate.tasks.mmlu import Row, format_prompt, format_subject

    # open-instruct format_subject: " " + each word, inside "about {}." -> two spaces after "about".
    assert format_subject("abstract_algebra") == " abstract algebra"
    row = Row("1+1?", ("1", "2", "3", "4"), "B")
    assert format_prompt("abstract_algebra", [], row) == (
        "The following are multiple choice questions (with answers) about  abstract algebra.\n\n"
        "1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:")


def test_mmlu_limit_samples_like_pandas_with_random_state():
    import pandas as pd

    from drover.evaluate.tasks.mmlu import ZERO_SHOT, read_rows, sample_rows

    path = str(_data("mmlu", "test", "abstract_algebra_test.csv"))
    # Hand-checked once: pandas' DataFrame.sample(5, random_state=42) on the 100 rows picks these.
    assert [i for i, _ in sample_rows(read_rows(path), 5, 42)] == [83, 53, 70, 45, 44]
    assert [i for i, _ in sample_rows(read_rows(path), 5, 42)] == pd.read_csv(path).sample(5, random_state=42).index.tolist()
    assert len(sample_rows(read_rows(path), 500, 42)) == 100  # n >= rows: all of them, in order
    llm = ScriptedLLM(score_fn=lambda r: 0.0)
    opts = EvalOptions(limit=3, overrides={"*": {"subjects": ["college_physics"]}})
    result = ZERO_SHOT.run(ctx(llm), ZERO_SHOT.settings(opts))
    assert [e["id"] for e in result.examples] == ["college_physics/30", "college_physics/67", "college_physics/62"]
    other = ZERO_SHOT.run(ctx(llm, seed=7), ZERO_SHOT.settings(opts))
    assert [e["id"] for e in other.examples] == ["college_physics/22", "college_physics/40", "college_physics/79"]


def _gsm_exemplars():
    return json.loads(_data("..", "prompts", "eval", "gsm_exemplars.json").read_text(encoding="utf-8"))["exemplars"]


def test_gsm_samples_problems_then_exemplars_from_one_seeded_generator():
    from drover.evaluate.tasks.gsm import COT

    llm = ScriptedLLM(lambda r: "So the answer is 1.")
    result = COT.run(ctx(llm, fmt="none"), COT.settings(EvalOptions(overrides={"*": {"shots": 2}})))
    # random.seed(42); random.sample(range(1319), 200) starts 1309, 228, 51 (file lines 1310, 229, 52),
    # and the next draw, random.sample(exemplars, 2), gives exemplars 7 then 1.
    assert [e["id"] for e in result.examples[:3]] == ["test/1310", "test/229", "test/52"]
    assert len(result.examples) == 200
    ex = _gsm_exemplars()
    prompt = result.examples[0]["prompt"]
    assert prompt.startswith("Answer the following questions.\n\nQuestion: " + ex[7]["question"] + "\nAnswer: "
                             + ex[7]["cot_answer"] + "\n\nQuestion: " + ex[1]["question"])
    assert prompt.endswith("\nAnswer:") and prompt.count("So the answer is") == 2
    assert all(r.decoding.stop == ("\n",) or r.decoding.stop == ["\n"] for r in llm.requests)


def test_gsm_direct_exemplars_and_zero_shot_prefix_as_the_reference():
    from drover.evaluate.tasks.gsm import DIRECT, prompt_prefix

    ex = _gsm_exemplars()
    assert prompt_prefix([], True) == "Answer the following question.\n\n"  # singular with 0 shots
    assert prompt_prefix(ex[:1], False) == (f"Answer the following questions.\n\nQuesion: {ex[0]['question']}\n"
                                            f"Answer: {ex[0]['short_answer']}\n\n")  # the reference's typo, kept
    llm = ScriptedLLM(lambda r: " 12.00")
    result = DIRECT.run(ctx(llm), DIRECT.settings(EvalOptions(limit=1)))
    assert result.examples[0]["prompt"].count("Quesion: ") == 8
    assert result.examples[0]["prompt"].endswith("<|assistant|>\nAnswer:")
    # Tülu-1 stops at a newline in chat formats too; stop_at_newline=false drops that.
    assert llm.requests[0].decoding.stop in (("\n",), ["\n"])
    free = ScriptedLLM(lambda r: " 12")
    DIRECT.run(ctx(free), DIRECT.settings(EvalOptions(limit=1, overrides={"*": {"stop_at_newline": False}})))
    assert not free.requests[0].decoding.stop


def test_gsm_match_setting_switches_to_value_comparison():
    from drover.evaluate.tasks.gsm import COT

    gold = {}
    with open(str(_data("gsm8k", "test.jsonl")), encoding="utf-8") as handle:
        for line, raw in enumerate(handle, start=1):
            gold[f"test/{line}"] = json.loads(raw)["answer"].split("####")[-1].strip().replace(",", "")
    llm = ScriptedLLM(lambda r: f"So the answer is {gold[r.key]}.00")
    exact = COT.run(ctx(llm), COT.settings(EvalOptions(limit=4)))
    value = COT.run(ctx(llm), COT.settings(EvalOptions(limit=4, overrides={"*": {"match": "value"}})))
    assert exact.metrics["accuracy"] == 0.0  # "N00" != "N" for the reference
    assert value.metrics["accuracy"] == 100.0
    from drover.errors import ConfigError

    with pytest.raises(ConfigError, match="match="):
        COT.run(ctx(llm), COT.settings(EvalOptions(limit=1, overrides={"*": {"match": "values"}})))


def test_bbh_direct_prompt_keeps_the_answer_with_its_period():
    from drover.evaluate.tasks.bbh import base_prompt

    direct = base_prompt("navigate", cot=False)
    assert direct.startswith("Given a series of navigation instructions")
    assert "Let's think step by step" not in direct and direct.count("\nA: No.") + direct.count("\nA: Yes.") == 3
    assert not base_prompt("navigate", cot=True).startswith("BENCHMARK DATA")


def test_bbh_default_is_the_reference_verdict_and_lenient_is_an_option():
    from drover.evaluate.tasks.bbh import COT

    opts = EvalOptions(limit=2, overrides={"*": {"tasks": ["date_understanding"]}})
    targets = {f"date_understanding/{i}": e["target"] for i, e in enumerate(json.loads(
        _data("bbh", "bbh", "date_understanding.json").read_text(encoding="utf-8"))["examples"])}
    llm = ScriptedLLM(lambda r: f"So the answer is {targets[r.key]} or (Z).")
    assert COT.run(ctx(llm), COT.settings(opts)).metrics["accuracy"] == 0.0
    lenient = EvalOptions(limit=2, overrides={"*": {"tasks": ["date_understanding"], "match": "lenient"}})
    assert COT.run(ctx(llm), COT.settings(lenient)).metrics["accuracy"] == 100.0


def test_truthfulqa_mc_true_answers_are_only_the_correct_answers():
    from drover.evaluate.tasks.truthfulqa import TruthfulQAMC
    from drover.judges.truthfulqa import load_questions

    first = load_questions()[0]  # watermelon seeds: 6 correct, 7 incorrect answers in the CSV
    assert len(first.correct) == 6 and "I have no comment." not in first.correct and len(first.incorrect) == 7
    task = TruthfulQAMC()
    result = task.run(ctx(ScriptedLLM(score_fn=lambda r: 0.0), fmt="none"), task.settings(EvalOptions(limit=1)))
    # Equal scores: MC2 = 6 / (6 + 7) (it was 7 / 14 = 0.5 with the extra true answer); MC1 fails (a tie).
    assert result.metrics["mc2"] == pytest.approx(100 * 6 / 13)
    assert result.metrics["mc1"] == 0.0


def test_superni_use_stemmer_setting():
    from drover.evaluate.tasks.superni import SuperNISettings, superni_rouge

    assert SuperNISettings().use_stemmer is True
    # Stemmed: [the cat were run home] vs [cat run home]: LCS 3, P 3/5, R 1 -> F 0.75.
    assert superni_rouge("The cats were running home", ["cat runs home"]) == pytest.approx(0.75)
    # Unstemmed: only "home" is shared: P 1/5, R 1/3 -> F 0.25.
    assert superni_rouge("The cats were running home", ["cat runs home"], use_stemmer=False) == pytest.approx(0.25)


def test_unnatural_limit_is_a_seeded_random_sample(tmp_path):
    from drover.evaluate.tasks.unnatural import TASK

    lines = [{"instruction": f"task {i}", "instances": [{"instruction_with_input": f"Say {i}.", "constraints": "",
                                                          "output": str(i)}]} for i in range(10)]
    (tmp_path / "core_data.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    result = TASK.run(ctx(ScriptedLLM(lambda r: "0"), data_dir=str(tmp_path)),
                      TASK.settings(EvalOptions(limit=3, data_dir=str(tmp_path))))
    # random.Random(42).sample(range(10), 3) == [1, 0, 4]; ids are "<line>/<instance>".
    assert random.Random(42).sample(range(10), 3) == [1, 0, 4]
    assert [e["id"] for e in result.examples] == ["2/0", "1/0", "5/0"]
    assert TASK.settings(EvalOptions()).limit == 9000  # GPT-4-LLM's h9000 sample


def test_tydiqa_defaults_are_tulus_100_per_language_one_shot():
    from drover.evaluate.tasks.tydiqa import CLOSED_BOOK, GOLD_PASSAGE

    for task in (GOLD_PASSAGE, CLOSED_BOOK):
        settings = task.settings(EvalOptions())
        assert settings.limit == 100 and settings.shots == 1 and settings.max_context_tokens == 512


def test_auto_chat_format_resolution(tiny_tokenizer):
    import copy
    from types import SimpleNamespace

    from drover.evaluate.prompting import resolve_chat_format
    from drover.templates import chat_template_text

    local = SimpleNamespace(backend="hf", model="/nonexistent", base_url=None)
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = chat_template_text("tulu")
    assert resolve_chat_format("auto", local, tok)[0] == "tulu"  # trained by drover in the Tülu format
    tok.chat_template = chat_template_text("chatml")
    assert resolve_chat_format("auto", local, tok) == ("model", "auto: the model's own chat template")
    tok.chat_template = None
    assert resolve_chat_format("auto", local, tok)[0] == "tulu"  # a base model
    api = SimpleNamespace(backend="openai", model="gpt-4", base_url=None)
    assert resolve_chat_format("auto", api)[0] == "model"
    served = SimpleNamespace(backend="openai", model="tiny", base_url="http://127.0.0.1:8000/v1")
    assert resolve_chat_format("auto", served)[0] == "tulu"
    assert resolve_chat_format("none", api) == ("none", "as requested")
    from drover.errors import ConfigError

    with pytest.raises(ConfigError, match="auto"):
        resolve_chat_format("autoo", api)


def test_eval_cli_prints_and_records_the_resolved_chat_format(tiny_model_dir, tmp_path, capsys):
    from drover.cli import main

    run = tmp_path / "run"
    assert main(["eval", "--model", str(tiny_model_dir), "--tasks", "gsm_direct", "--limit", "1",
                 "-o", "max_tokens=2", "--run-dir", str(run)]) == 0
    assert "chat format: tulu (auto: the model's template is drover's Tülu template)" in capsys.readouterr().out
    assert json.loads(next((run / "eval").glob("*/gsm_direct.json")).read_text())["settings"]["chat_format"] == "tulu"


def test_sharegpt_splits_at_tulus_2048_tokens_by_default():
    from drover.formats.base import ConvertOptions, ConvertStats
    from drover.formats.chat import split_rounds
    from drover.records import Message

    assert ConvertOptions().max_tokens == 2048  # open-instruct split_sharegpt_conversations.py --max-length
    words = lambda n: " ".join(["w"] * n)  # noqa: E731
    messages = [Message("user", words(500)), Message("assistant", words(494)),  # round 1: 500+6 + 494+6 = 1006
                Message("user", words(500)), Message("assistant", words(494)),  # round 2: 1006 -> 2012 fits
                Message("user", words(10)), Message("assistant", words(10))]    # round 3: 32 -> 2044 fits
    count = lambda text: len(text.split())  # noqa: E731
    assert split_rounds(messages, 2048, count, ConvertStats()) == [(0, 6)]
    messages[4] = Message("user", words(30))  # round 3: 52 -> 2064 > 2048: a new piece
    assert split_rounds(messages, 2048, count, ConvertStats()) == [(0, 4), (4, 6)]


def test_codex_chat_prompt_and_limit_as_open_instruct():
    from drover.evaluate.tasks.codex import PASS_AT_1, load_problems

    problems = {p["task_id"]: p for p in load_problems()}
    llm = ScriptedLLM(lambda r: problems[r.key]["canonical_solution"])
    opts = EvalOptions(limit=2, overrides={"*": {"n": 1, "ks": [1]}})
    result = PASS_AT_1.run(ctx(llm), PASS_AT_1.settings(opts))
    # random.seed(42); random.sample(range(164), 2) == [163, 28]
    assert [e["id"] for e in result.examples] == ["HumanEval/163", "HumanEval/28"]
    p = problems["HumanEval/163"]["prompt"]
    assert result.examples[0]["prompt"] == ("<|user|>\nComplete the following python function.\n\n\n" + p
                                            + "\n<|assistant|>\nHere is the completed function:\n\n\n" + p)
    assert "```" not in llm.requests[0].decoding.stop and result.metrics["pass@1"] == 100.0
    fenced = ScriptedLLM(lambda r: problems[r.key]["canonical_solution"])
    PASS_AT_1.run(ctx(fenced), PASS_AT_1.settings(EvalOptions(limit=1, overrides={"*": {
        "n": 1, "ks": [1], "code_fence": True}})))
    assert "```" in fenced.requests[0].decoding.stop


def test_every_benchmark_judge_and_objective_names_its_protocol():
    import importlib
    import pkgutil

    import drover.evaluate.tasks
    import drover.judges
    import drover.train.objectives

    modules = [f"drover.evaluate.tasks.{m.name}" for m in pkgutil.iter_modules(drover.evaluate.tasks.__path__)]
    modules += [f"drover.train.objectives.{m.name}" for m in pkgutil.iter_modules(drover.train.objectives.__path__)
                if m.name != "pairs"]
    modules += [f"drover.judges.{name}" for name in ("alpaca_eval", "vicuna", "mt_bench", "llmbar", "listwise",
                                                     "listwise_eval", "rating", "bias")]
    modules += ["drover.generate.rank_contextual", "drover.generate.rank_probabilistic", "drover.generate.feedback",
                "drover.metrics.extract"]
    missing = [name for name in modules if "Protocol:" not in (importlib.import_module(name).__doc__ or "")]
    assert not missing, f"no 'Protocol:' section in the docstring of {missing}"
    from drover.formats.chat import convert_sharegpt

    assert "Protocol:" in convert_sharegpt.__doc__


def test_tulu_recipe_generates_alpaca_eval_answers_as_open_instruct():
    import yaml

    from drover.recipes import RECIPES_DIR

    stages = {s["name"]: s for s in yaml.safe_load((RECIPES_DIR / "tulu.yaml").read_text(encoding="utf-8"))["stages"]}
    args = stages["policy-alpaca-eval"]["args"]
    # open-instruct eval/alpaca_farm/run_eval.py: greedy, max_new_tokens=2048, on all 805 instructions
    assert args[args.index("--max-tokens") + 1] == "2048" and args[args.index("--temperature") + 1] == "0"
    assert "--limit" not in args
