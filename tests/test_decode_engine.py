"""The local decoding engine (static KV slots, direct decode step, continuous batching):
greedy outputs equal transformers' `generate` and the model's own forward step, seeded
samples do not depend on batch composition, constrained rows stay valid, and rows that
join a running batch (in `generate` and in `drover serve`'s worker) decode as if alone."""

from __future__ import annotations

import asyncio

import pytest

from drover.local.decode import Decoder, GenerationItem, generate, rows_of
from drover.completions import Constraint

PROMPTS = ["Hello there, how are", "The", "Write a short poem about the sea and the sky, please",
           "def add(a, b):", "Translate to French: the cheese is", "Once upon a time, in a land far away, there"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from drover.models import load_model, load_tokenizer

    return load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)


def _reference(model, tok, prompt_ids, max_tokens, stop=()):
    """transformers' greedy `generate` on the prompt alone (no padding), cut at EOS and stop strings."""
    import torch

    from drover.local.decode import eos_ids

    ids = torch.tensor([prompt_ids])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False)
    new = out[0, ids.shape[1]:].tolist()
    eos = eos_ids(model, tok)
    ended = next((k for k, t in enumerate(new) if t in eos), None)
    text = tok.decode(new[:ended] if ended is not None else new, skip_special_tokens=True)
    cuts = [p for p in (text.find(s) for s in stop) if p >= 0]
    return text[:min(cuts)] if cuts else text


def _assert_greedy_like_generate(model, tok, items, batch):
    """Greedy texts of `generate` at `batch` equal transformers' `generate` on each prompt alone."""
    got = dict(generate(model, tok, items, batch_size=batch))
    for i, item in enumerate(items):
        assert got[i].choices[0].text == _reference(model, tok, item.prompt_ids, item.max_tokens)


def _items(tok, count, **kw):
    """`count` items of mixed prompt lengths and budgets."""
    return [GenerationItem(prompt_ids=tok(PROMPTS[i % len(PROMPTS)])["input_ids"][: 3 + (i * 7) % 13],
                           max_tokens=4 + (i * 5) % 17, **kw) for i in range(count)]


@pytest.mark.parametrize("batch", [1, 16])
def test_greedy_equals_transformers_generate(tiny, batch):
    model, tok = tiny
    items = _items(tok, 16)
    got = dict(generate(model, tok, items, batch_size=batch))
    for i, item in enumerate(items):
        assert got[i].choices[0].text == _reference(model, tok, item.prompt_ids, item.max_tokens)
        assert got[i].completion_tokens <= item.max_tokens


def test_stop_strings_and_budgets_equal_the_reference(tiny):
    model, tok = tiny
    items = _items(tok, 16, stop=("e", "th"))
    got = dict(generate(model, tok, items, batch_size=16))
    for i, item in enumerate(items):
        assert got[i].choices[0].text == _reference(model, tok, item.prompt_ids, item.max_tokens, item.stop)
    assert {got[i].choices[0].finish_reason for i in got} <= {"stop", "length"}


def test_the_direct_step_equals_the_models_own_forward(tiny, monkeypatch):
    from drover.local import kv_slots

    model, tok = tiny
    items = _items(tok, 12, logprobs=True, top_logprobs=2)
    fast = dict(generate(model, tok, items, batch_size=5))
    monkeypatch.setattr(kv_slots, "FAST_STEPS", {})
    slow = dict(generate(model, tok, items, batch_size=5))
    for i in fast:
        a, b = fast[i].choices[0], slow[i].choices[0]
        assert a.text == b.text and a.finish_reason == b.finish_reason
        assert [x.token for x in a.logprobs] == [x.token for x in b.logprobs]
        assert [x.logprob for x in a.logprobs] == pytest.approx([x.logprob for x in b.logprobs], abs=1e-4)


