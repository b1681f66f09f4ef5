"""Assistant-only masking: only assistant content + the EOS closing each assistant turn is trained."""

from __future__ import annotations

import pytest

from drover.errors import DataError, TemplateError
from drover.models import load_tokenizer
from drover.records import Conversation, Message
from drover.templates import chat_template_text
from drover.tokenization import (IGNORE_INDEX, encode_conversation, encode_dataset, encode_prompt,
                                 encode_prompt_response)

# ShareGPT-style multi-turn chats (as the ShareGPT converter emits them: human→user, gpt→assistant).
SHAREGPT = [
    [("user", "What is the capital of France?"), ("assistant", "The capital of France is Paris."),
     ("user", "And of Italy?"), ("assistant", "Rome.")],
    [("system", "You are a concise assistant."), ("user", "List three colours."),
     ("assistant", "Red, green and blue."), ("user", "Now in French, please."),
     ("assistant", "Rouge, vert et bleu."), ("user", "Thanks!"), ("assistant", "You're welcome!")],
    [("user", "Write a Python function that adds two numbers."),
     ("assistant", "```python\ndef add(a, b):\n    return a + b\n```\n"),
     ("user", "Make it typed."),
     ("assistant", "  def add(a: int, b: int) -> int:\n      return a + b")],
    # contents that also occur inside the role headers / separators
    [("user", "user"), ("assistant", "assistant"), ("user", "\n"), ("assistant", "|>\n<")],
]


def _msgs(turns):
    return [{"role": r, "content": c} for r, c in turns]


def _trained_runs(example):
    """Maximal runs of consecutive trained token ids."""
    runs, current = [], []
    for label in example.labels:
        if label != IGNORE_INDEX:
            current.append(label)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


@pytest.fixture
def tok(tiny_model_dir):
    """A private tokenizer copy, safe to give another chat template."""
    return load_tokenizer(tiny_model_dir)


def test_single_turn(tiny_tokenizer):
    ex = encode_conversation(tiny_tokenizer, _msgs([("user", "Say hi."), ("assistant", "Hi there!")]), record_id="s1")
    assert [tiny_tokenizer.decode(r) for r in _trained_runs(ex)] == ["Hi there!</s>"]
    assert ex.labels[-1] == tiny_tokenizer.eos_token_id == ex.input_ids[-1]
    untrained = [t for t, lab in zip(ex.input_ids, ex.labels) if lab == IGNORE_INDEX]
    assert tiny_tokenizer.decode(untrained) == "<|user|>\nSay hi.\n<|assistant|>\n"
    assert all(lab in (IGNORE_INDEX, t) for t, lab in zip(ex.input_ids, ex.labels))
    assert not ex.truncated and ex.num_trained == len(_trained_runs(ex)[0])


@pytest.mark.parametrize("turns", SHAREGPT, ids=["two-turn", "system-three-turn", "code", "header-words"])
def test_tulu_rule_on_sharegpt_multi_turn(tiny_tokenizer, turns):
    """Every assistant turn + EOS is trained, in order, and nothing else (Tülu rule)."""
    ex = encode_conversation(tiny_tokenizer, _msgs(turns), record_id="sg")
    expected = [content + "</s>" for role, content in turns if role == "assistant"]
    got = [tiny_tokenizer.decode(r) for r in _trained_runs(ex)]
    assert len(got) == len(expected)
    for run, text in zip(got, expected):
        # A byte-level token may glue the header's newline to leading content whitespace
        # ("\n " + " def"); such a whitespace-only token is trained, nothing more.
        assert run.endswith(text) and not run[: len(run) - len(text)].strip(), (run, text)
    # everything else is exactly the rendered context: headers, system/user text, separators
    rendered = tiny_tokenizer.apply_chat_template(_msgs(turns), tokenize=False)
    context = rendered
    for run in got:
        context = context.replace(run, "", 1)
    untrained = [t for t, lab in zip(ex.input_ids, ex.labels) if lab == IGNORE_INDEX]
    assert tiny_tokenizer.decode(untrained) == context
    assert "<|user|>" in context and "<|assistant|>" in context


@pytest.mark.parametrize("template", ["tulu", "chatml"])
def test_agrees_with_transformers_generation_mask(tok, template):
    """Our offsets-based labels equal transformers' {% generation %} assistant mask."""
    tok.chat_template = chat_template_text(template)
    for turns in SHAREGPT:
        ex = encode_conversation(tok, _msgs(turns))
        ref = tok.apply_chat_template(_msgs(turns), tokenize=True, return_dict=True,
                                      return_assistant_tokens_mask=True)
        assert ex.input_ids == ref["input_ids"]
        assert [int(lab != IGNORE_INDEX) for lab in ex.labels] == ref["assistant_masks"]


def test_chatml_trains_im_end(tok):
    tok.chat_template = chat_template_text("chatml")
    ex = encode_conversation(tok, _msgs(SHAREGPT[0]))
    assert [tok.decode(r) for r in _trained_runs(ex)] == ["The capital of France is Paris.<|im_end|>",
                                                          "Rome.<|im_end|>"]


