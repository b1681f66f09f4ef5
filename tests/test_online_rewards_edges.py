"""Reward values and prompt files that must not slip through (review of issue #15): a NaN, inf
or non-number reward stops the run with one line naming the term and the record; a weight must
be finite; errors about a prompt name its real line even after blank lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drover.errors import ConfigError, DataError
from drover.records import Conversation, Message
from drover.rewards.kind import RewardInput, RewardSpec, RewardTerm


def _items(n: int = 2) -> list[RewardInput]:
    record = Conversation("r1", [Message("user", "How many?"), Message("assistant", "#### 3")])
    return [RewardInput(list(record.messages[:1]), "x" * (i + 1), record) for i in range(n)]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), None, "0.5", [1.0]])
def test_a_reward_that_is_not_a_finite_number_is_an_error_naming_term_and_record(bad):
    spec = RewardSpec([RewardTerm("length", params={"target": 1})])
    spec.fns[0] = lambda items: [0.5] + [bad] * (len(items) - 1)
    with pytest.raises(DataError, match=r"reward 'length': record 'r1': got .* not a finite number"):
        spec.score(_items())


def test_reward_values_that_are_numbers_pass_as_floats():
    import numpy as np

    spec = RewardSpec([RewardTerm("length", params={"target": 1})])
    spec.fns[0] = lambda items: [np.float32(0.25), 1]
    assert spec.score(_items()) == ([0.25, 1.0], {"length": [0.25, 1.0]})


def test_a_reward_returning_too_many_values_is_caught():
    spec = RewardSpec([RewardTerm("length", params={"target": 1})])
    spec.fns[0] = lambda items: [1.0] * (len(items) + 1)
    with pytest.raises(RuntimeError, match="returned 3 values for 2 items"):
        spec.score(_items())


@pytest.mark.parametrize("weight", [float("nan"), float("inf")])
def test_a_weight_must_be_finite(weight):
    with pytest.raises(ConfigError, match=r"rewards\[0\]\.weight: must be a finite number"):
        RewardSpec([RewardTerm("length", weight=weight, params={"target": 1})])


def test_a_nan_reward_stops_the_run_in_one_line_exit_2(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """Before: the NaN went into the advantages and the run 'finished' with NaN weights."""
    import drover.rewards.verifiable as verifiable
    from drover.cli import main

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    monkeypatch.setattr(verifiable, "length_reward", lambda n, params: float("nan"))
    code = main(["rl", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--reward", "length:target=3",
                 "--run-dir", str(tmp_path / "r"), "steps=2", "prompts_per_step=1", "samples_per_prompt=2",
                 "max_new_tokens=3", "train.progress=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("drover rl: error: reward 'length': record 'a': got nan")
    assert not (tmp_path / "r" / "model").exists() and not (tmp_path / "r" / "rewards.jsonl").exists()


def test_prompt_errors_name_the_real_line_after_blank_lines(tiny_tokenizer, tmp_path):
    from drover.train.online.sampling import load_prompts

    path = tmp_path / "p.jsonl"
    short = json.dumps({"id": "a", "messages": [{"role": "user", "content": "hi"}]})
    long = json.dumps({"id": "b", "messages": [{"role": "user", "content": "hi " * 50}]})
    path.write_text(f"{short}\n\n\n{long}\n")
    with pytest.raises(DataError, match=rf"^{path}:4: record 'b': prompt of \d+ tokens"):
        load_prompts([str(path)], tiny_tokenizer, 40, 8)
    prompts = load_prompts([str(path)], tiny_tokenizer, 400, 8)
    assert [p.where for p in prompts] == [f"{path}:1", f"{path}:4"]


# -- gsm-match agrees with the GSM benchmark ---------------------------------------------------

GSM_CASES = [   # (output, gold answer): tricky for one extraction or the other
    ("So the answer is 12.00.", "#### 12"), ("so -7", "#### 7"), ("The values are 1,2,18", "#### 18"),
    ("12.5", "#### 125"), (".80", "#### 80"), ("She paid $1,234.50", "#### 1234.50"), ("pages 3-4", "#### 4"),
    ("It is 1,000,000", "#### 1,000,000"), ("no number", "#### 3"), ("-21", "#### -21"), ("", "#### 0"),
]


@pytest.mark.parametrize("match", ["exact", "value"])
def test_gsm_match_scores_as_the_gsm_benchmark_does(match):
    """The same response is correct for the reward exactly when the GSM task (same `match`
    setting; `exact` is both defaults) counts it correct."""
    from drover.evaluate.tasks.gsm import MATCHERS, GSMSettings
    from drover.metrics.extract import gsm_reference

    assert GSMSettings().match == "exact"
    params = {} if match == "exact" else {"match": match}
    extract, correct_for = MATCHERS[match]
    for output, gold in GSM_CASES:
        record = Conversation("g", [Message("user", "How many?"), Message("assistant", gold)])
        reward = RewardSpec([RewardTerm("gsm-match", params=params)]).score(
            [RewardInput(record.messages[:1], output, record)])[0][0]
        assert reward == float(correct_for(extract(output), gsm_reference(gold))), (output, gold)


def test_gsm_match_reads_a_bare_gold_number_and_refuses_a_worked_answer_without_one():
    def record(answer: str) -> Conversation:
        return Conversation("g", [Message("user", "How many?")], meta={"answer": answer})

    spec = RewardSpec([RewardTerm("gsm-match")])
    assert spec.score([RewardInput([Message("user", "How many?")], "it is 1,024", record("1,024"))])[0] == [1.0]
    # before: an IndexError traceback at the first step; now found with the other checks before training
    assert spec.problem(record("She has 3 + 4 = 7 apples")) == \
        "reward 'gsm-match': the gold answer is neither '... #### N' nor a bare number: 'She has 3 + 4 = 7 apples'"
    assert spec.problem(record("#### 7")) is None
    # nothing (or words) after '####': an empty gold made an empty response "correct" under exact match
    assert spec.problem(record("so 7.\n#### ")) is not None and spec.problem(record("#### 7 apples")) is not None


def test_gsm_match_unknown_setting():
    with pytest.raises(ConfigError, match=r"params.match 'valeu' is unknown \(did you mean 'value'\?\)"):
        RewardSpec([RewardTerm("gsm-match", params={"match": "valeu"})])


def test_fewer_prompts_per_step_than_processes_is_refused():
    """A process without a prompt group would run no forward or backward: a traceback on it and
    a hang on the others (DDP waits for its gradients); FSDP/ZeRO-3 need equal shares."""
    from drover.train.online.config import OnlineConfig

    OnlineConfig(prompts_per_step=4).check_processes(2, sharded=True)
    OnlineConfig(prompts_per_step=3).check_processes(2, sharded=False)
    with pytest.raises(ConfigError, match="prompts_per_step 1 is fewer than the 2 processes"):
        OnlineConfig(prompts_per_step=1).check_processes(2, sharded=False)
    with pytest.raises(ConfigError, match="must be a multiple of the 2 processes under FSDP"):
        OnlineConfig(prompts_per_step=3).check_processes(2, sharded=True)


def test_reward_flags_keep_text_parameters_verbatim():
    """`--reward regex:pattern=1.50` was the regex "1.5" (YAML read the number first), `pattern=yes`
    the regex "True", `pattern=007` "7": another reward than the one asked for, silently."""
    from drover.commands.rl import parse_reward

    assert parse_reward("regex:pattern=1.50")["params"] == {"pattern": "1.50"}
    assert parse_reward("regex:pattern=yes,mode=search")["params"] == {"pattern": "yes", "mode": "search"}
    assert parse_reward("judge:llm=007,scale=0.5@2")["params"] == {"llm": "007", "scale": 0.5}
    assert parse_reward("length:target=5,falloff=2")["params"] == {"target": 5, "falloff": 2}
    assert parse_reward("unit-tests:unsafe_no_isolation=false")["params"] == {"unsafe_no_isolation": False}
    assert parse_reward("nosuch:x=1")["params"] == {"x": 1}      # refused later, by name
    spec = RewardSpec([RewardTerm(**parse_reward("regex:pattern=1.50,mode=fullmatch"))])
    assert spec.score([RewardInput([], text, Conversation("c", [Message("user", "q")])) for text in
                       ("1.50", "1.5", "1x50")])[0] == [1.0, 0.0, 1.0]


def test_the_config_rl_help_shows_exists_and_loads():
    """`drover rl --help` named recipes/rlhf-grpo.yaml, which never existed."""
    import re as regex

    import drover.commands.rl as rl
    from drover.commands.rl import build_config
    from drover.config import read_yaml

    (path,) = regex.findall(r"--config (recipes/\S+\.yaml)", rl.__doc__)
    shipped = Path(rl.__file__).resolve().parents[1] / "resources" / path
    assert shipped.is_file()

    class Args:
        config, model, run_dir, force, algorithm, engine, prompts, reward = str(shipped), "m", None, False, None, \
            None, None, None
        overrides: list[str] = []

    config = build_config(Args())
    assert config.algorithm == "grpo" and config.train.lr == 1e-6 and config.train.schedule == "constant"
    assert [t.kind for t in config.rewards] == ["gsm-match", "regex"]
    RewardSpec(config.rewards)
    assert read_yaml(str(shipped))["prompts"] == ["data/gsm-train.jsonl"]


@pytest.mark.parametrize("messages, role", [
    ([{"role": "system", "content": "be nice"}], "system"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}],
     "assistant"),
])
def test_a_prompt_must_end_with_a_user_turn(tiny_tokenizer, tmp_path, messages, role):
    """A system-only prompt was sampled from (and judged with an empty question)."""
    from drover.train.online.sampling import load_prompts

    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "hi"}]}) + "\n"
                    + json.dumps({"id": "b", "messages": messages}) + "\n")
    with pytest.raises(DataError, match=rf"{path}:2: record 'b': messages\[\d\]\.role: the prompt must end with a "
                                        rf"user turn, got '{role}'"):
        load_prompts([str(path)], tiny_tokenizer, 400, 8)


def test_a_length_reward_needs_its_target():
    """`--reward length` alone had target 0: the policy was rewarded for empty responses."""
    with pytest.raises(ConfigError, match="length reward: params.target is required"):
        RewardSpec([RewardTerm("length")])
    RewardSpec([RewardTerm("length", params={"target": 0})])   # an explicit 0 is a choice
