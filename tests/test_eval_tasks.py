"""Task plumbing with a scripted LLM: perfect answers score 100, wrong ones 0; chat formats."""

from __future__ import annotations

import csv
import gzip
import json
import re
from importlib import resources

import pytest

from drover.evaluate.prompting import PromptFormatter
from drover.evaluate.task import EvalContext, EvalOptions
from drover.llm.client import LLMStats
from drover.completions import Choice, Completion, Score


class ScriptedLLM:
    """Answers generation requests with `answer(request)` and score requests with `score_fn(request)`."""

    def __init__(self, answer=None, score_fn=None):
        self.answer, self.score_fn, self.stats = answer, score_fn, LLMStats()
        self.requests = []

    def run(self, requests, desc=""):
        for request in requests:
            self.requests.append(request)
            n = request.decoding.n or 1
            yield Completion([Choice(self.answer(request)) for _ in range(n)], key=request.key)

    def score(self, requests, desc=""):
        for r in requests:
            value = self.score_fn(r)
            yield Score([value], [r.continuation], value, True)




def ctx(llm, fmt="tulu", **options):
    return EvalContext(llm, PromptFormatter(fmt), EvalOptions(**options))


def _data(*parts):
    return resources.files("drover").joinpath("resources", "data", *parts)


def test_gsm_perfect_and_wrong_answers():
    from drover.evaluate.tasks.gsm import COT

    answers = {}
    with open(str(_data("gsm8k", "test.jsonl")), encoding="utf-8") as handle:
        for line, raw in enumerate(handle, start=1):
            answers[f"test/{line}"] = json.loads(raw)["answer"].split("####")[-1].strip()
    settings = COT.settings(EvalOptions(limit=5))
    good = COT.run(ctx(ScriptedLLM(lambda r: f"Some steps 1 + 2 = 3.\nThe answer is {answers[r.key]}.")), settings)
    assert good.metrics["accuracy"] == 100.0 and len(good.examples) == 5
    bad = COT.run(ctx(ScriptedLLM(lambda r: "I do not know, maybe 1234567?")), settings)
    assert bad.metrics["accuracy"] == 0.0
    # The same seeded subsample every time, and a different one with another seed.
    assert [e["id"] for e in good.examples] == [e["id"] for e in bad.examples]
    other = COT.run(ctx(ScriptedLLM(lambda r: "0"), seed=7), settings)
    assert [e["id"] for e in other.examples] != [e["id"] for e in good.examples]


def test_bbh_perfect_answers_and_direct_prompts():
    from drover.evaluate.tasks.bbh import COT, DIRECT

    targets = {}
    for task in ("navigate", "dyck_languages"):
        examples = json.loads(_data("bbh", "bbh", f"{task}.json").read_text(encoding="utf-8"))["examples"]
        targets.update({f"{task}/{i}": e["target"] for i, e in enumerate(examples)})
    opts = EvalOptions(limit=3, overrides={"*": {"tasks": ["navigate", "dyck_languages"]}})
    llm = ScriptedLLM(lambda r: f"Let's think step by step.\nSo the answer is {targets[r.key]}.")
    result = COT.run(ctx(llm), COT.settings(opts))
    assert result.metrics["accuracy"] == 100.0 and result.breakdown["task"] == {"dyck_languages": 100.0, "navigate": 100.0}
    wrong = COT.run(ctx(ScriptedLLM(lambda r: "So the answer is maybe.")), COT.settings(opts))
    assert wrong.metrics["accuracy"] == 0.0
    direct = DIRECT.run(ctx(ScriptedLLM(lambda r: f" {targets[r.key]}\n\nQ: more")), DIRECT.settings(opts))
    assert direct.metrics["accuracy"] == 100.0
    assert "Let's think step by step" not in direct.examples[0]["prompt"]


def test_mmlu_scores_letters_and_reports_categories():
    from drover.evaluate.tasks.mmlu import CHOICES, FIVE_SHOT, ZERO_SHOT

    subjects = ["college_physics", "philosophy"]
    truth = {}
    for subject in subjects:
        with open(str(_data("mmlu", "test", f"{subject}_test.csv")), newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))[1:]
        truth.update({f"{subject}/{i}": CHOICES[int(r[5])] for i, r in enumerate(rows)})

    def oracle(request):
        return 0.0 if request.continuation == " " + truth[request.key] else -1.0

    opts = EvalOptions(limit=4, overrides={"*": {"subjects": subjects}})
    result = ZERO_SHOT.run(ctx(ScriptedLLM(score_fn=oracle)), ZERO_SHOT.settings(opts))
    assert result.metrics["accuracy"] == 100.0
    assert result.breakdown["category"] == {"STEM": 100.0, "humanities": 100.0}
    inverse = ZERO_SHOT.run(ctx(ScriptedLLM(score_fn=lambda r: -oracle(r))), ZERO_SHOT.settings(opts))
    assert inverse.metrics["accuracy"] == 0.0
    # Shot dropping: with a tight token budget the 5-shot prompt loses exemplars.
    tight = EvalOptions(limit=1, overrides={"*": {"subjects": ["philosophy"], "max_prompt_tokens": 300}})
    dropped = FIVE_SHOT.run(ctx(ScriptedLLM(score_fn=oracle)), FIVE_SHOT.settings(tight))
    assert dropped.examples[0]["shots"] < 5 and dropped.extra_settings["shots_dropped"] > 0


