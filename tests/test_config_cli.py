"""Config loading/validation, the registry and the CLI's error contract."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from typing import Literal

import pytest

from drover.cli import COMMANDS, main
from drover.config import load_config
from drover.errors import ConfigError
from drover.registry import Registry


@dataclass
class Inner:
    r: int = 8


@dataclass
class Cfg:
    lr: float = 2e-5
    epochs: int = 2
    schedule: Literal["linear", "cosine"] = "linear"
    files: list[str] = field(default_factory=list)
    name: str | None = None
    lora: Inner = field(default_factory=Inner)


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1.0e-5\nschedule: cosine\nlora:\n  r: 4\n")
    cfg = load_config(Cfg, path, ["epochs=3", "lora.r=16", "files=a.jsonl,b.jsonl"])
    assert cfg == Cfg(lr=1e-5, epochs=3, schedule="cosine", files=["a.jsonl", "b.jsonl"], lora=Inner(16))


@pytest.mark.parametrize(
    "override, message",
    [
        ("lrr=1", "unknown key 'lrr' (did you mean 'lr'?)"),
        ("epochs=2.5", "epochs: expected an integer"),
        ("schedule=cosin", "did you mean 'cosine'"),
        ("lora.rank=3", "unknown key 'rank'"),
        ("novalue", "expected key=value"),
    ],
)
def test_bad_config_messages(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        load_config(Cfg, None, [override])


def test_override_from_yaml_file(tmp_path):
    (tmp_path / "files.yaml").write_text("files: [a.jsonl, b.jsonl]\n")
    (tmp_path / "lora.yaml").write_text("r: 32\n")
    cfg = load_config(Cfg, None, [f"files=@{tmp_path / 'files.yaml'}", f"lora=@{tmp_path / 'lora.yaml'}"])
    assert cfg.files == ["a.jsonl", "b.jsonl"] and cfg.lora.r == 32
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Cfg, None, [f"files=@{tmp_path / 'nope.yaml'}"])


def test_bad_yaml_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("lr: 1\nepochs: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(Cfg, path)


def test_registry_did_you_mean():
    reg = Registry("objective", {"dpo": "json:dumps"})
    assert reg.get("dpo") is __import__("json").dumps
    with pytest.raises(ConfigError, match="did you mean 'dpo'"):
        reg.get("dpp")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_module_is_light_and_has_contract(name):
    """Each command exists, has add_arguments/run, and importing it does not pull torch or transformers."""
    module = COMMANDS[name][0]
    code = (
        "import sys, importlib\n"
        f"m = importlib.import_module({module!r})\n"
        "assert callable(m.add_arguments) and callable(m.run)\n"
        "heavy = [x for x in ('torch', 'transformers', 'peft', 'datasets', 'openai') if x in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout


def test_help_is_fast_and_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command(capsys):
    assert main(["sfft"]) == 2
    assert "did you mean 'sft'" in capsys.readouterr().err
