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