def test_the_direct_prefill_equals_the_models_own_forward(tiny):
    """Prompts of different lengths prefilled together, unpadded, into slots 1..3 (slot 0
    already taken): each one's last logits and keys are those of the model's forward on it alone."""
    import torch

    from drover.local import kv_slots

    model, tok = tiny
    step = kv_slots.decode_step(model)
    prompts = [tok(p)["input_ids"] for p in PROMPTS[:3]]
    cache = kv_slots.SlotCache(model, 4, 64)
    cache.n = 1
    with torch.inference_mode():
        logits = step.prefill(cache, [torch.tensor(p) for p in prompts])
        assert cache.n == 4 and cache.lengths[1:] == [len(p) for p in prompts]
        for b, p in enumerate(prompts):
            out = model(input_ids=torch.tensor([p]), use_cache=True)
            torch.testing.assert_close(logits[b], out.logits[0, -1].float(), rtol=1e-5, atol=1e-5)
            for i, layer in enumerate(kv_slots.returned_cache(out).layers):
                torch.testing.assert_close(cache.keys[i][1 + b, :, :len(p)], layer.keys[0], rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(cache.values[i][1 + b, :, :len(p)], layer.values[0], rtol=1e-5, atol=1e-5)


def test_bf16_greedy_equals_transformers_generate(tiny_model_dir):
    """In bf16 the packed projections are bit-identical to the modules, so greedy texts stay
    HF `generate`'s on each prompt alone at batch 1. (Not at batch 16: oneDNN's bf16 GEMMs
    sum some rows in another order when there are 16 of them — HF `generate` batched and the
    engine before this one differ from HF alone the same way.)"""
    import torch

    from drover.models import load_model, load_tokenizer

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("bf16 is emulated on this CPU")
    model, tok = load_model(tiny_model_dir, dtype="bfloat16"), load_tokenizer(tiny_model_dir)
    _assert_greedy_like_generate(model, tok, _items(tok, 16), batch=1)


def test_a_model_set_to_eager_attention_decodes_like_transformers_generate(tiny_model_dir):
    """The direct step attends with SDPA; in bf16 eager attention rounds otherwise (3 of 5
    greedy texts of 40 tokens left HF's), so a model switched to eager, even after a first
    `generate` built and memoised the direct step, decodes through its own forward."""
    import torch

    from drover.local import kv_slots
    from drover.models import load_model, load_tokenizer

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("bf16 is emulated on this CPU")
    model, tok = load_model(tiny_model_dir, dtype="bfloat16"), load_tokenizer(tiny_model_dir)
    items = [GenerationItem(prompt_ids=tok(p)["input_ids"], max_tokens=40) for p in PROMPTS[2:]]
    list(generate(model, tok, items, batch_size=1))
    model.set_attn_implementation("eager")
    assert kv_slots.FAST_STEPS["llama"](model) is None
    _assert_greedy_like_generate(model, tok, items, batch=1)


def test_a_gqa_llama_direct_step_equals_transformers_generate(tiny):
    """Grouped-query attention (4 query heads over 2 key/value heads) through the direct step and prefill."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from drover.local import kv_slots

    _, tok = tiny
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    assert kv_slots.FAST_STEPS["llama"](model) is not None
    _assert_greedy_like_generate(model, tok, _items(tok, 6), batch=4)


def test_qwen2_direct_step_equals_transformers_generate(tmp_path):
    from drover.local import kv_slots
    from drover.models import build_tiny, load_model, load_tokenizer

    path = build_tiny(tmp_path / "qwen", arch="qwen2")
    model, tok = load_model(path), load_tokenizer(path)
    assert kv_slots.FAST_STEPS["qwen2"](model) is not None  # the direct step is the one under test
    _assert_greedy_like_generate(model, tok, _items(tok, 6), batch=6)


def test_seeded_samples_do_not_depend_on_batch_composition(tiny):
    model, tok = tiny
    target = GenerationItem(prompt_ids=tok(PROMPTS[2])["input_ids"], max_tokens=12, temperature=0.8, top_p=0.9,
                            n=3, seeds=[5, 6, 7])
    alone = dict(generate(model, tok, [target], batch_size=1))[0]
    crowd = _items(tok, 13, temperature=1.0)
    mixed = dict(generate(model, tok, crowd[:7] + [target] + crowd[7:], batch_size=16))[7]
    assert [c.text for c in alone.choices] == [c.text for c in mixed.choices]
    assert len({c.text for c in alone.choices}) > 1


def test_top_p_zero_keeps_only_the_most_likely_token(tiny):
    """top_p 0 is nucleus sampling over the smallest set reaching that mass: the top token
    alone (HF's TopPLogitsWarper keeps one), so samples equal the greedy text; before, the
    filter was skipped and the whole distribution sampled."""
    model, tok = tiny
    prompt = tok(PROMPTS[0])["input_ids"]
    sampled = dict(generate(model, tok, [GenerationItem(prompt_ids=prompt, max_tokens=12, temperature=1.0,
                                                        top_p=0.0, n=4, seeds=[1, 2, 3, 4])]))[0]
    assert [c.text for c in sampled.choices] == [_reference(model, tok, prompt, 12)] * 4


def test_constrained_rows_stay_valid_beside_free_ones(tiny):
    import re

    model, tok = tiny
    free = _items(tok, 6)
    choice = GenerationItem(prompt_ids=tok("Pick:")["input_ids"], max_tokens=20,
                            constraint=Constraint(choice=["yes", "no way"]), temperature=1.0, seeds=[3])
    regex = GenerationItem(prompt_ids=tok("Number:")["input_ids"], max_tokens=20,
                           constraint=Constraint(regex=r"[0-9]{2,4}"))
    got = dict(generate(model, tok, free[:3] + [choice, regex] + free[3:], batch_size=4))
    assert got[3].choices[0].text in ("yes", "no way")
    assert re.fullmatch(r"[0-9]{2,4}", got[4].choices[0].text)
    alone = dict(generate(model, tok, free, batch_size=4))
    assert [got[i].choices[0].text for i in (0, 1, 2, 5, 6, 7)] == [alone[i].choices[0].text for i in range(6)]


def test_a_row_joining_a_running_batch_decodes_as_if_alone(tiny):
    model, tok = tiny
    first, late = _items(tok, 2)[0], GenerationItem(prompt_ids=tok(PROMPTS[5])["input_ids"], max_tokens=30)
    first.max_tokens = 40
    decoder = Decoder(model, tok, slots=4)
    rows = rows_of(first)
    assert decoder.admit([(rows[0], first)]) == []
    done = []
    for _ in range(5):
        done += decoder.advance()
    joining = rows_of(late)[0]
    decoder.admit([(joining, late)])  # longer than the first prompt: the cache grows
    while decoder.live:
        done += decoder.advance()
    assert decoder.stats["joined_running"] == 1 and decoder.stats["max_live"] == 2
    assert {r.text for r in done} == {_reference(model, tok, first.prompt_ids, 40),
                                      _reference(model, tok, late.prompt_ids, 30)}


def test_zero_budget_rows_finish_without_decoding(tiny):
    model, tok = tiny
    got = dict(generate(model, tok, [GenerationItem(prompt_ids=[5, 6], max_tokens=0)] + _items(tok, 2)))
    assert got[0].choices[0].text == "" and got[0].choices[0].finish_reason == "length"
    assert got[0].completion_tokens == 0 and got[1].choices[0].text


def test_an_empty_prompt_is_refused_not_decoded_from_its_neighbours_logits():
    """The direct prefill takes each prompt's last logits at its end in the concatenation: an
    empty prompt would get the previous prompt's (or, alone, crash in a reshape)."""
    with pytest.raises(ValueError, match="prompt: empty"):
        GenerationItem(prompt_ids=[], max_tokens=5)


def test_serve_worker_lets_requests_join_a_running_batch(tiny):
    """A request that arrives while another is decoding joins its batch (the worker's stats
    say so) and gets exactly what it gets alone."""
    from drover.infer.model_worker import ModelWorker

    model, tok = tiny
    long = GenerationItem(prompt_ids=tok(PROMPTS[0])["input_ids"], max_tokens=200)
    late = [GenerationItem(prompt_ids=tok(p)["input_ids"], max_tokens=12) for p in PROMPTS[1:4]]
    steps_seen = []

    async def run():
        worker = ModelWorker(model, tok, max_batch_size=8, batch_wait=0.0)
        worker.start()
        try:
            first = asyncio.ensure_future(worker.submit("generate", long, 1))
            while not worker.stats.get("steps"):
                await asyncio.sleep(0.001)
            steps_seen.append(worker.stats["steps"])
            others = await asyncio.gather(*(worker.submit("generate", it, 1) for it in late))
            return await first, others, worker.stats
        finally:
            await worker.stop()

    first, others, stats = asyncio.run(asyncio.wait_for(run(), 120))
    assert stats["joined_running"] >= len(late) and stats["max_live"] >= 2
    assert first.choices[0].text == _reference(model, tok, long.prompt_ids, 200)
    for item, result in zip(late, others):
        assert result.choices[0].text == _reference(model, tok, item.prompt_ids, 12)


def test_a_stop_string_spanning_several_tokens_cuts_where_the_full_text_would(tiny):
    """Stop strings are looked for in the newest tokens only; one taken from the middle of
    the greedy text (several tokens long) still cuts exactly at its first occurrence."""
    model, tok = tiny
    ids = tok(PROMPTS[2])["input_ids"]
    full = _reference(model, tok, ids, 40)
    stop = full[len(full) // 2:len(full) // 2 + 7]
    assert len(tok(stop, add_special_tokens=False)["input_ids"]) >= 2
    got = dict(generate(model, tok, [GenerationItem(prompt_ids=ids, max_tokens=40, stop=("zzzz", stop))]))[0]
    assert got.choices[0].text == full[:full.find(stop)] and got.choices[0].finish_reason == "stop"


def _worker_run(model, tok, body, **kw):
    from drover.infer.model_worker import ModelWorker

    async def run():
        worker = ModelWorker(model, tok, **kw)
        worker.start()
        try:
            return await body(worker)
        finally:
            await worker.stop()

    return asyncio.run(asyncio.wait_for(run(), 120))


def test_a_stop_string_with_special_tokens_inside_it_is_still_found(tiny):
    """Special tokens decode to nothing, so a stop string's characters may lie more tokens
    apart than its byte length: the tail looked at each step counts only tokens that add
    text. Before, "ab" with four <|user|> between its letters was never found."""
    from drover.local.decode import _hit_stop, _Row, skipped_ids

    _, tok = tiny
    user = tok.convert_tokens_to_ids("<|user|>")
    out = tok("x y z w")["input_ids"] + tok("a")["input_ids"] + [user] * 4 + tok("b c")["input_ids"]
    row = _Row(0, 0, [1], 0)
    hit = None
    for k, token in enumerate(out):
        row.out.append(token)
        if _hit_stop(tok, row, ("ab",), skipped_ids(tok)):
            hit = k
            break
    whole = tok.decode(out, skip_special_tokens=True)
    assert "ab" in whole and hit is not None and row.text == whole[:whole.find("ab")]


def test_an_abandoned_request_leaves_the_batch(tiny):
    model, tok = tiny
    long = GenerationItem(prompt_ids=tok(PROMPTS[0])["input_ids"], max_tokens=1500)
    short = GenerationItem(prompt_ids=tok(PROMPTS[1])["input_ids"], max_tokens=5)

    async def body(worker):
        task = asyncio.ensure_future(worker.submit("generate", long, 1))
        while not worker.stats.get("steps"):
            await asyncio.sleep(0.001)
        task.cancel()  # the client went away
        result = await worker.submit("generate", short, 1)
        while worker.decoder.live:
            await asyncio.sleep(0.001)
        return result, worker.stats

    result, stats = _worker_run(model, tok, body, max_batch_size=2, batch_wait=0.0)
    assert result.choices[0].text == _reference(model, tok, short.prompt_ids, 5)
    assert stats["steps"] < 1500


def test_a_failing_step_fails_its_requests_and_the_worker_keeps_serving(tiny, monkeypatch):
    model, tok = tiny
    item = GenerationItem(prompt_ids=tok(PROMPTS[3])["input_ids"], max_tokens=6)

    async def body(worker):
        real = worker.decoder.step

        def broken(*args):
            worker.decoder.step = real
            raise RuntimeError("out of memory")

        worker.decoder.step = broken
        with pytest.raises(RuntimeError, match="out of memory"):
            await worker.submit("generate", item, 1)
        return await worker.submit("generate", item, 1)

    result = _worker_run(model, tok, body, max_batch_size=4, batch_wait=0.0)
    assert result.choices[0].text == _reference(model, tok, item.prompt_ids, 6)


def test_a_grammar_failing_at_admission_fails_only_its_request(tiny):
    """Two requests admitted together: the one whose grammar cannot be built fails, the other
    is decoded as if alone."""
    model, tok = tiny
    good = GenerationItem(prompt_ids=tok(PROMPTS[1])["input_ids"], max_tokens=7)
    bad = GenerationItem(prompt_ids=tok(PROMPTS[2])["input_ids"], max_tokens=7, constraint=Constraint(regex="(unclosed"))

    async def body(worker):
        results = await asyncio.gather(worker.submit("generate", bad, 1), worker.submit("generate", good, 1),
                                       return_exceptions=True)
        return results

    from drover.local.constrained import ConstraintError

    bad_result, good_result = _worker_run(model, tok, body, max_batch_size=4, batch_wait=0.05)
    assert isinstance(bad_result, ConstraintError)
    assert good_result.choices[0].text == _reference(model, tok, good.prompt_ids, 7)


def test_weights_changed_in_place_are_decoded_with_not_a_stale_copy(tiny_model_dir, tiny):
    """The CPU step's (in, out) weight copies follow training: after an in-place update the
    engine decodes what transformers' `generate` decodes with the new weights."""
    import torch

    from drover.models import load_model

    _, tok = tiny
    model = load_model(tiny_model_dir)  # its own copy: this test changes the weights
    items = _items(tok, 4)
    before = dict(generate(model, tok, items, batch_size=4))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    after = dict(generate(model, tok, items, batch_size=4))
    for i, item in enumerate(items):
        assert after[i].choices[0].text == _reference(model, tok, item.prompt_ids, item.max_tokens)
    assert any(after[i].choices[0].text != before[i].choices[0].text for i in range(4))


def test_weights_changed_by_a_fused_optimizer_are_decoded_fresh(tiny_model_dir, tiny):
    """torch's fused AdamW updates weights in place without bumping their version counters
    (online RL trains with it between sampling steps): the engine must still decode the new
    weights, as transformers' `generate` does."""
    import torch

    from drover.models import load_model

    _, tok = tiny
    model = load_model(tiny_model_dir)
    items = _items(tok, 4)
    before = dict(generate(model, tok, items, batch_size=4))
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, fused=True)
    model(torch.tensor([items[0].prompt_ids]), labels=torch.tensor([items[0].prompt_ids])).loss.backward()
    opt.step()
    after = dict(generate(model, tok, items, batch_size=4))
    for i, item in enumerate(items):
        assert after[i].choices[0].text == _reference(model, tok, item.prompt_ids, item.max_tokens)
    assert any(after[i].choices[0].text != before[i].choices[0].text for i in range(4))


@pytest.mark.parametrize("arch", ["mistral", "qwen2"])
def test_a_sliding_window_model_decodes_like_transformers_past_its_window(tiny, arch):
    """Models without a direct step go through their own forward: Mistral with an 8-token
    sliding window, and Qwen2 with one full and one sliding layer (a mask per layer type);
    outputs longer than the window equal transformers' `generate`."""
    import torch
    from transformers import AutoModelForCausalLM, MistralConfig, Qwen2Config

    from drover.local import kv_slots

    _, tok = tiny
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, sliding_window=8, max_position_embeddings=512,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    config = (MistralConfig(**common) if arch == "mistral"
              else Qwen2Config(**common, use_sliding_window=True, max_window_layers=1))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    assert kv_slots.decode_step(model).__qualname__.startswith("generic_step")
    items = _items(tok, 5)
    for item in items:
        item.max_tokens = 24
    got = dict(generate(model, tok, items, batch_size=3))
    for i, item in enumerate(items):
        assert got[i].choices[0].text == _reference(model, tok, item.prompt_ids, 24)


@pytest.mark.parametrize("arch", ["mistral", "qwen2", "gemma2"])
def test_prompts_longer_than_the_sliding_window_decode_like_transformers(tiny, arch):
    """Prompts of 1-40 tokens with an 8-token window, alone and in one batch. The prefill
    used to keep the keys of the cache the forward builds, whose sliding layers hold only the
    last 7 (Mistral: other texts; Qwen2 with mixed layers and Gemma2: a crash); and Gemma2's
    eager attention adds its per-layer-type masks to the scores, so boolean ones masked nothing."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma2Config, MistralConfig, Qwen2Config

    _, tok = tiny
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, sliding_window=8, max_position_embeddings=512,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    config = {"mistral": lambda: MistralConfig(**common),
              "qwen2": lambda: Qwen2Config(**common, use_sliding_window=True, max_window_layers=1),
              "gemma2": lambda: Gemma2Config(**common, head_dim=16)}[arch]()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    ids = tok(" ".join(PROMPTS * 2))["input_ids"]
    items = [GenerationItem(prompt_ids=ids[i:i + length], max_tokens=20) for i, length in enumerate([30, 1, 9, 17, 40])]
    for batch in (1, 5):
        got = dict(generate(model, tok, items, batch_size=batch))
        for i, item in enumerate(items):
            assert got[i].choices[0].text == _reference(model, tok, item.prompt_ids, 20), (batch, i)


@pytest.mark.parametrize("arch", ["gpt2", "gemma"])
def test_other_architectures_decode_like_transformers_through_their_own_forward(tiny, arch):
    """No direct step for these (learned positions; Gemma's norms and scaled embeddings):
    the generic step feeds the slots to the model's own forward, with the same outputs."""
    import torch
    from transformers import AutoModelForCausalLM, GemmaConfig, GPT2Config

    _, tok = tiny
    ids = dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    config = (GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=512, **ids)
              if arch == "gpt2" else
              GemmaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=512, **ids))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    items = _items(tok, 4)
    got = dict(generate(model, tok, items, batch_size=4))
    for i, item in enumerate(items):
        assert got[i].choices[0].text == _reference(model, tok, item.prompt_ids, item.max_tokens)


def test_top_logprobs_beyond_the_vocabulary_lists_it_all_instead_of_failing_the_batch(tiny):
    """A request asking for more alternatives than the vocabulary has (a local model with a small
    vocabulary, an OpenAI-style top_logprobs=20 on a 16-token toy) gets every token ranked; its
    batch neighbours are unaffected (topk used to raise, failing every row of the batch)."""
    model, tok = tiny
    vocab = model.get_output_embeddings().weight.shape[0]
    items = [GenerationItem(prompt_ids=tok("Hello there")["input_ids"], max_tokens=2, logprobs=True,
                            top_logprobs=vocab + 5),
             GenerationItem(prompt_ids=tok("Another prompt")["input_ids"], max_tokens=2)]
    got = dict(generate(model, tok, items, batch_size=2))
    first = got[0].choices[0].logprobs[0]
    assert 0 < len(first.top) <= vocab and first.logprob <= max(first.top.values()) + 1e-6
    alone = dict(generate(model, tok, [items[1]], batch_size=1))
    assert got[1].choices[0].text == alone[0].choices[0].text


@pytest.mark.parametrize("fast", [True, False])
def test_what_a_finished_row_left_in_its_slot_never_reaches_the_next_row(tiny, monkeypatch, fast):
    """A row that overflowed (fp16 inf/NaN in its keys and values) must not poison the row
    decoded in its slot next: attention masks the stale columns, but multiplies their values by
    a zero weight, and 0 x NaN is NaN. Slots are zeroed past a new row's tokens (both prefills)."""
    import torch

    from drover.local import kv_slots

    model, tok = tiny
    if not fast:
        monkeypatch.setitem(kv_slots.FAST_STEPS, "llama", lambda m: None)
    first = GenerationItem(prompt_ids=tok(PROMPTS[5])["input_ids"], max_tokens=30)
    later = GenerationItem(prompt_ids=tok(PROMPTS[0])["input_ids"][:4], max_tokens=12)
    decoder = Decoder(model, tok, slots=1)
    decoder.admit([(rows_of(first)[0], first)])
    while decoder.live:
        decoder.advance()
    for store in (decoder.cache.keys, decoder.cache.values):
        for layer in store:
            layer.fill_(float("nan"))  # what an overflowed row could leave behind
    row = rows_of(later)[0]
    decoder.admit([(row, later)])
    done = []
    while decoder.live:
        done += decoder.advance()
    assert [r.text for r in done] == [_reference(model, tok, later.prompt_ids, 12)]
    assert not torch.isnan(decoder.cache.values[0][0, :, :len(later.prompt_ids) + 12]).any()
