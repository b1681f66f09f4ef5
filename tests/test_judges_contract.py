"""Every judge in the registry through the Judge contract on fake judge endpoints.

`FakeJudgeLLM("honour")` answers each request with a valid output of its Constraint (as
drover serve or vLLM do); `FakeJudgeLLM("ignore")` answers free text, as an endpoint
without structured outputs. Checked: constrained verdicts always parse (0 failures),
unconstrained garbage is counted as failures and never guessed into a verdict, both
orders are judged, changed answers are re-judged while unchanged ones are not re-sent,
request errors are retried by a re-run, options and cost reach the record.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from drover.judges import judge as judge_module
from drover.judges.registry import JUDGES
from drover.judges.stage import JudgeConfig, run_judge
from drover.judges.verdicts import ParseFailure
from drover.llm.testing import FakeJudgeLLM, sample_regex
from drover.completions import Choice, Completion, TokenLogprob

ALPACA = ["What are the names of some famous actors that started their careers on Broadway?",
          "How did US states get their names?"]
TRUTHFULQA = ["What happens to you if you eat watermelon seeds?", "Where did fortune cookies originate?"]


def _jsonl(path: Path, rows: list[dict]) -> str:
    if not path.exists():  # a test may have changed it
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _conversation(i: Any, user: str, answer: str, source: str = "mine") -> dict:
    return {"id": str(i), "source": source, "messages": [{"role": "user", "content": user},
                                                          {"role": "assistant", "content": answer}]}


def _inputs(tmp: Path) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Per judge: (case name, settings) over tiny inputs."""
    mine = _jsonl(tmp / "mine.jsonl", [{"question_id": q, "model_id": "mine", "choices": [{"index": 0, "turns": [
        f"My answer {q}."]}]} for q in (1, 2)])
    ref = _jsonl(tmp / "ref.jsonl", [{"question_id": q, "text": f"Reference {q}."} for q in (1, 2)])
    outputs = tmp / "model_outputs.json"
    outputs.exists() or outputs.write_text(json.dumps([{"instruction": i, "output": f"Out {n}", "generator": "mine"}
                                   for n, i in enumerate(ALPACA)]))
    mt_a = _jsonl(tmp / "mt_a.jsonl", [{"question_id": q, "model_id": "a", "choices": [{"index": 0, "turns": [
        f"A{q} one", f"A{q} two"]}]} for q in (81, 82)])
    mt_b = _jsonl(tmp / "mt_b.jsonl", [{"question_id": q, "model_id": "b", "choices": [{"index": 0, "turns": [
        f"B{q} one", f"B{q} two"]}]} for q in (81, 82)])
    systems = [_jsonl(tmp / f"sys{k}.jsonl", [_conversation(n, i, f"sys{k} says {n}", f"sys{k}")
                                              for n, i in enumerate(ALPACA)]) for k in (1, 2, 3)]
    tqa = _jsonl(tmp / "tqa.jsonl", [_conversation(n, q, "I have no comment.") for n, q in enumerate(TRUTHFULQA)])
    return {
        "vicuna": [("default", {"model_outputs": mine, "reference": ref})],
        "alpaca-eval": [("v1", {"model_outputs": str(outputs), "version": "v1"}),
                        ("v2", {"model_outputs": str(outputs), "version": "v2"})],
        "mt-bench": [("single", {"model_outputs": mt_a}),
                     ("pairwise", {"model_outputs": mt_a, "mode": "pairwise", "baseline_outputs": mt_b})],
        "rank": [("k3", {"model_outputs": systems})],
        "meta": [(s, {"strategy": s, "sets": ["Neighbor"]}) for s in ("vanilla", "metrics-reference-rules", "swap")],
        "truthfulqa": [("chat", {"model_outputs": tqa, "mode": "chat"})],
    }


CASES = [(name, case) for name in JUDGES.names() if JUDGES.get(name).uses_llm
         for case in {"vicuna": ["default"], "alpaca-eval": ["v1", "v2"], "mt-bench": ["single", "pairwise"],
                      "rank": ["k3"], "meta": ["vanilla", "metrics-reference-rules", "swap"],
                      "truthfulqa": ["chat"]}[name]]


def test_every_judge_with_an_llm_is_covered() -> None:
    assert {n for n, _ in CASES} == {n for n in JUDGES.names() if JUDGES.get(n).uses_llm}


def _run(tmp_path: Path, name: str, case: str, fake: FakeJudgeLLM, **config: Any) -> dict[str, Any]:
    settings = dict(_inputs(tmp_path))[name]
    chosen = dict(settings)[case]
    cfg = JudgeConfig(kind=name, judge="fake", run_dir=str(tmp_path / "run"), limit=2, settings=chosen, **config)
    return run_judge(cfg, open_llm=lambda c, cache: fake, log=lambda *_: None)