def test_codex_canonical_solutions_pass_and_stubs_fail():
    from drover.evaluate.tasks.codex import PASS_AT_1

    with gzip.open(str(_data("humaneval", "HumanEval.jsonl.gz")), "rt", encoding="utf-8") as handle:
        canonical = {p["task_id"]: p["canonical_solution"] for p in map(json.loads, handle)}
    opts = EvalOptions(limit=3, overrides={"*": {"n": 2}})
    llm = ScriptedLLM(lambda r: canonical[r.key])
    good = PASS_AT_1.run(ctx(llm, fmt="none"), PASS_AT_1.settings(opts))
    assert good.metrics == {"pass@1": 100.0}
    assert llm.requests[0].decoding.stop == ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
    assert llm.requests[0].decoding.temperature == 0.1 and llm.requests[0].decoding.n == 2
    bad = PASS_AT_1.run(ctx(ScriptedLLM(lambda r: "    return None\n"), fmt="none"), PASS_AT_1.settings(opts))
    assert bad.metrics == {"pass@1": 0.0}
    assert all(res["status"] == "failed" for e in bad.examples for res in e["results"])


def test_codex_whole_function_answers_from_chat_apis():
    from drover.evaluate.tasks.codex import job_for, load_problems

    problem = load_problems()[0]
    answer = "Sure:\n```python\n" + problem["prompt"] + problem["canonical_solution"] + "```\nDone."
    code, tests = job_for(problem, answer, whole_function=True)
    from drover.evaluate.sandbox import Limits, run_tests

    assert run_tests(code, tests, Limits(timeout_s=5)).passed
    assert not run_tests(*job_for(problem, "```python\ndef has_close_elements(n, t):\n    return 1\n```", True),
                         Limits(timeout_s=5)).passed


def test_chat_formats():
    tulu = PromptFormatter("tulu")
    assert tulu.render("Q?", chat_cue="A:", raw_cue="\nA:") == "<|user|>\nQ?\n<|assistant|>\nA:"
    assert PromptFormatter("none").render("Q?", chat_cue="A:", raw_cue="\nA:") == "Q?\nA:"
    api = PromptFormatter("tulu", send_messages=True)
    assert api.render("Q?", chat_cue="A:") == (("user", "Q?"),)
    assert api.request(api.render("Q?"), max_tokens=3).messages == (("user", "Q?"),)
    from drover.errors import ConfigError

    with pytest.raises(ConfigError, match="log-likelihoods"):
        api.score_request(api.render("Q?"), " A")
    with pytest.raises(ConfigError, match="chat-format"):
        PromptFormatter("chatml")
    with pytest.raises(ConfigError, match="no chat template"):
        PromptFormatter("model").render("Q?")


def test_model_chat_format_uses_the_tokenizers_template(tiny_tokenizer):
    fmt = PromptFormatter("model", tokenizer=tiny_tokenizer)
    text = fmt.render("Hello", chat_cue="The answer is:")
    assert text == tiny_tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}], tokenize=False,
                                                      add_generation_prompt=True) + "The answer is:"
    assert fmt.count_tokens("hello world") == len(tiny_tokenizer("hello world", add_special_tokens=False)["input_ids"])
    long = " ".join(["word"] * 300)
    assert fmt.count_tokens(fmt.truncate_tokens(long, 20)) <= 21


def test_unnatural_buckets_and_superni_encoding():
    from drover.evaluate.tasks.superni import encode, superni_rouge
    from drover.evaluate.tasks.unnatural import length_bucket

    assert [length_bucket(x) for x in ("yes", "a b c", "one two three four five six", " ".join("w" * 11))] == \
        ["0-2", "3-5", "6-10", ">10"]
    task = {"Definition": ["Answer the question"],
            "Positive Examples": [{"input": "2+2?", "output": "4"}, {"input": "Capital of France", "output": "Paris"}]}
    assert encode(task, {"input": "3+3?"}, 0) == \
        "Definition: Answer the question.\n\nNow complete the following example -\nInput: 3+3?\nOutput: "
    two = encode(task, {"input": "3+3?"}, 2)
    assert " Positive Example 1 -\nInput: 2+2?\n Output: 4.\n\n Positive Example 2 -\nInput: Capital of France.\n" in two
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    pred, refs = "The cats were running home", ["cat runs home", "a dog walked"]
    expected = max(scorer.score(r, pred)["rougeL"].fmeasure for r in refs)
    assert superni_rouge(pred, refs) == pytest.approx(expected)
    assert re.search(r"\d", str(expected))
