"""Pure parts of the generation stages: filters, numbered-task parsers, inputs, batching,
and the stage logic driven by a scripted LLM (what a real teacher would say)."""

from __future__ import annotations

import doctest
import json
from dataclasses import dataclass, field

import pytest

import drover.generate.filters as filters
import drover.generate.task_blocks as task_blocks
from drover.generate.batching import run_grouped
from drover.generate.filters import BLACKLIST_ALPACA, BLACKLIST_SELF_INSTRUCT, instruction_problem
from drover.generate.inputs import read_prompts
from drover.generate.task_blocks import (Rejected, Task, encode_alpaca_prompt, parse_alpaca_tasks,
                                         parse_classification_instances, parse_generation_instances,
                                         parse_self_instruct_instructions)
from drover.completions import Choice, Completion, TokenLogprob


def test_doctests():
    assert doctest.testmod(filters).failed == 0
    assert doctest.testmod(task_blocks).failed == 0


@pytest.mark.parametrize("inst,reason", [
    ("Give three tips for staying healthy.", None),
    ("Name a fruit", "too short (<= 3 words)"),
    (" ".join(["word"] * 151), "too long (> 150 words)"),
    ("Describe the image of a cat in detail.", "blacklisted word 'image'"),
    ("Please go to the store and buy milk.", "blacklisted word 'go to'"),
    ("Compose a short piece of music for piano.", "blacklisted word 'music'"),
    ("Write a program that prints primes.", "starts with 'Write a program'"),
    ('"Quote this sentence back to me please."', "starts with punctuation"),
    ("Écrivez une phrase sur la mer.", "starts with a non-ASCII character"),
    ("Summarize the profile of this user please.", None),  # "file" only as a whole word
])
def test_instruction_filters(inst, reason):
    assert instruction_problem(inst, BLACKLIST_ALPACA) == reason


def test_self_instruct_blacklist_has_no_alpaca_additions():
    assert instruction_problem("Compose some music for a short film.", BLACKLIST_SELF_INSTRUCT) is None
    assert set(BLACKLIST_ALPACA) - set(BLACKLIST_SELF_INSTRUCT) == {"video", "audio", "music", "flowchart", "diagram"}


def test_alpaca_prompt_encoding_matches_the_original_layout():
    prompt = encode_alpaca_prompt("HEADER", [Task("Say  hi:", "", "Hi"), Task("Add.", "1, 2", "3")])
    assert prompt == ("HEADER\n###\n1. Instruction: Say hi\n1. Input:\n<noinput>\n1. Output:\nHi\n"
                      "###\n2. Instruction: Add.\n2. Input:\n1, 2\n2. Output:\n3\n###\n3. Instruction:")


REPLY = """ Give me three tips to sleep better.
4. Input:
<noinput>
4. Output:
Keep a schedule, avoid screens, and keep the room dark.
###
5. Instruction: Classify the sentiment of the review.
5. Input:
The food was great!
5. Output:
Positive
###
6. Instruction: This block lost its fields
###
7. **Instruction:** Convert the temperature to Celsius.
7. **Input:**
85 F
7. **Output:**
29.4 C
###
8. Instruction: Write a poem about the sea and its
8. Input:"""


def test_alpaca_blocks_from_a_realistic_reply():
    items = parse_alpaca_tasks(REPLY, 3, "length")
    tasks = [i for i in items if isinstance(i, Task)]
    rejected = [i for i in items if isinstance(i, Rejected)]
    assert [t.instruction for t in tasks] == ["Give me three tips to sleep better.",
                                              "Classify the sentiment of the review.",
                                              "Convert the temperature to Celsius."]
    assert tasks[0].input == "" and tasks[1].input == "The food was great!" and tasks[2].output == "29.4 C"
    assert [r.reason for r in rejected] == ["malformed block (expected numbered Instruction/Input/Output)",
                                            "truncated (finish_reason=length)"]


def test_alpaca_blocks_when_a_chat_model_restates_the_number_or_misnumbers():
    items = parse_alpaca_tasks("4. Instruction: Name two planets please.\n4. Input:\n<noinput>\n4. Output:\n"
                               "Mars, Venus\n###\n9. Instruction: Wrong number here.\n9. Input:\n\n9. Output:\nx", 3, "stop")
    assert isinstance(items[0], Task) and items[0].instruction == "Name two planets please."
    assert isinstance(items[1], Rejected)  # block 5 numbered 9: the original split rejects it too
    assert parse_alpaca_tasks("", 3, "stop") == []