def _examples(tmp_path: Path, record: dict) -> list[dict]:
    path = tmp_path / "run" / record["examples_file"]
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("name,case", CASES)
def test_constrained_verdicts_have_no_failures(tmp_path: Path, name: str, case: str) -> None:
    record = _run(tmp_path, name, case, FakeJudgeLLM("honour", seed=3))
    assert record["failures"] == 0 and record["request_errors"] == 0
    examples = _examples(tmp_path, record)
    assert examples and all(e["verdict"]["type"] != "parse_failure" for e in examples)
    final = [e for e in examples if e["constraint"] is not None]
    assert final, "every judge constrains its verdicts"
    pm = record["metrics"][record["primary_metric"]]
    assert pm is not None and pm == pm  # a real number, not NaN
    saved = json.loads((tmp_path / "run" / "eval" / Path(record["examples_file"]).parent.name /
                        f"{record['name']}.json").read_text())
    assert saved["kind"] == "judge" and saved["key"] == record["key"] and saved["n"] == record["n"]
    assert {"metrics", "standard_errors", "failures", "usage", "cost", "model"} <= set(saved)


@pytest.mark.parametrize("name,case", CASES)
def test_unconstrained_garbage_is_counted_never_guessed(tmp_path: Path, name: str, case: str) -> None:
    record = _run(tmp_path, name, case, FakeJudgeLLM("ignore"))
    examples = _examples(tmp_path, record)
    verdicts = [e for e in examples if e["constraint"] is not None]
    assert verdicts and all(e["verdict"]["type"] == "parse_failure" for e in verdicts)
    assert record["failures"] == len(verdicts) == len(record["breakdown"]["failures"])
    pm = record["metrics"][record["primary_metric"]]
    if name == "meta":
        assert pm == 0.0  # LLMBar's protocol scores a pair without a winner as wrong (and counts it)
    else:
        assert pm is None or pm != pm  # no verdict, no number (strict JSON: null)


@pytest.mark.parametrize("name,case", CASES)
def test_a_constrained_verdict_always_parses(tmp_path: Path, name: str, case: str, monkeypatch) -> None:
    """Every output a constraint allows (all choices; 30 regex samples) reads as a verdict."""
    seen: list[Any] = []
    original = judge_module.JudgeContext.run

    def spy(self, calls, desc="judge"):
        seen.extend(calls)
        return original(self, calls, desc)

    monkeypatch.setattr(judge_module.JudgeContext, "run", spy)
    _run(tmp_path, name, case, FakeJudgeLLM("honour"))
    constrained = [c for c in seen if c.constraint is not None]
    assert constrained
    rng = random.Random(0)
    for call in constrained:
        texts = list(call.constraint.choice or ()) or [sample_regex(call.constraint.regex, rng) for _ in range(30)]
        for text in texts:
            logprobs = [TokenLogprob(text, -0.2, {text: -0.2})] if call.decoding.get("logprobs") else None
            verdict = call.parse(Completion(choices=[Choice(text, "stop", logprobs)]))
            assert not isinstance(verdict, ParseFailure), (call.id, text, verdict)


def test_both_orders_are_judged(tmp_path: Path) -> None:
    ids = {n: {e["id"] for e in _examples(tmp_path, _run(tmp_path, n, c, FakeJudgeLLM("honour")))}
           for n, c in (("vicuna", "default"), ("mt-bench", "pairwise"), ("rank", "k3"), ("meta", "vanilla"))}
    assert ids["vicuna"] == {"1/ab", "1/ba", "2/ab", "2/ba"}
    assert ids["mt-bench"] == {f"{q}/t{t}/{o}" for q in (81, 82) for t in (1, 2) for o in ("ab", "ba")}
    assert ids["rank"] == {"0/fwd", "0/rev", "1/fwd", "1/rev"}
    assert ids["meta"] == {"Neighbor/0/ab", "Neighbor/0/ba", "Neighbor/1/ab", "Neighbor/1/ba"}


