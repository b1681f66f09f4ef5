"""Model loading (never downloads), the tiny-model factory, init-tiny and inspect-tokens."""

from __future__ import annotations

import json

import pytest

from drover.cli import main
from drover.errors import ConfigError, ModelNotFoundError
from drover.models import build_tiny, load_model, load_tokenizer


def test_tiny_model_loads_with_plain_auto_classes(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 2
    assert len(tok) == 4096 == model.config.vocab_size
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == ("<s>", "</s>", "<pad>", "<unk>")
    for special in ("<|system|>", "<|user|>", "<|assistant|>"):
        assert tok.tokenize(f"a{special}b")[1] == special  # one unsplittable token
    assert "<|assistant|>" in tok.chat_template
    assert model.generation_config.eos_token_id == tok.eos_token_id
    ids = torch.tensor([tok("The capital of France is")["input_ids"]])
    out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 3)
    # the BPE learned real merges from the shipped text: common words are single tokens
    assert len(tok.tokenize(" the")) == 1 and len(tok.tokenize(" function")) == 1


def test_build_tiny_is_deterministic(tiny_model_dir, tmp_path):
    again = build_tiny(tmp_path / "again")
    for name in ("tokenizer.json", "model.safetensors", "config.json"):
        assert (again / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name


def test_build_tiny_rejects_bad_shapes(tmp_path):
    with pytest.raises(ConfigError, match="multiple of heads"):
        build_tiny(tmp_path / "x", hidden=30, heads=4)


def test_load_model_and_tokenizer(tiny_model_dir):
    import torch

    model = load_model(tiny_model_dir, dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and not model.training
    tok = load_tokenizer(tiny_model_dir, chat_template="chatml")
    assert "<|assistant|>" in tok.chat_template  # its own template is kept


@pytest.mark.parametrize("name,needle", [
    ("no-such-org/no-such-model", "huggingface-cli download no-such-org/no-such-model"),
    ("./no/such/dir", "no such"),
])
def test_missing_model_is_a_clear_error(name, needle):
    with pytest.raises(ModelNotFoundError, match=needle.replace(".", r"\.").replace("/", "/")):
        load_model(name)
    with pytest.raises(ModelNotFoundError, match="allow_download|no such"):
        load_tokenizer(name)


def test_init_tiny_command(tmp_path, capsys):
    assert main(["init-tiny", str(tmp_path / "m"), "--hidden", "32", "--layers", "1", "--heads", "2",
                 "--vocab", "512"]) == 0
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (32, 1, 512)
    assert "wrote" in capsys.readouterr().out


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_inspect_tokens_marks_trained_spans(tiny_model_dir, tmp_path, capsys):
    rec = {"id": "r1", "messages": [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                                    {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Ciao."}]}
    path = _write(tmp_path / "ok.jsonl", [json.dumps(rec)])
    assert main(["inspect-tokens", str(path), "--model", str(tiny_model_dir), "--plain"]) == 0
    out = capsys.readouterr().out
    assert "<|user|>\nHi\n<|assistant|>\n[[Hello!</s>]]\n<|user|>\nBye\n<|assistant|>\n[[Ciao.</s>]]" in out
    assert "[[" not in out.split("<|assistant|>")[0]


BAD_INPUTS = {
    "bad-json": ['{"id": "a", "messages": [}'],
    "wrong-role": ['{"id": "a", "messages": [{"role": "robot", "content": "x"}]}'],
    "missing-field": ['{"id": "a"}'],
    "wrong-type": ['{"id": "a", "messages": "hello"}'],
}


@pytest.mark.parametrize("kind", list(BAD_INPUTS) + ["empty", "binary"])
def test_inspect_tokens_malformed_input(kind, tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    good = '{"id": "ok", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
    if kind == "empty":
        path.write_text("")
    elif kind == "binary":
        path.write_bytes(good.encode() + b"\n\x89PNG\x00\x01\x02\xff\n")
    else:
        _write(path, [good, *BAD_INPUTS[kind]])
    code = main(["inspect-tokens", str(path), "--model", "unused-model-never-loaded", "--index", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{path}:2:" in err if kind != "empty" else f"{path}:" in err and "empty" in err