def test_self_instruct_instruction_list():
    got = parse_self_instruct_instructions("Find the   largest number.\n10. Name three rivers.\n11.\n", "stop", 9)
    assert got == ["Find the largest number.", "Name three rivers."]
    assert isinstance(parse_self_instruct_instructions("a\n10. b", "length", 9), Rejected)


def test_instances_filters_invalid_and_ambiguous():
    # same input with two different outputs -> the whole task is dropped (original rule)
    assert parse_generation_instances("Example 1\nInput: a\nOutput: b\nExample 2\nInput: a\nOutput: c", "T", "stop") == []
    # input == output, output ending with ':', duplicates
    got = parse_generation_instances("Example 1\nX: 1\nOutput: X: 1\nExample 2\nY\nOutput: ends with:\n"
                                     "Example 3\nZ\nOutput: ok\nExample 4\nZ\nOutput: ok", "T", "stop")
    assert [(t.input, t.output) for t in got] == [("Z", "ok")]
    # cut off by length: the last instance goes
    got = parse_classification_instances("Class label: A\nin a\nClass label: B\nin b", "T", "length")
    assert [(t.input, t.output) for t in got] == [("in a", "A")]
    assert parse_classification_instances("no labels here", "T", "stop") == []
    assert [(t.input, t.output) for t in parse_generation_instances("Output: 42", "T", "stop")] == [("", "42")]


def test_read_prompts_accepts_alpaca_selfinstruct_and_records(tmp_path):
    alpaca = tmp_path / "a.json"
    alpaca.write_text(json.dumps([{"instruction": "Add.", "input": "1, 2", "output": "3"},
                                  {"instruction": "Say hi.", "input": "", "output": ""}]))
    got = list(read_prompts(alpaca))
    assert [p.id for p in got] == ["0", "1"]
    assert got[0].user_text == "Add.\n\n1, 2" and got[0].reference == "3" and got[1].reference is None
    conv = tmp_path / "c.jsonl"
    conv.write_text(json.dumps({"id": "x", "messages": [{"role": "user", "content": "Hi?"},
                                                        {"role": "assistant", "content": "Hello."}]}) + "\n")
    (p,) = read_prompts(conv)
    assert p.instruction == "Hi?" and p.reference == "Hello." and len(p.messages) == 1
    tasks = tmp_path / "s.jsonl"
    tasks.write_text(json.dumps({"id": "t1", "instruction": "Sort.", "instances": [{"input": "3 1", "output": "1 3"},
                                                                                   {"input": "2 1", "output": "1 2"}]}))
    assert [p.id for p in read_prompts(tasks)] == ["t1_0", "t1_1"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "?"}) + "\n")
    from drover.errors import InputError

    with pytest.raises(InputError, match="bad.jsonl:1"):
        list(read_prompts(bad))


class EchoLLM:
    def run(self, requests, desc="", total=None):
        for r in requests:
            yield r


def test_run_grouped_keeps_groups_and_order():
    groups = [("a", [1, 2]), ("b", []), ("c", [3]), ("d", []), ("e", [4, 5, 6]), ("f", [])]
    assert list(run_grouped(EchoLLM(), groups)) == [("a", [1, 2]), ("b", []), ("c", [3]), ("d", []),
                                                    ("e", [4, 5, 6]), ("f", [])]
    assert list(run_grouped(EchoLLM(), [("x", []), ("y", [])])) == [("x", []), ("y", [])]


# --- stages driven by a scripted LLM -----------------------------------------------------

@dataclass
class _Stats:
    misses: int = 0

    def to_dict(self):
        return {"hits": 0, "misses": self.misses, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0,
                "errors": 0}


@dataclass
class _Config:
    model: str = "scripted"


