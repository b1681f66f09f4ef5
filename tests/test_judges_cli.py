"""`drover judge`: light imports, user mistakes as one-line errors (exit 2), bias without a judge."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from drover.cli import main

DATA = Path(__file__).parent / "data" / "alpaca_eval"


def test_command_module_imports_light() -> None:
    code = ("import sys, drover.commands.judge, drover.judges.vicuna, drover.judges.alpaca_eval, "
            "drover.judges.mt_bench, drover.judges.llmbar, drover.judges.bias, drover.metrics.winrate; "
            "heavy = [m for m in ('torch', 'transformers', 'openai', 'datasets') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_user_mistakes_exit_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "answers.jsonl"
    bad.write_text('{"question_id": 81, "choices": [{"turns": ["only one"]}]}\n')
    code = main(["judge", "mt-bench", "--judge", "http://127.0.0.1:9/v1#x", "--model-outputs", str(bad),
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and f"{bad}:1" in err and "two assistant turns" in err
    bad.write_text('{"question_id": 81, "choices": [{"turns": ["a", "b"]}]}\n{oops\n')
    code = main(["judge", "mt-bench", "--judge", "http://127.0.0.1:9/v1#x", "--model-outputs", str(bad),
                 "--run-dir", str(tmp_path / "run")])
    assert code == 2 and f"{bad}:2: invalid JSON" in capsys.readouterr().err
    code = main(["judge", "meta", "--judge", "http://127.0.0.1:9/v1#x", "--strategy", "nope",
                 "--run-dir", str(tmp_path / "run")])
    assert code == 2 and "unknown LLMBar strategy" in capsys.readouterr().err
    code = main(["judge", "vicuna", "--judge", "http://127.0.0.1:9/v1#x", "--model-outputs", "gpt35",
                 "--reference", str(tmp_path / "missing.jsonl"), "--run-dir", str(tmp_path / "run")])
    assert code == 2 and "file not found" in capsys.readouterr().err


def test_bias_on_official_annotations(tmp_path: Path, capsys) -> None:
    files = [str(DATA / m / "weighted_alpaca_eval_gpt4_turbo" / "annotations.json") for m in ("alpaca-7b", "vicuna-7b")]
    assert main(["judge", "bias", "--annotations", *files, "--run-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "eval" / "bias" / "bias.json").read_text())
    per = result["breakdown"]["per_system"]
    assert set(per) == {"alpaca-7b", "vicuna-7b"}
    # vicuna-7b writes longer answers and wins more often than alpaca-7b: r(win rate, length) = +1 for two systems
    assert per["vicuna-7b"]["avg_length"] > per["alpaca-7b"]["avg_length"]
    assert result["metrics"]["pearson_winrate_length"] == 1.0
    assert "pearson_winrate_unique_tokens" in capsys.readouterr().out


def _config(*argv: str):
    import argparse

    from drover.commands.judge import add_arguments, build_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return build_config(parser.parse_args(list(argv)))


def test_judge_options_flags_and_overrides_make_one_config(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    config = _config("rank", "--judge", "openai:gpt-4", "--model-outputs", str(a), str(b), "judge_options.rpm=60",
                     "judge_options.price_input_per_1k=0.01", "--concurrency", "4", "seed=3", "limit=5")
    assert config.kind == "rank" and config.limit == 5
    assert config.settings == {"model_outputs": [str(a), str(b)], "seed": 3}
    assert config.judge_options == {"concurrency": 4, "rpm": 60, "price_input_per_1k": 0.01}
    yaml_file = tmp_path / "judge.yaml"
    yaml_file.write_text("judge: openai:gpt-4\nmodel_outputs: x.jsonl\njudge_options: {tpm: 1000, timeout: 30}\n")
    config = _config("vicuna", "--config", str(yaml_file), "--max-judge-tokens", "64", "--no-constrain")
    assert config.settings == {"model_outputs": "x.jsonl"} and config.constrain is False
    assert config.judge_options == {"tpm": 1000, "timeout": 30, "max_tokens": 64}


def test_judge_options_reach_the_llm_config(tmp_path: Path) -> None:
    from drover.judges.stage import JudgeConfig, _open_llm

    config = JudgeConfig(kind="vicuna", judge="http://127.0.0.1:9/v1#j",
                         judge_options={"rpm": 30, "tpm": 9000, "max_retries": 2, "timeout": 5.0, "concurrency": 3,
                                        "price_output_per_1k": 0.03, "temperature": 0.5, "max_tokens": 20})
    llm = _open_llm(config, tmp_path / "cache.sqlite")
    try:
        c = llm.config
        assert (c.rpm, c.tpm, c.max_retries, c.timeout, c.concurrency, c.price_output_per_1k) == (
            30, 9000, 2, 5.0, 3, 0.03)
    finally:
        llm.close()


def test_bad_judge_options_exit_2(tmp_path: Path, capsys) -> None:
    code = main(["judge", "vicuna", "--judge", "http://127.0.0.1:9/v1#x", "--model-outputs", "gpt35",
                 "--run-dir", str(tmp_path), "judge_options.rmp=5"])
    assert code == 2 and "judge_options.rmp: unknown option (did you mean 'rpm'?)" in capsys.readouterr().err
    code = main(["judge", "vicuna", "--judge", "http://127.0.0.1:9/v1#x", "--run-dir", str(tmp_path)])
    assert code == 2 and "--model-outputs is required" in capsys.readouterr().err


def test_every_judge_help_lists_options_defaults_and_an_example(capsys) -> None:
    from drover.judges.registry import JUDGES

    try:
        main(["judge", "--help"])
    except SystemExit:
        pass
    listing = capsys.readouterr().out
    assert all(name in listing for name in JUDGES.names()) and "judge_options.KEY=VALUE" in listing
    for name in JUDGES.names():
        try:
            main(["judge", name, "--help"])
        except SystemExit:
            pass
        out = " ".join(capsys.readouterr().out.split())
        assert "example: drover judge " + name in out, name
        assert "(default:" in out and "judge_options.KEY=VALUE" in out and "rpm (None)" in out, name


def test_fastchat_model_answer_files(tmp_path: Path) -> None:
    """FastChat llm_judge's gen_model_answer.py layout for both vicuna and mt-bench."""
    from drover.judges import mt_bench, vicuna

    path = tmp_path / "vicuna-7b.jsonl"
    path.write_text(json.dumps({"question_id": 1, "answer_id": "x", "model_id": "vicuna-7b:v1", "choices": [
        {"index": 0, "turns": ["First turn.", "Second turn."]}], "tstamp": 1.0}) + "\n")
    assert vicuna.load_answers(str(path)) == ("vicuna-7b", {"1": "First turn."})
    assert mt_bench.load_answers(path) == ("vicuna-7b:v1", {"1": ["First turn.", "Second turn."]})
    path.write_text(json.dumps({"question_id": 1, "choices": [{"index": 0, "turns": []}]}) + "\n")
    try:
        vicuna.load_answers(str(path))
    except Exception as exc:
        assert f"{path}:1: choices:" in str(exc)
    else:
        raise AssertionError("an empty turns list is an error")


