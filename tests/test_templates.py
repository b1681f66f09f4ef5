"""Templates: the Alpaca pair verbatim, Tülu and ChatML rendering, choosing a template."""

from __future__ import annotations

import pytest

from drover.errors import ConfigError, TemplateError
from drover.models import load_tokenizer
from drover.templates import chat_template_text, ensure_chat_template, render_alpaca

# Algorithm 1 of "Instruction Tuning with GPT-4" (= Stanford Alpaca's PROMPT_DICT).
ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                "context. Write a response that appropriately completes the request.\n\n"
                "### Instruction:\nTranslate to French.\n\n### Input:\nGood {morning}\n\n### Response:")
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately "
                   "completes the request.\n\n### Instruction:\nName a {colour} of the sky.\n\n### Response:")

CHAT = [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
        {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"},
        {"role": "assistant", "content": "A2"}]


def test_alpaca_prompts_verbatim():
    assert render_alpaca("Translate to French.", "Good {morning}") == ALPACA_INPUT
    assert render_alpaca("Name a {colour} of the sky.") == ALPACA_NO_INPUT
    assert render_alpaca("Name a {colour} of the sky.", "  ") == ALPACA_NO_INPUT
    assert render_alpaca("{input}", "x").count("{input}") == 1  # placeholders in values stay literal


def test_tulu_renders_like_open_instruct(tiny_tokenizer):
    # open-instruct "tulu": role header + "\n", content, "\n"; assistant content + eos, "\n" unless last
    assert tiny_tokenizer.apply_chat_template(CHAT, tokenize=False) == (
        "<|system|>\nS\n<|user|>\nU1\n<|assistant|>\nA1</s>\n<|user|>\nU2\n<|assistant|>\nA2</s>")
    assert tiny_tokenizer.apply_chat_template(CHAT[:4], tokenize=False, add_generation_prompt=True) == (
        "<|system|>\nS\n<|user|>\nU1\n<|assistant|>\nA1</s>\n<|user|>\nU2\n<|assistant|>\n")


def test_chatml_renders(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    tok.chat_template = chat_template_text("chatml")
    assert tok.apply_chat_template(CHAT[:3], tokenize=False) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n"
        "<|im_start|>assistant\nA1<|im_end|>\n")
    assert tok.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True).endswith(
        "U1<|im_end|>\n<|im_start|>assistant\n")


def test_unknown_template_name():
    with pytest.raises(ConfigError, match="did you mean 'tulu'"):
        chat_template_text("tullu")


def test_ensure_chat_template(tiny_model_dir):
    own = load_tokenizer(tiny_model_dir)
    original = own.chat_template
    assert ensure_chat_template(own, "chatml").chat_template == original  # the model's own wins
    bare = load_tokenizer(tiny_model_dir)
    bare.chat_template = None
    with pytest.raises(TemplateError, match="no chat_template"):
        ensure_chat_template(bare, "model")
    assert ensure_chat_template(bare, "chatml").chat_template == chat_template_text("chatml")
    bare2 = load_tokenizer(tiny_model_dir)
    bare2.chat_template = None
    assert "<|im_start|>" not in ensure_chat_template(bare2, "tulu").apply_chat_template(CHAT, tokenize=False)


def _alpaca_tokenizer(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    tok.chat_template = chat_template_text("alpaca")
    return tok


def test_alpaca_training_template_renders_algorithm_1(tiny_model_dir):
    from drover.templates import alpaca_fields

    tok = _alpaca_tokenizer(tiny_model_dir)
    eos = tok.eos_token
    no_input = [{"role": "user", "content": "Name a {colour} of the sky."}, {"role": "assistant", "content": "Blue."}]
    # Stanford Alpaca train.py: source (the prompt, ending "### Response:") + target (output + eos), no separator.
    assert tok.apply_chat_template(no_input, tokenize=False) == ALPACA_NO_INPUT + "Blue." + eos
    from drover.records import Message

    record = [Message("user", "Translate to French.\n\nGood {morning}"), Message("assistant", "Bonjour")]
    messages = alpaca_fields(record, {"instruction": "Translate to French.", "input": "Good {morning}"})
    assert tok.apply_chat_template(messages, tokenize=False) == ALPACA_INPUT + "Bonjour" + eos
    # meta that does not match the user turn is not used (the turn was edited): the no-input prompt
    assert "### Input:" not in tok.apply_chat_template(
        alpaca_fields(record, {"instruction": "Other.", "input": "x"}), tokenize=False)
    assert tok.apply_chat_template(no_input[:1], tokenize=False, add_generation_prompt=True) == ALPACA_NO_INPUT
    with pytest.raises(Exception, match="no system turn"):
        tok.apply_chat_template([{"role": "system", "content": "S"}] + no_input, tokenize=False)


def test_alpaca_template_trains_only_the_response_and_eos(tiny_model_dir):
    from drover.records import Message
    from drover.templates import alpaca_fields
    from drover.tokenization import IGNORE_INDEX, encode_conversation

    tok = _alpaca_tokenizer(tiny_model_dir)
    record = [Message("user", "Translate to French.\n\nGood morning"), Message("assistant", " Bonjour tout le monde")]
    encoded = encode_conversation(tok, alpaca_fields(record, {"instruction": "Translate to French.",
                                                              "input": "Good morning"}), record_id="r")
    trained = [t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE_INDEX]
    assert tok.decode(trained) == " Bonjour tout le monde" + tok.eos_token
    prompt = tok.decode([t for t, label in zip(encoded.input_ids, encoded.labels) if label == IGNORE_INDEX])
    assert "### Input:\nGood morning\n\n### Response:" in prompt
    # two rounds: prefix-stable, both responses trained
    two = [{"role": "user", "content": "A?"}, {"role": "assistant", "content": " one"},
           {"role": "user", "content": "B?"}, {"role": "assistant", "content": " two"}]
    enc2 = encode_conversation(tok, two, record_id="r2")
    assert tok.decode([t for t, lab in zip(enc2.input_ids, enc2.labels) if lab != IGNORE_INDEX]) == \
        " one" + tok.eos_token + " two" + tok.eos_token


def test_gpt4_llm_recipe_sft_uses_the_alpaca_template():
    import yaml

    from drover.recipes import RECIPES_DIR

    assert yaml.safe_load((RECIPES_DIR / "train" / "sft-alpaca.yaml").read_text(encoding="utf-8"))["chat_template"] \
        == "alpaca"