@dataclass
class ScriptedLLM:
    """`reply(request) -> text | (text, finish_reason) | Completion`."""

    reply: object
    config: _Config = field(default_factory=_Config)
    stats: _Stats = field(default_factory=_Stats)
    seen: list = field(default_factory=list)

    def run(self, requests, desc="", total=None):
        for request in requests:
            self.seen.append(request)
            self.stats.misses += 1
            out = self.reply(request)
            if isinstance(out, Completion):
                yield out
                continue
            text, finish = out if isinstance(out, tuple) else (out, "stop")
            logprobs = [TokenLogprob(w, -1.0) for w in text.split()]
            yield Completion(choices=[Choice(text, finish, logprobs)], key=request.key)

    def close(self):
        pass


def _patch(monkeypatch, module, llms: dict):
    def fake_open(spec, cache, options=None, role="teacher"):
        return llms[role]
    monkeypatch.setattr(module, "open_llm", fake_open)


def test_alpaca_mode_filters_and_keeps_with_scripted_teacher(tmp_path, monkeypatch):
    import drover.generate.self_instruct as si

    replies = iter([
        REPLY,  # 3 good blocks, 1 malformed, 1 truncated
        " Give me three tips to sleep better tonight.\n4. Input:\n<noinput>\n4. Output:\nSleep.\n###\n"
        "5. Instruction: Draw a picture of a cat for me.\n5. Input:\n<noinput>\n5. Output:\n...\n###\n"
        "6. Instruction: Explain how vaccines train the immune system.\n6. Input:\n<noinput>\n6. Output:\nThey ...",
    ] + ["nothing useful"] * 20)
    teacher = ScriptedLLM(lambda r: (next(replies), "length") if r.sample_index == 0 else next(replies))
    _patch(monkeypatch, si, {"teacher": teacher})
    out = tmp_path / "data" / "si.jsonl"
    config = si.SelfInstructConfig(output=str(out), teacher="x", num_instructions=4, request_batch_size=2,
                                   max_requests=4)
    summary = si.run_self_instruct(config)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["meta"]["instruction"] for r in records] == [
        "Give me three tips to sleep better.", "Classify the sentiment of the review.",
        "Convert the temperature to Celsius.", "Explain how vaccines train the immune system."]
    counts = summary["counts"]
    assert counts["kept"] == 4
    assert counts["rejected: near duplicate"] == 1  # "... sleep better tonight."
    assert counts["rejected: blacklisted word 'picture'"] == 1
    rejected = [json.loads(line) for line in (tmp_path / "data" / "si.rejected.jsonl").read_text().splitlines()]
    near = [r for r in rejected if r["reason"].startswith("near duplicate")]
    assert near and near[0]["rouge_l"] > 0.7
    # the prompt is Alpaca's: prompt.txt + 3 seed tasks, ending in "4. Instruction:"
    first = teacher.seen[0].messages[0][1]
    assert first.startswith("You are asked to come up with a set of 20 diverse task instructions.")
    assert first.endswith("###\n4. Instruction:") and first.count("###\n") == 4
    # resuming with a higher target continues from the next request, the pool reloaded
    teacher.seen.clear()
    config.num_instructions, config.max_requests = 5, 6
    si.run_self_instruct(config)
    assert [r.sample_index for r in teacher.seen] == [2, 3, 4, 5]  # the first run stopped after 2 calls


def test_self_instruct_mode_pipeline_with_scripted_teacher(tmp_path, monkeypatch):
    import drover.generate.self_instruct as si

    def reply(request):
        text = request.messages[0][1]
        if text.endswith("Is it classification?"):
            return " Yes" if "sentiment" in text.splitlines()[-2] else " No"
        if text.startswith("Given the classification task definition"):
            return "Class label: Positive\nSentence: I love it.\nClass label: Negative\nSentence: I hate it."
        if text.startswith("Come up with examples"):
            return "Example 1\nNumbers: 3, 1\nOutput: 1, 3\nExample 2\nNumbers: 9, 2\nOutput: 2, 9"
        n = request.sample_index
        return [" Classify the sentiment of this movie review as positive or negative.\n"
                "10. Sort the given list of numbers in ascending order.\n11. Draw a map of your town.",
                " Tell me whether the sentiment of the tweet is positive.\n10. Explain why the sky looks blue.",
                " Summarize the news article in two sentences.", " Suggest a name for a bakery."][n % 4]

    teacher = ScriptedLLM(reply)
    _patch(monkeypatch, si, {"teacher": teacher})
    out = tmp_path / "si.jsonl"
    summary = si.run_self_instruct(si.SelfInstructConfig(output=str(out), teacher="x", mode="self-instruct",
                                                         num_instructions=3, request_batch_size=2, max_requests=4))
    pool = [json.loads(line) for line in (tmp_path / "si.instructions.jsonl").read_text().splitlines()]
    assert len(pool) == 3
    prompt = teacher.seen[0].messages[0][1]
    assert prompt.startswith("Come up with a series of tasks:\n1. ") and prompt.endswith("\n9.")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    clf = [r for r in records if r["meta"]["is_classification"]]
    gen = [r for r in records if not r["meta"]["is_classification"]]
    assert clf and gen
    assert {r["messages"][-1]["content"] for r in clf} == {"Positive", "Negative"}
    assert {r["messages"][-1]["content"] for r in gen} == {"1, 3", "2, 9"}
    assert summary["counts"]["rejected: blacklisted word 'map'"] >= 1


