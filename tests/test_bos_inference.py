"""Inference adds BOS exactly as training does: one BOS, never zero (tulu on a Llama tokenizer), never two."""

from __future__ import annotations

import pytest

from drover.local.scoring import encode_pair, prompt_logprobs
from drover.llm.config import LLMConfig
from drover.llm.hf_backend import HFBackend
from drover.completions import Request
from drover.models import load_tokenizer
from drover.tokenization import encode_prompt, encode_rendered

PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]


def _bos_adding(tiny_model_dir):
    """The tiny tokenizer made Llama-like: `tokenizer(text)` prepends <s> (the tulu template writes none)."""
    from tokenizers import processors

    tok = load_tokenizer(tiny_model_dir)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)])
    assert tok("hi")["input_ids"][0] == tok.bos_token_id  # the premise of these tests
    return tok


def _backend(tiny_model_dir, tokenizer) -> HFBackend:
    # render() never touches the model; any non-None object skips loading it
    return HFBackend(LLMConfig(backend="hf", model=str(tiny_model_dir)), model=object(), tokenizer=tokenizer)


def _bos_count(ids, tok) -> int:
    return ids.count(tok.bos_token_id)


def test_chat_render_matches_training_with_one_bos(tiny_model_dir):
    tok = _bos_adding(tiny_model_dir)
    ids = _backend(tiny_model_dir, tok).render(Request.chat(PROMPT))
    assert ids[0] == tok.bos_token_id and _bos_count(ids, tok) == 1
    assert ids == encode_prompt(tok, PROMPT)
    assert ids[1:] == list(tok(tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True),
                               add_special_tokens=False)["input_ids"])


def test_template_writing_bos_gets_no_second_one(tiny_model_dir):
    tok = _bos_adding(tiny_model_dir)
    tok.chat_template = "{{ bos_token }}" + tok.chat_template
    backend = _backend(tiny_model_dir, tok)
    chat_ids = backend.render(Request.chat(PROMPT))
    assert chat_ids == encode_prompt(tok, PROMPT) and _bos_count(chat_ids, tok) == 1
    # `--chat-format model` renders the template to text, which then goes through the text path
    text = tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    assert text.startswith(tok.bos_token)
    text_ids = backend.render(Request.text(text))
    assert text_ids == chat_ids and text_ids[0] == tok.bos_token_id and _bos_count(text_ids, tok) == 1
    # ... and through scoring: the context has one BOS, the continuation none
    ctx, cont = encode_pair(tok, text, "Paris")  # the header's trailing newline moves to the continuation
    assert ctx == encode_rendered(tok, text.rstrip()) and ctx[0] == tok.bos_token_id and _bos_count(ctx, tok) == 1
    assert cont and tok.bos_token_id not in cont
    assert tok.decode(cont).strip() == "Paris"


def test_plain_text_and_scoring_still_get_bos(tiny_model_dir):
    """Text without BOS keeps the one the tokenizer adds; an empty context is conditioned on BOS alone."""
    tok = _bos_adding(tiny_model_dir)
    ids = _backend(tiny_model_dir, tok).render(Request.text("Question: 2+2?\nAnswer:"))
    assert ids == list(tok("Question: 2+2?\nAnswer:")["input_ids"])
    ctx, cont = encode_pair(tok, "Question: 2+2?\nAnswer:", " 4")
    assert ctx == ids and tok.bos_token_id not in cont
    ctx, cont = encode_pair(tok, "", "Hello")
    assert ctx == [tok.bos_token_id] and cont == list(tok("Hello", add_special_tokens=False)["input_ids"])


def test_tiny_model_ids_unchanged(tiny_tokenizer, tiny_model_dir):
    """A tokenizer that adds no BOS encodes exactly as before (plain `tokenizer(...)` calls)."""
    tok = load_tokenizer(tiny_model_dir)
    backend = _backend(tiny_model_dir, tok)
    text = tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    assert backend.render(Request.chat(PROMPT)) == list(tok(text, add_special_tokens=False)["input_ids"])
    for prompt in ("Question: 2+2?\nAnswer:", "<s>starts with the BOS text", ""):
        assert backend.render(Request.text(prompt)) == list(tok(prompt)["input_ids"])
        assert encode_rendered(tok, prompt) == list(tok(prompt)["input_ids"])
    ctx, cont = encode_pair(tok, "The capital of France is ", "Paris")
    assert ctx == list(tok("The capital of France is")["input_ids"])
    assert ctx + cont == list(tok("The capital of France is Paris")["input_ids"])


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from drover.models import load_model

    return load_model(tiny_model_dir, dtype="float32", device="cpu")


def test_echo_logprobs_have_one_bos(tiny_model_dir, tiny_model):
    tok = _bos_adding(tiny_model_dir)
    text = tok.bos_token + "Hello world"
    [result] = prompt_logprobs(tiny_model, tok, [text], top_k=0)
    assert len(result.token_logprobs) == len(encode_rendered(tok, text)) == len(encode_rendered(tok, "Hello world"))
    assert result.text_offset[0] == 0


def test_server_chat_prompt_matches_training(tiny_model_dir, tiny_model):
    from fastapi.testclient import TestClient

    from drover.infer.server import create_app

    tok = _bos_adding(tiny_model_dir)
    with TestClient(create_app(tiny_model, tok, "tiny")) as client:
        chat = client.post("/v1/chat/completions", json={"model": "tiny", "messages": PROMPT, "max_tokens": 1})
        text = client.post("/v1/completions", json={"model": "tiny", "max_tokens": 1,
                                                     "prompt": tok.bos_token + "Hello world"})
    assert chat.status_code == 200 and text.status_code == 200
    assert chat.json()["usage"]["prompt_tokens"] == len(encode_prompt(tok, PROMPT))
    assert text.json()["usage"]["prompt_tokens"] == len(encode_rendered(tok, "Hello world"))
