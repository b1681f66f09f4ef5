"""The local HF backend: batched generation (greedy = transformers' generate, seeded
sampling independent of batching, stop strings, n, log-probs) and scoring."""

from __future__ import annotations

import pytest

from drover.llm.client import LLM
from drover.llm.config import LLMConfig
from drover.completions import Request, ScoreRequest


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from drover.models import load_model, load_tokenizer

    return load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)


PROMPTS = ["Hello there, how are", "The", "Write a short poem about the sea and the sky, please"]


@pytest.mark.slow
def test_greedy_matches_transformers_generate(tiny):
    import torch

    from drover.local.decode import GenerationItem, generate

    model, tok = tiny
    items = [GenerationItem(prompt_ids=tok(p)["input_ids"], max_tokens=10) for p in PROMPTS]
    got = dict(generate(model, tok, items, batch_size=3))  # one left-padded batch of mixed lengths
    for i, prompt in enumerate(PROMPTS):
        ids = torch.tensor([tok(prompt)["input_ids"]])
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False)
        expected = tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True)
        assert got[i].choices[0].text == expected
        assert got[i].choices[0].finish_reason == "length" and got[i].completion_tokens == 10


def test_sampling_is_seeded_per_sample_not_per_batch(tiny):
    from drover.local.decode import GenerationItem, generate

    model, tok = tiny
    items = [GenerationItem(prompt_ids=tok(p)["input_ids"], max_tokens=8, temperature=1.0, top_p=0.9, n=2,
                            seeds=[11, 12]) for p in PROMPTS]
    a = dict(generate(model, tok, items, batch_size=6))
    b = dict(generate(model, tok, items[::-1], batch_size=1))
    for i in range(3):
        assert [c.text for c in a[i].choices] == [c.text for c in b[2 - i].choices]
    assert a[0].choices[0].text != a[0].choices[1].text  # the two samples differ


def test_stop_strings_and_logprobs(tiny):
    from drover.local.decode import GenerationItem, generate

    model, tok = tiny
    prompt = tok("Hello there")["input_ids"]
    full = dict(generate(model, tok, [GenerationItem(prompt_ids=prompt, max_tokens=12, logprobs=True, top_logprobs=3)]))[0]
    text = full.choices[0].text
    lps = full.choices[0].logprobs
    assert len(lps) == 12 and all(len(t.top) <= 3 for t in lps)
    assert all(t.logprob <= max(t.top.values()) + 1e-5 for t in lps)  # greedy: the top token
    assert "".join(t.token for t in lps) == text
    stop = text[len(text) // 2: len(text) // 2 + 2]
    cut = text.find(stop)
    stopped = dict(generate(model, tok, [GenerationItem(prompt_ids=prompt, max_tokens=12, stop=(stop,),
                                                        logprobs=True)]))[0].choices[0]
    assert stopped.text == text[:cut] and stopped.finish_reason == "stop"
    assert "".join(t.token for t in stopped.logprobs).startswith(stopped.text)


def test_scoring_matches_a_manual_forward_pass(tiny):
    import torch

    from drover.local.scoring import align_boundary, encode_pair, score_pairs

    model, tok = tiny
    assert align_boundary("Answer: ", "Paris") == ("Answer:", " Paris")
    pairs = [("The capital of France is ", "Paris"), ("Q: 2+2?\nA:", " 4"), ("", "hello world")]
    scores = score_pairs(model, tok, pairs, batch_size=2)
    for (context, continuation), score in zip(pairs, scores):
        ctx, cont = encode_pair(tok, context, continuation)
        ids = torch.tensor([ctx + cont])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits.float(), -1)[0]
        manual = [float(logp[len(ctx) - 1 + k, t]) for k, t in enumerate(cont)]
        assert score.token_logprobs == pytest.approx(manual, abs=1e-4)
        assert score.total == pytest.approx(sum(manual), abs=1e-4)
        assert "".join(score.tokens).strip() == continuation.strip()
    # the greedy flag: score the model's own greedy continuation
    from drover.local.decode import GenerationItem, generate

    prompt = "The capital of France is"
    greedy_text = dict(generate(model, tok, [GenerationItem(prompt_ids=tok(prompt)["input_ids"], max_tokens=4)]))[0]
    own = score_pairs(model, tok, [(prompt, greedy_text.choices[0].text)])[0]
    assert own.greedy and not scores[0].greedy


@pytest.mark.slow
def test_hf_backend_through_the_client_with_cache(tiny_model_dir, tmp_path):
    cfg = LLMConfig.from_spec(f"hf:{tiny_model_dir}", max_tokens=6, batch_size=4)
    reqs = [Request.chat([("user", f"question {i}")], key=str(i)) for i in range(6)]
    reqs.append(Request.text("Once upon a time", key="raw", temperature=1.0, n=2, seed=3))
    with LLM(cfg, tmp_path / "c.sqlite", progress=False) as llm:
        first = list(llm.run(reqs))
        scores = list(llm.score([ScoreRequest("The capital of France is ", "Paris")]))
        assert llm.stats.misses == 8 and all(c.ok for c in first)
    assert [c.key for c in first] == [str(i) for i in range(6)] + ["raw"]
    assert len(first[-1].choices) == 2 and first[0].usage.completion_tokens == 6
    with LLM(cfg, tmp_path / "c.sqlite", progress=False) as llm:
        again = list(llm.run(reqs))
        assert llm.stats.hits == 7 and llm.stats.misses == 0
        assert list(llm.score([ScoreRequest("The capital of France is ", "Paris")])) == scores
    assert [c.text for c in again] == [c.text for c in first]
    with LLM(cfg, None, progress=False) as llm:  # no cache: the same seeded samples again
        assert [ch.text for ch in llm.complete(reqs[-1]).choices] == [ch.text for ch in first[-1].choices]


def test_an_empty_prompt_fails_alone_and_its_batch_decodes_as_without_it(tiny_model_dir):
    """A text prompt that encodes to no tokens (this tokenizer adds no BOS) is an error for that
    request only; before, the engine decoded it from the previous prompt's last logits."""
    cfg = LLMConfig.from_spec(f"hf:{tiny_model_dir}", max_tokens=5, batch_size=4)
    with LLM(cfg, None, progress=False) as llm:
        got = list(llm.run([Request.text("Once upon a time", key="a"), Request.text("", key="empty")]))
        alone = llm.complete(Request.text("Once upon a time", key="a"))
    assert got[0].ok and got[0].text == alone.text
    assert not got[1].ok and "prompt: empty" in got[1].error