def test_feedback_orders_by_score_and_records_unparseable(tmp_path, monkeypatch):
    import drover.generate.feedback as fb

    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"id": "q1", "instruction": "Name a colour.", "input": ""},
                                   {"id": "q2", "instruction": "Name a planet.", "input": ""}]))
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    for path, answers in ((a, ["Red.", "Mars."]), (b, ["Blue is a colour.", "Venus."])):
        path.write_text("".join(json.dumps({"id": q, "messages": [{"role": "user", "content": "x"},
                                                                  {"role": "assistant", "content": ans}]}) + "\n"
                                for q, ans in zip(["q1", "q2"], answers)))
    script = {"Red.": "6\nok", "Blue is a colour.": "9\nbetter", "Mars.": "**Score: 7/10**\nfine",
              "Venus.": "I like it"}

    def reply(request):
        user = request.messages[-1][1]
        answer = user.split("[The Start of Assistant's Answer]\n")[1].split("\n\n[The End")[0]
        strict = "IMPORTANT" in user
        return script[answer] if not strict else ("still unsure" if answer == "Venus." else script[answer])

    judge = ScriptedLLM(reply)
    _patch(monkeypatch, fb, {"judge": judge})
    out = tmp_path / "data" / "fb.jsonl"
    config = fb.FeedbackConfig(input=str(prompts), output=str(out), judge="x",
                               responses=[f"small={a}", f"big={b}"], min_responses=2)
    summary = fb.run_feedback(config)
    (q1,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert q1["id"] == "q1"
    assert [(r["source"], r["score"]) for r in q1["responses"]] == [("big", 9.0), ("small", 6.0)]
    failures = [json.loads(line) for line in (tmp_path / "data" / "fb.failures.jsonl").read_text().splitlines()]
    assert failures[0]["id"] == "q2"
    (f,) = failures[0]["failures"]
    assert f["source"] == "big" and f["retried"] and f["raw"] == ["I like it", "still unsure"]
    assert summary["counts"]["ratings failed (recorded)"] == 1
    # joint mode: one prompt with both answers, scores by position
    judge2 = ScriptedLLM(lambda r: "8 3\nfirst is better")
    _patch(monkeypatch, fb, {"judge": judge2})
    out2 = tmp_path / "fb2.jsonl"
    fb.run_feedback(fb.FeedbackConfig(input=str(prompts), output=str(out2), judge="x", mode="joint",
                                      responses=[f"small={a}", f"big={b}"]))
    rows = [json.loads(line) for line in out2.read_text().splitlines()]
    assert [[(r["source"], r["score"]) for r in row["responses"]] for row in rows] == \
        [[("small", 8.0), ("big", 3.0)]] * 2
    assert "Assistant 1 and 2" in judge2.seen[0].messages[-1][1]


def test_contextual_rank_diversity_loop_and_judge_order(tmp_path, monkeypatch):
    import drover.generate.rank_contextual as rc

    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"id": "q1", "instruction": "Give tips for sleep.", "input": "", "output": "Sleep."}]))
    same = "go to bed early and avoid coffee in the evening"

    def policy_reply(request):
        k = request.sample_index
        if k in (0, 1):
            return same  # two identical samples: ROUGE-L 1.0 >= 0.8
        if k == 2:
            return "take a warm bath"
        if k == 3:
            return "read a paper book before sleeping"
        return f"a fresh resampled answer at temperature {request.decoding.temperature:.1f}"

    policy = ScriptedLLM(policy_reply)
    judge = ScriptedLLM(lambda r: "Open-ended.\n###Response 4:\nA reference.\n\nResponse 0: 9\nResponse 1: 14\n"
                                  "Response 2: 4\nResponse 3: 7\nResponse 4: 15\n\nrank: [4, 1, 0, 3, 2]")
    _patch(monkeypatch, rc, {"policy": policy, "judge": judge})
    out = tmp_path / "rc.jsonl"
    rc.run_rank_contextual(rc.RankContextualConfig(input=str(prompts), output=str(out), policy="p", judge="j"))
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    resampled = [r for r in policy.seen if r.sample_index >= 4]
    assert len(resampled) == 1 and resampled[0].decoding.temperature == pytest.approx(1.1)
    texts = [r["content"] for r in row["responses"]]
    assert texts[0].startswith("a fresh resampled answer")  # Response 1 was resampled, ranked first
    assert [r["score"] for r in row["responses"]] == [14.0, 9.0, 7.0, 4.0]
    assert row["reference"] == "Sleep." and row["meta"]["judge_reference"] == "A reference."
    assert row["meta"]["max_pairwise_rouge_l"] < 0.8
    judge_prompt = judge.seen[0].messages[-1][1]
    assert "### Instruction:\nGive tips for sleep." in judge_prompt and "###Response 3:\n" in judge_prompt


