"""Every registered objective plugs into the one engine unchanged; reward models round-trip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_train_engine import CODE_ALPACA, train_config


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ranked_jsonl(path: Path, n: int) -> Path:
    """Ranked records from Code Alpaca: the true answer ranked above another prompt's answer."""
    rows = json.loads(CODE_ALPACA.read_text())[:n + 1]
    with open(path, "w") as handle:
        for i in range(n):
            good, other = rows[i]["output"], rows[i + 1]["output"]
            handle.write(json.dumps({"id": f"r{i}", "messages": [{"role": "user", "content": rows[i]["instruction"]}],
                                     "responses": [{"content": good, "score": 2.0}, {"content": other, "score": 1.0}],
                                     "reference": good}) + "\n")
    return path


def _registered() -> list[str]:
    from drover.train.objectives import OBJECTIVES

    return [n for n in OBJECTIVES.names() if n != "sft" and not n.startswith("test-")]


@pytest.mark.slow
@pytest.mark.parametrize("name", _registered())
def test_objective_trains_through_the_engine(name, tiny_model_dir, tmp_path):
    import torch

    from drover.train.objectives import OBJECTIVES
    from test_train_engine import make_engine

    try:
        OBJECTIVES.get(name)
    except ImportError:
        pytest.skip(f"objective module for {name!r} not written yet")
    data = ranked_jsonl(tmp_path / "ranked.jsonl", 8)
    engine = make_engine(train_config(tiny_model_dir, [data], tmp_path / "run", objective=name, micro_batch_size=4))
    before = {n: p.detach().clone() for n, p in engine.model.named_parameters()}
    stats = [engine.step([engine.collate(engine.examples[i:i + 4])]) for i in (0, 4)]
    assert all(math.isfinite(s["loss"]) and s["units"] > 0 for s in stats), stats
    assert any(not torch.equal(before[n], p.detach()) for n, p in engine.model.named_parameters())


@pytest.mark.slow
def test_reward_model_scores_match_transformers_and_reload(tiny_model_dir, tmp_path):
    """The saved reward model loads with plain transformers and scores as drover's scorer does."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from drover.models import load_tokenizer
    from drover.tokenization import encode_prompt_response
    from drover.train.objective import ObjectiveOutput, ObjectiveSpec
    from drover.train.objectives import OBJECTIVES
    from drover.train.runner import run_training
    from drover.local.reward import load_reward_model, score_sequences

    def bradley_terry(batch, params):  # the engine's scalar-head path, independent of D2's module
        r = batch.rewards.view(-1, 2)
        return ObjectiveOutput(-torch.nn.functional.logsigmoid(r[:, 0] - r[:, 1]).sum(), r.shape[0])

    if "test-bt" not in OBJECTIVES:
        OBJECTIVES.register("test-bt", ObjectiveSpec("test-bt", bradley_terry, data="ranked", scalar_head=True,
                                                     min_responses=2))
    data = ranked_jsonl(tmp_path / "ranked.jsonl", 8)
    model_dir = run_training(train_config(tiny_model_dir, [data], tmp_path / "run", objective="test-bt",
                                          micro_batch_size=4), echo=False)
    hf = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model, tok = load_reward_model(model_dir), load_tokenizer(model_dir)
    prompts = ["Write a loop in Python.", "What is 2+2?"]
    responses = ["for i in range(3):\n    print(i)", "4"]
    ours = score_sequences(model, tok, prompts, responses)
    for prompt, response, score in zip(prompts, responses, ours):
        seq = encode_prompt_response(tok, [{"role": "user", "content": prompt}], response)
        with torch.no_grad():
            theirs = hf(input_ids=torch.tensor([seq.input_ids])).logits[0, 0].item()
        assert score == pytest.approx(theirs, abs=1e-4)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert ours[0] != ours[1]
