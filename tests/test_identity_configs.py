"""Issue #12: one typed config per stage, so `--config FILE.yaml key=value` works on every stage
(file < flags < key=value), and each stage has a resolved config to hash and record."""

from __future__ import annotations

import argparse
import importlib
import json

import pytest
import yaml

from drover.cli import COMMANDS, main


def _args(command: str, argv: list[str]) -> argparse.Namespace:
    module = importlib.import_module(COMMANDS[command][0])
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("command, argv, expect", [
    ("eval", ["--model", "flag-model", "limit=7"], {"model": "flag-model", "limit": 7, "seed": 5, "name": "base"}),
    ("rerank", ["--temperature", "0.5", "n=3"], {"reward_model": "rm", "n": 3, "temperature": 0.5, "seed": 5}),
    ("sft", ["lr=1e-4"], {"lr": 1e-4, "seed": 5, "model": "m"}),
])
def test_config_file_then_flags_then_overrides(tmp_path, command, argv, expect):
    file_values = {"eval": {"model": "file-model", "name": "base", "seed": 5, "limit": 3},
                   "rerank": {"reward_model": "rm", "input": "x.jsonl", "seed": 5, "n": 2},
                   "sft": {"model": "m", "seed": 5, "lr": 1e-3}}[command]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(file_values))
    args = _args(command, ["--config", str(path), *argv])
    module = importlib.import_module(COMMANDS[command][0])
    config = module.config_from_args(args) if command != "sft" else module.config_from_args(args, "sft", "runs/sft")
    assert {k: getattr(config, k) for k in expect} == expect


def test_generate_takes_a_config_file(tmp_path):
    from drover.commands.generate import build_config

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"input": "in.jsonl", "output": "o.jsonl", "teacher": "openai:x", "max_tokens": 9}))
    config, _ = build_config(_args("generate", ["answers", "--config", str(path), "temperature=0.3"]))
    assert (config.max_tokens, config.temperature, config.teacher) == (9, 0.3, "openai:x")


def test_convert_and_stats_run_from_a_config_file(tmp_path):
    rows = [{"instruction": f"say {w}", "input": "", "output": w} for w in ("a", "b", "c")]
    (tmp_path / "alpaca.json").write_text(json.dumps(rows))
    out = tmp_path / "out.jsonl"
    (tmp_path / "convert.yaml").write_text(yaml.safe_dump({"fmt": "alpaca", "input": str(tmp_path / "alpaca.json"),
                                                           "output": str(out)}))
    assert main(["convert", "--config", str(tmp_path / "convert.yaml"), "source=mine"]) == 0
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(records) == 3 and records[0]["source"] == "mine"
    (tmp_path / "stats.yaml").write_text(yaml.safe_dump({"inputs": [str(out)], "out": str(tmp_path / "st")}))
    assert main(["stats", "--config", str(tmp_path / "stats.yaml"), "verb_noun=false", "top=3"]) == 0
    assert json.loads((tmp_path / "st" / "stats.json").read_text())["records"] == 3


def test_an_unknown_key_names_the_file_and_the_key(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": "m", "limitt": 3}))
    assert main(["eval", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "limitt" in err and "did you mean 'limit'" in err


def test_eval_task_options_from_the_file_and_the_command_line_merge(tmp_path):
    from drover.commands.eval import config_from_args

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": "m", "options": {"codex_pass1.n": 4, "max_tokens": 64}}))
    config = config_from_args(_args("eval", ["--config", str(path), "-o", "max_tokens=128"]))
    assert config.options == {"codex_pass1.n": 4, "max_tokens": 128}
    assert config.task_overrides() == {"codex_pass1": {"n": 4}, "*": {"max_tokens": 128}}