def test_contextual_rank_never_writes_near_duplicates_and_judges_at_temperature_0(tmp_path, monkeypatch):
    import drover.generate.rank_contextual as rc

    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"id": "q1", "instruction": "Give tips for sleep.", "input": "", "output": "S."},
                                   {"id": "q2", "instruction": "Name a fruit.", "input": "", "output": "Apple."}]))
    same = "go to bed early and avoid coffee in the evening"
    distinct = ["take a warm bath", "read a paper book before sleeping", "keep the room cool and dark"]

    def policy_reply(request):
        if request.key == "q1":  # every resample repeats itself: the pair stays at ROUGE-L 1.0
            return same if request.sample_index in (0, 1) or request.sample_index >= 4 else distinct[0]
        return (distinct + ["an apple a day"])[request.sample_index % 4]

    policy = ScriptedLLM(policy_reply)
    judge = ScriptedLLM(lambda r: "rank: [1, 0, 3, 2]")
    _patch(monkeypatch, rc, {"policy": policy, "judge": judge})
    out = tmp_path / "rc.jsonl"
    rc.run_rank_contextual(rc.RankContextualConfig(input=str(prompts), output=str(out), policy="p", judge="j"))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q2"]  # q1 kept a near-duplicate pair after 3 trials: not ranked
    (failure,) = [json.loads(line) for line in (tmp_path / "rc.failures.jsonl").read_text().splitlines()]
    assert failure["id"] == "q1" and "after 3 resampling trials" in failure["reason"]
    assert len(judge.seen) == 1 and judge.seen[0].decoding.temperature == 0.0  # Tuna's paper: temperature 0
    assert len([r for r in policy.seen if r.key == "q1" and r.sample_index >= 4]) == 3


def test_probabilistic_rank_uses_length_normalised_logprob(tmp_path, monkeypatch):
    import drover.generate.rank_probabilistic as rp

    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"id": "q", "instruction": "Say something.", "output": "orig"}]))
    answers = {0: "a b", 1: "a b c d e f", 2: "a b c", 3: "a b"}  # duplicate of sample 0

    def reply(request):
        text = answers[request.sample_index]
        logprobs = [TokenLogprob(w, -2.0 if request.sample_index == 1 else -1.0) for w in text.split()]
        return Completion(choices=[Choice(text, "stop", logprobs)], key=request.key)

    _patch(monkeypatch, rp, {"teacher": ScriptedLLM(reply)})
    out = tmp_path / "rp.jsonl"
    summary = rp.run_rank_probabilistic(rp.RankProbabilisticConfig(input=str(prompts), output=str(out), teacher="t"))
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    expected = sorted([(-2 / 2 ** 1.3, "a b"), (-12 / 6 ** 1.3, "a b c d e f"), (-3 / 3 ** 1.3, "a b c")], reverse=True)
    assert [r["content"] for r in row["responses"]] == [text for _, text in expected]
    assert [r["score"] for r in row["responses"]] == pytest.approx([score for score, _ in expected])
    assert row["reference"] == "orig"
    assert summary["counts"]["duplicate samples dropped"] == 1
    assert not (tmp_path / "rp.failures.jsonl").exists()  # a sidecar appears only when something is recorded