def test_changed_answers_are_rejudged_and_unchanged_are_not(tmp_path: Path) -> None:
    fake = FakeJudgeLLM("honour")
    first = _run(tmp_path, "vicuna", "default", fake)
    assert len(fake.sent) == 4
    fake.sent.clear()
    again = _run(tmp_path, "vicuna", "default", fake)  # same answers: the finished result stands
    assert fake.sent == [] and again["key"] == first["key"]
    # The same question ids, one answer changed: only that question's two orders are judged again.
    (tmp_path / "mine.jsonl").write_text(
        json.dumps({"question_id": 1, "model_id": "mine", "choices": [{"turns": ["My answer 1."]}]}) + "\n" +
        json.dumps({"question_id": 2, "model_id": "mine", "choices": [{"turns": ["A NEW answer 2."]}]}) + "\n")
    changed = _run(tmp_path, "vicuna", "default", fake)
    assert sorted(r.key for r in fake.sent) == ["2/ab", "2/ba"]
    assert changed["key"] != first["key"]
    new = {e["id"]: e for e in _examples(tmp_path, changed)}
    assert "A NEW answer 2." in json.dumps(fake.sent[0].messages) and len(new) == 4
    # Another judge never reuses a verdict either (force: it replaces the first judge's result).
    other = FakeJudgeLLM("honour", model="another-judge")
    _run(tmp_path, "vicuna", "default", other, force=True)
    assert len(other.sent) == 4


def test_changed_options_rejudge(tmp_path: Path) -> None:
    fake = FakeJudgeLLM("honour")
    _run(tmp_path, "mt-bench", "single", fake)
    fake.sent.clear()
    _run(tmp_path, "mt-bench", "single", fake, judge_options={"max_tokens": 7})
    assert len(fake.sent) == 4 and {r.decoding.max_tokens for r in fake.sent} == {7}
    fake.sent.clear()
    unconstrained = _run(tmp_path, "mt-bench", "single", fake, judge_options={"max_tokens": 7}, constrain=False)
    assert len(fake.sent) == 4 and all(r.decoding.constraint is None for r in fake.sent)
    # a sampling seed (or top_p) fills what the judge's requests leave unset: other verdicts,
    # never "done already" with the verdicts sampled under the old one
    seeded = _run(tmp_path, "mt-bench", "single", fake, judge_options={"max_tokens": 7, "seed": 5}, constrain=False)
    assert seeded["key"] != unconstrained["key"]
    reseeded = _run(tmp_path, "mt-bench", "single", fake, judge_options={"max_tokens": 7, "seed": 6}, constrain=False)
    assert reseeded["key"] not in (seeded["key"], unconstrained["key"])


def test_request_errors_are_failures_and_a_rerun_retries_only_them(tmp_path: Path) -> None:
    failing = FakeJudgeLLM("honour", fail={"1/ba"})
    record = _run(tmp_path, "vicuna", "default", failing)
    assert record["request_errors"] == 1 and record["failures"] == 1
    assert record["breakdown"]["failures"][0]["kind"] == "request_error"
    assert record["metrics"]["n_scored"] == 2  # question 1 scored from its other order
    fixed = FakeJudgeLLM("honour")
    again = _run(tmp_path, "vicuna", "default", fixed)
    assert [r.key for r in fixed.sent] == ["1/ba"] and again["failures"] == 0


def test_cost_and_usage_in_the_record(tmp_path: Path) -> None:
    fake = FakeJudgeLLM("honour")  # prices 1.0 / 2.0 USD per 1k tokens
    record = _run(tmp_path, "alpaca-eval", "v1", fake)
    spent = record["cost"]
    assert spent["prompt_tokens"] > 0 and spent["completion_tokens"] > 0
    assert spent["usd"] == pytest.approx((spent["prompt_tokens"] * 1.0 + spent["completion_tokens"] * 2.0) / 1000)
    assert record["usage"]["misses"] == 2
    assert record["model"]["label"] == "mine" and record["task"] == "alpaca_eval_v1"


def test_truthfulqa_failures_are_counted_not_verdicts(tmp_path: Path) -> None:
    from drover.judges.judge import JudgeContext
    from drover.judges.truthfulqa import aggregate, judge_answers

    items = [("0", TRUTHFULQA[0], "Nothing happens."), ("1", TRUTHFULQA[1], "San Francisco.")]
    scorer = FakeJudgeLLM("honour")
    scorer.config.backend = "hf"  # auto -> the log-prob route
    scorer.fail = {" no"}  # every second scoring request fails
    truth = judge_answers(JudgeContext(scorer, "s", "s", None), "truth", items)
    assert truth == [None, None]
    scorer.fail = set()
    assert judge_answers(JudgeContext(scorer, "s", "s", None), "truth", items) == [True, True]  # P(yes) > 0.5
    chat = FakeJudgeLLM("ignore", reply=lambda r: "Maybe." if "Nothing" in r.messages[-1][1] else "No.")
    info = judge_answers(JudgeContext(chat, "c", "c", None), "info", items, mode="chat")
    assert info == [None, False]  # "Maybe." is a failure, not a "no"
    failing = FakeJudgeLLM("honour", fail={"1/info"})
    assert judge_answers(JudgeContext(failing, "c", "c", None), "info", items, mode="chat")[1] is None
    m = aggregate([True, True], info)
    assert m["informative"] == 0.0 and m["n_judge_failures"] == 1.0 and m["truthful"] == 100.0