def test_system_prompt_is_not_trained(tiny_tokenizer):
    turns = [("system", "SECRET SYSTEM TEXT"), ("user", "hello"), ("assistant", "hey")]
    ex = encode_conversation(tiny_tokenizer, [Message(r, c) for r, c in turns])
    trained = tiny_tokenizer.decode([lab for lab in ex.labels if lab != IGNORE_INDEX])
    assert trained == "hey</s>"
    assert "SECRET SYSTEM TEXT" in tiny_tokenizer.decode(ex.input_ids)


def test_truncation_in_the_middle_of_an_assistant_turn(tiny_tokenizer):
    turns = SHAREGPT[1]
    full = encode_conversation(tiny_tokenizer, _msgs(turns))
    runs = _trained_runs(full)
    # cut inside the second assistant turn: after its first two tokens
    second_start = next(i for i in range(len(full.labels))
                        if full.labels[i] != IGNORE_INDEX and full.labels[i - 1] == IGNORE_INDEX
                        and sum(1 for lab in full.labels[:i] if lab != IGNORE_INDEX) == len(runs[0]))
    cut = second_start + 2
    ex = encode_conversation(tiny_tokenizer, _msgs(turns), max_length=cut)
    assert ex.truncated and len(ex.input_ids) == len(ex.labels) == cut
    assert ex.input_ids == full.input_ids[:cut] and ex.labels == full.labels[:cut]  # keeps the start
    assert [tiny_tokenizer.decode(r) for r in _trained_runs(ex)] == [
        "Red, green and blue.</s>", tiny_tokenizer.decode(runs[1][:2])]
    assert tiny_tokenizer.eos_token_id not in ex.labels[second_start:]


def test_not_prefix_stable_template_raises_with_record_id(tok):
    # Marks the final turn differently, so rendering turns[:k] is not a prefix of turns[:k+1].
    tok.chat_template = ("{% for m in messages %}{% if loop.last %}<|assistant|>{% endif %}"
                         "{{ m['content'] }}{{ eos_token }}{% endfor %}")
    with pytest.raises(TemplateError, match="rec-42.*prefix-stable"):
        encode_conversation(tok, _msgs(SHAREGPT[0]), record_id="rec-42")


def test_template_without_end_of_turn_raises(tok):
    tok.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
    with pytest.raises(TemplateError, match="r7.*end-of-turn"):
        encode_conversation(tok, _msgs(SHAREGPT[0]), record_id="r7")


def test_template_that_rewrites_content_raises(tok):
    tok.chat_template = "{% for m in messages %}{{ m['content'] | upper }}{{ eos_token }}{% endfor %}"
    with pytest.raises(TemplateError, match="verbatim"):
        encode_conversation(tok, _msgs(SHAREGPT[0]), record_id="r8")


def test_missing_chat_template_raises(tok):
    tok.chat_template = None
    with pytest.raises(TemplateError, match="no chat template"):
        encode_conversation(tok, _msgs(SHAREGPT[0]))


def test_prompt_response_trains_only_the_response(tiny_tokenizer):
    prompt = _msgs(SHAREGPT[0][:3])  # contains an earlier assistant turn: context only
    ex = encode_prompt_response(tiny_tokenizer, prompt, "Rome, of course.", record_id="p")
    assert [tiny_tokenizer.decode(r) for r in _trained_runs(ex)] == ["Rome, of course.</s>"]
    prompt_ids = encode_prompt(tiny_tokenizer, prompt)
    assert ex.input_ids[:len(prompt_ids)] == prompt_ids  # generation prompt == training prefix
    assert all(lab == IGNORE_INDEX for lab in ex.labels[:len(prompt_ids)])


def test_encode_dataset_drops_untrainable_and_counts(tiny_tokenizer):
    long_prompt = "word " * 200
    convs = [Conversation("keep", [Message("user", "hi"), Message("assistant", "hello")]),
             Conversation("drop", [Message("user", long_prompt), Message("assistant", "x")]),
             Conversation("noassistant", [Message("user", "hi")])]
    examples, dropped = encode_dataset(tiny_tokenizer, convs, max_length=32)
    assert [e.record_id for e in examples] == ["keep"] and dropped == 2
    with pytest.raises(DataError, match="train.jsonl: all 2 examples"):
        encode_dataset(tiny_tokenizer, convs[1:], max_length=32, source="train.jsonl")


def test_llama2_style_template_with_bos_adding_tokenizer(tok):
    """A tokenizer that prepends BOS (Llama) gets exactly one BOS, untrained; " </s>" ends a turn."""
    from tokenizers import processors

    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)])
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'user' %}"
                         "{{ '[INST] ' + m['content'] + ' [/INST]' }}"
                         "{% else %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}{% endfor %}")
    ex = encode_conversation(tok, _msgs(SHAREGPT[0]))
    assert ex.input_ids[0] == tok.bos_token_id and ex.input_ids.count(tok.bos_token_id) == 1
    assert ex.labels[0] == IGNORE_INDEX
    runs = [tok.decode(r) for r in _trained_runs(ex)]
    assert [r.strip() for r in runs] == ["The capital of France is Paris. </s>", "Rome. </s>"]
    # a template that writes BOS itself does not get a second one
    tok.chat_template = "{{ bos_token }}" + tok.chat_template
    again = encode_conversation(tok, _msgs(SHAREGPT[0]))
    assert again.input_ids == ex.input_ids and again.labels == ex.labels