def test_an_empty_teacher_answer_is_recorded_not_failed_and_not_asked_again(tmp_path, monkeypatch):
    """A teacher that answers nothing (e.g. EOS first) gave its answer: re-running would read
    the same answer back from the cache, so it is rejected (recorded), not a failure that
    leaves a recipe stage failed forever; an LLM error stays a failure, retried next run."""
    import drover.generate.answers as ans

    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"id": f"p{i}", "instruction": f"Task {i}.", "input": ""} for i in range(3)]))
    replies = {"p0": "An answer.", "p1": "  \n ",
               "p2": Completion(choices=[], error="HTTP 400: prompt too long")}
    teacher = ScriptedLLM(lambda r: replies[r.key])
    _patch(monkeypatch, ans, {"teacher": teacher})
    out = tmp_path / "data" / "answers.jsonl"
    summary = ans.run_answers(ans.AnswersConfig(input=str(prompts), output=str(out), teacher="x"))
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["p0"]
    rejected = [json.loads(line) for line in (tmp_path / "data" / "answers.rejected.jsonl").read_text().splitlines()]
    assert [(r["id"], r["reason"]) for r in rejected] == [("p1", "empty answer")]
    assert summary["counts"]["rejected (empty answer)"] == 1
    assert summary["counts"]["failed (LLM error; re-run to retry)"] == 1
    teacher.seen.clear()
    again = ans.run_answers(ans.AnswersConfig(input=str(prompts), output=str(out), teacher="x"))
    assert [r.key for r in teacher.seen] == ["p2"]  # only the failed item is asked again
    assert again["counts"]["already done"] == 2


def test_probabilistic_rank_retries_llm_errors_and_records_only_what_the_teacher_gave(tmp_path, monkeypatch):
    """A record short of responses because samples failed (LLM errors) is retried next run,
    not written to failures.jsonl for good; one short because the teacher's samples were all
    alike is recorded and not asked again, and does not leave the stage failed."""
    import drover.generate.rank_probabilistic as rp

    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"id": q, "instruction": f"Say {q}."} for q in ("ok", "alike", "flaky")]))
    broken = {"flaky"}

    def reply(request):
        if request.key in broken and request.sample_index > 0:
            return Completion(choices=[], error="HTTP 500: gave up after 7 attempts", key=request.key)
        text = "same words" if request.key == "alike" else f"words {request.sample_index}"
        return Completion(choices=[Choice(text, "stop", [TokenLogprob(w, -1.0) for w in text.split()])],
                          key=request.key)

    teacher = ScriptedLLM(reply)
    _patch(monkeypatch, rp, {"teacher": teacher})
    out = tmp_path / "rp.jsonl"
    config = rp.RankProbabilisticConfig(input=str(prompts), output=str(out), teacher="t")
    summary = rp.run_rank_probabilistic(config)
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["ok"]
    recorded = [json.loads(line)["id"] for line in (tmp_path / "rp.failures.jsonl").read_text().splitlines()]
    assert recorded == ["alike"]
    counts = summary["counts"]
    assert counts["records failed (LLM error; re-run to retry)"] == 1
    assert counts["records rejected: too few usable responses (recorded)"] == 1
    broken.clear()
    teacher.seen.clear()
    again = rp.run_rank_probabilistic(config)
    assert {r.key for r in teacher.seen} == {"flaky"}
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["ok", "flaky"]
    assert not any("failed" in key for key in again["counts"])