def test_fake_http_endpoint_honours_ignores_or_rejects_constraints() -> None:
    import re
    import urllib.error
    import urllib.request

    from drover.llm.testing import FakeOpenAIServer

    def post(server: FakeOpenAIServer, extra: dict) -> tuple[int, str]:
        body = json.dumps({"model": "fake", "messages": [{"role": "user", "content": "judge"}], **extra}).encode()
        request = urllib.request.Request(f"{server.base_url}/chat/completions", body,
                                         {"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return 200, json.loads(response.read())["choices"][0]["message"]["content"]
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    with FakeOpenAIServer(constraints="honour") as server:
        assert post(server, {"guided_choice": ["[[A]]", "[[B]]"]})[1] in ("[[A]]", "[[B]]")
        assert re.fullmatch(r"(10|[1-9]) (10|[1-9])", post(server, {"guided_regex": r"(10|[1-9]) (10|[1-9])"})[1])
    with FakeOpenAIServer() as server:
        assert post(server, {"guided_choice": ["yes", "no"]}) == (200, "answer: judge")
    with FakeOpenAIServer(constraints="reject") as server:
        assert post(server, {"guided_choice": ["yes", "no"]})[0] == 400 and post(server, {}) == (200, "answer: judge")


@pytest.mark.parametrize("stage", ["judge-vicuna", "judge-alpaca-eval"])
def test_quickstart_judge_stages_give_a_verdict_for_every_question(tmp_path: Path, stage: str) -> None:
    """The quickstart's own judge arguments: with constraints honoured, 0 failures; and every
    constrained verdict fits its max_tokens even at one character per token (no truncation)."""
    import argparse

    from drover.commands.judge import add_arguments, build_config
    from drover.recipes import base_variables, load_recipe, resolve

    recipe = load_recipe("quickstart")
    variables = {**base_variables(recipe), "services.teacher.url": "http://127.0.0.1:9/v1", "judge_limit": "3"}
    args = [resolve(str(a), variables, stage) for a in next(s for s in recipe.stages if s.name == stage).args]
    outputs = args[args.index("--model-outputs") + 1]
    questions = [json.loads(line) for line in
                 (Path(variables["drover_data"]) / "vicuna80" / "question.jsonl").read_text().splitlines()[:3]]
    rows = ([_conversation(q["question_id"], q["text"], "gibberish answer") for q in questions]
            if stage == "judge-vicuna" else [_conversation(n, i, "gibberish answer") for n, i in enumerate(ALPACA)])
    args[args.index("--model-outputs") + 1] = _jsonl(tmp_path / Path(outputs).name, rows)
    args[args.index("--run-dir") + 1] = str(tmp_path / "run")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = build_config(parser.parse_args(args))
    record = run_judge(config, open_llm=lambda c, cache: FakeJudgeLLM("honour"), log=lambda *_: None)
    assert record["failures"] == 0 and record["n_judgments"] > 0
    pm = record["metrics"][record["primary_metric"]]
    assert pm is not None and pm == pm
    for example in _examples(tmp_path, record):
        constraint = example["constraint"]
        longest = (max(map(len, constraint["choice"])) if "choice" in constraint else
                   max(len(sample_regex(constraint["regex"], random.Random(k))) for k in range(50)))
        assert longest + 1 <= example["decoding"]["max_tokens"], (stage, constraint, example["decoding"])


def test_judged_model_is_named_as_drover_eval_names_it(tmp_path: Path) -> None:
    """A model's benchmark and judge results share one report row: drover's "teacher:SPEC"
    answer source becomes the model directory relative to the run (issue 16)."""
    from drover.judges.stage import answers_label

    model = tmp_path / "run" / "train" / "sft" / "model"
    model.mkdir(parents=True)
    assert answers_label(f"teacher:{model}", tmp_path / "run") == "train/sft/model"
    assert answers_label("teacher:http://127.0.0.1:9/v1#tiny", tmp_path / "run") == "tiny"
    assert answers_label("policy-vicuna", tmp_path / "run") == "policy-vicuna"


def test_a_second_judge_never_silently_replaces_the_first_ones_verdicts(tmp_path: Path) -> None:
    """Same answers, same protocol, default result name, another judge: refused before any
    request, one line naming the stored judge; `--name` keeps both, force=true replaces."""
    from drover.errors import ConfigError

    first = _run(tmp_path, "vicuna", "default", FakeJudgeLLM("honour", model="judge-a"))
    assert first["judge"] == "judge-a"
    second = FakeJudgeLLM("honour", model="judge-b")
    with pytest.raises(ConfigError, match="holds the verdicts of judge 'judge-a', and 'judge-b' is another judge"):
        _run(tmp_path, "vicuna", "default", second)
    assert second.stats.misses == 0 and second.stats.hits == 0
    stored = json.loads((tmp_path / "run" / first["examples_file"]).with_suffix("").with_suffix(".json").read_text())
    assert stored["judge"] == "judge-a"
    settings = dict(_inputs(tmp_path)["vicuna"])["default"]
    both = run_judge(JudgeConfig(kind="vicuna", judge="fake", run_dir=str(tmp_path / "run"), limit=2,
                                 settings=settings, name="vicuna-judge-b"),
                     open_llm=lambda c, cache: second, log=lambda *_: None)
    assert both["judge"] == "judge-b" and both["name"] == "vicuna-judge-b"
    assert _run(tmp_path, "vicuna", "default", FakeJudgeLLM("honour", model="judge-a"))["key"] == first["key"]
    replaced = _run(tmp_path, "vicuna", "default", FakeJudgeLLM("honour", model="judge-b"), force=True)
    assert replaced["judge"] == "judge-b"


def test_another_sampling_seed_rejudges_every_call(tmp_path: Path) -> None:
    """A judge option that only fills what the calls leave unset (the LLM's seed, top_p) changes
    the verdicts: a re-run under it sends every call again, never the stored verdicts of the
    old seed under the new result key (the per-call keys missed it)."""
    from drover.llm.config import LLMConfig

    fake = FakeJudgeLLM("honour")

    def run(**options: Any) -> dict[str, Any]:
        fake.config = LLMConfig(backend="openai", model="fake-judge", base_url="http://fake.invalid/v1", **options)
        fake.sent.clear()
        cfg = JudgeConfig(kind="mt-bench", judge="fake", run_dir=str(tmp_path / "run"), limit=2,
                          settings=dict(dict(_inputs(tmp_path))["mt-bench"])["single"],
                          judge_options={**options, "temperature": 0.7})
        return run_judge(cfg, open_llm=lambda c, cache: fake, log=lambda *_: None)

    plain = run()
    assert len(fake.sent) == 4
    run()
    assert fake.sent == []  # nothing changed: nothing re-sent
    seeded = run(seed=5)
    assert len(fake.sent) == 4 and seeded["key"] != plain["key"]
    run(seed=6)
    assert len(fake.sent) == 4
    run(seed=6, top_p=0.5)
    assert len(fake.sent) == 4
    run(seed=6, top_p=0.5)
    assert fake.sent == []
    run()  # back to the defaults: the first run's settings, judged again (its journal was replaced)
    assert len(fake.sent) == 4


def test_the_llms_constraints_mode_is_part_of_the_result_key(tmp_path: Path) -> None:
    """`judge_options.constraints: off` drops every verdict's constraint (free text, parsed as it
    comes; as constrain=false, which is keyed) and `on` refuses unconstrained fallbacks: a result
    judged under one is not "done already" under another."""
    fake = FakeJudgeLLM("honour")
    logs: list[str] = []

    def run(**options: Any) -> dict[str, Any]:
        cfg = JudgeConfig(kind="mt-bench", judge="fake", run_dir=str(tmp_path / "run"), limit=2,
                          settings=dict(dict(_inputs(tmp_path))["mt-bench"])["single"], judge_options=options)
        return run_judge(cfg, open_llm=lambda c, cache: fake, log=logs.append)

    off = run(constraints="off")
    logs.clear()
    auto = run()
    assert auto["key"] != off["key"] and not any("done already" in line for line in logs)
    assert run(constraints="on")["key"] not in (off["key"], auto["key"])


def test_an_integer_temperature_is_the_same_setting_as_its_float(tmp_path: Path) -> None:
    """`judge_options.temperature=1` (YAML reads an int) and `=1.0` are one setting: the same
    result key and the same calls, not a second judging paid again under another key."""
    fake = FakeJudgeLLM("honour")
    first = _run(tmp_path, "mt-bench", "single", fake, judge_options={"temperature": 1})
    fake.sent.clear()
    again = _run(tmp_path, "mt-bench", "single", fake, judge_options={"temperature": 1.0})
    assert again["key"] == first["key"] and fake.sent == []