def test_judge_options_values_are_checked(tmp_path: Path, capsys) -> None:
    for bad, message in (("judge_options.concurrency=0", "judge_options.concurrency: must be an integer >= 1"),
                         ("judge_options.max_retries=-1", "judge_options.max_retries: must be an integer >= 0"),
                         ("judge_options.rpm=-5", "rpm: must be > 0")):
        code = main(["judge", "vicuna", "--judge", "http://127.0.0.1:9/v1#x", "--model-outputs", "gpt35",
                     "--run-dir", str(tmp_path), bad])
        assert code == 2 and message in capsys.readouterr().err, bad


def test_failed_requests_exit_1_and_a_rerun_retries_them(tmp_path: Path, capsys) -> None:
    """Over HTTP (the fake endpoint without constraints): a 400 is a failed request, not a verdict."""
    from drover.llm.testing import FakeOpenAIServer

    mine = tmp_path / "mine.jsonl"
    mine.write_text(json.dumps({"question_id": 1, "text": "My answer.", "model_id": "mine"}) + "\n")
    argv = ["judge", "vicuna", "--model-outputs", str(mine), "--run-dir", str(tmp_path / "run"),
            "judge_options.max_retries=0"]
    with FakeOpenAIServer() as server:
        server.script("400")
        assert main([*argv, "--judge", f"{server.base_url}#fake"]) == 1
        out = capsys.readouterr().out
        assert "1 judge request(s) failed after retries" in out and "2 judgments failed (1 request errors" in out
        sent = len(server.requests)
        assert main([*argv, "--judge", f"{server.base_url}#fake"]) == 0
        assert len(server.requests) == sent + 1  # only the failed one is sent again
    record = json.loads((tmp_path / "run" / "eval" / "mine" / "vicuna80-vs-gpt35.json").read_text())
    assert record["request_errors"] == 0 and record["failures"] == 2  # "answer: ..." is no verdict
    assert record["metrics"]["relative_score"] is None  # strict JSON, not NaN