def test_contextual_rank_retries_a_policy_llm_error_and_records_empty_samples(tmp_path, monkeypatch):
    """A policy sample lost to an LLM error leaves its prompt for the next run (not recorded
    as failed for good); a policy that answered nothing is recorded and not asked again."""
    import drover.generate.rank_contextual as rc

    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"id": q, "instruction": f"Tell me about {q}."} for q in ("flaky", "mute")]))
    broken = {"flaky"}
    words = ["apples grow on trees in orchards", "the moon orbits our planet slowly",
             "rivers carry water to the sea", "bread is baked from flour and yeast"]

    def policy_reply(request):
        if request.key in broken and request.sample_index == 1:
            return Completion(choices=[], error="HTTP 503: gave up after 7 attempts", key=request.key)
        return "   " if request.key == "mute" and request.sample_index == 2 else words[request.sample_index % 4]

    policy = ScriptedLLM(policy_reply)
    judge = ScriptedLLM(lambda r: "Response 0: 9\nResponse 1: 8\nResponse 2: 7\nResponse 3: 6\n\nrank: [0, 1, 2, 3]")
    _patch(monkeypatch, rc, {"policy": policy, "judge": judge})
    out = tmp_path / "rc.jsonl"
    config = rc.RankContextualConfig(input=str(prompts), output=str(out), policy="p", judge="j", n=4)
    summary = rc.run_rank_contextual(config)
    assert not out.exists() or not out.read_text().strip()
    recorded = [json.loads(line) for line in (tmp_path / "rc.failures.jsonl").read_text().splitlines()]
    assert [(r["id"], r["reason"]) for r in recorded] == [("mute", "policy samples empty")]
    assert summary["counts"]["records failed (policy LLM error; re-run to retry)"] == 1
    broken.clear()
    policy.seen.clear()
    rc.run_rank_contextual(config)
    assert {r.key for r in policy.seen} == {"flaky"}
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["flaky"]


def test_feedback_samples_one_model_twice_as_two_samples(tmp_path, monkeypatch, tiny_model_dir):
    """`sample: [a=M, b=M]` asks M for two answers per prompt: they are the model's samples 0
    and 1, not one cached answer returned under both names (both rated, a pair of equals)."""
    import drover.generate.feedback as fb
    from drover.generate.stage import open_llm

    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"id": "q1", "instruction": "Name a colour.", "input": ""}]))
    judge = ScriptedLLM(lambda r: "7\nfine")
    monkeypatch.setattr(fb, "open_llm", lambda spec, cache, options=None, role="teacher":
                        judge if role == "judge" else open_llm(spec, cache, options, role))
    out = tmp_path / "data" / "fb.jsonl"
    fb.run_feedback(fb.FeedbackConfig(input=str(prompts), output=str(out), judge="x", sample_max_tokens=12,
                                      sample=[f"a={tiny_model_dir}", f"b={tiny_model_dir}"]))
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    texts = {r["source"]: r["content"] for r in row["responses"]}
    assert set(texts) == {"a", "b"} and texts["a"] != texts["b"]


def test_contextual_rank_retries_a_prompt_whose_resample_failed_with_an_llm_error(tmp_path, monkeypatch):
    """A resample lost to an LLM error is no verdict on diversity: the prompt is left for the next
    run instead of being recorded for good as "near-duplicates after resampling"."""
    import drover.generate.rank_contextual as rc

    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"id": "q1", "instruction": "Give tips for sleep.", "input": "", "output": "S."}]))
    same = "go to bed early and avoid coffee in the evening"
    distinct = ["take a warm bath", "read a paper book before sleeping", "keep the room cool and dark"]
    down = {True}

    def policy_reply(request):
        if request.sample_index >= 4 and down:  # every resample fails while the endpoint is down
            return Completion(choices=[], error="HTTP 503: gave up after 7 attempts", key=request.key)
        return same if request.sample_index in (0, 1) else distinct[request.sample_index % 3]

    policy = ScriptedLLM(policy_reply)
    judge = ScriptedLLM(lambda r: "rank: [1, 0, 3, 2]")
    _patch(monkeypatch, rc, {"policy": policy, "judge": judge})
    out = tmp_path / "rc.jsonl"
    config = rc.RankContextualConfig(input=str(prompts), output=str(out), policy="p", judge="j")
    summary = rc.run_rank_contextual(config)
    failures = tmp_path / "rc.failures.jsonl"
    assert not failures.exists() or not failures.read_text().strip()
    assert summary["counts"]["records failed (policy LLM error; re-run to retry)"] == 1
    down.clear()
    rc.run_rank_contextual(config)
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["q1"]
