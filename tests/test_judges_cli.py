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
