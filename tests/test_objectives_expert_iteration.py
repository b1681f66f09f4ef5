"""Expert iteration rounds (sample -> pick the best -> SFT) as resumable stages, best-of-n
selection, and the conditional-tokens transform."""

from __future__ import annotations

import json

import pytest

from drover.completions import Choice, Completion
from drover.records import Conversation, Message, Ranked, Response, read_conversations, read_ranked, write_jsonl


class FakePolicy:
    """Stands in for the LLM client: n deterministic samples of growing length."""

    def __init__(self, spec: str, log: list):
        self.spec, self.log = spec, log

    def run(self, requests, desc="", total=None):
        for request in requests:
            self.log.append((self.spec, request.message_dicts()))
            n = request.decoding.n
            yield Completion([Choice(("more " * k) + f"answer {k} to {request.key}") for k in range(n)])


def by_length(items):
    return [float(len(text)) for _, text in items]


def prompts(path, count=4):
    write_jsonl(path, [Conversation(f"p{i}", [Message("user", f"Question number {i}?")]) for i in range(count)])
    return str(path)


def test_best_of_n_ranks_by_score_and_writes_the_winner(tmp_path):
    from drover.infer.best_of_n import SampleOptions, best_of_n

    calls: list = []
    records = list(read_conversations(prompts(tmp_path / "p.jsonl")))
    summary = best_of_n(FakePolicy("pol", calls), records, by_length, tmp_path / "r.jsonl", tmp_path / "b.jsonl",
                        SampleOptions(n=3))
    assert summary.written == 4 and summary.mean_best > summary.mean_all
    ranked = list(read_ranked(tmp_path / "r.jsonl"))
    assert [len(r.responses) for r in ranked] == [3] * 4
    assert ranked[0].responses[0].content.startswith("more more answer 2")
    assert [x.score for x in ranked[0].responses] == sorted((x.score for x in ranked[0].responses), reverse=True)
    best = list(read_conversations(tmp_path / "b.jsonl"))
    assert best[0].messages[-1].content == ranked[0].responses[0].content and best[0].meta["n"] == 3
    again = best_of_n(FakePolicy("pol", calls), records, by_length, tmp_path / "r.jsonl", tmp_path / "b.jsonl",
                      SampleOptions(n=3))
    assert again.skipped_done == 4 and len(calls) == 4       # resumed: nothing sampled twice


def test_conditional_tokens_tag_good_and_bad_in_the_system_turn():
    from drover.train.conditional_tokens import ConditionalTokens, conditioned_conversations, good_prompt

    record = Ranked("x", [Message("user", "hi")], [Response("great", 3.0), Response("ok", 2.0), Response("bad", 1.0)])
    out = list(conditioned_conversations([record]))
    assert [c.messages[0].content for c in out] == ["<|good|>", "<|bad|>", "<|bad|>"]
    assert [c.messages[-1].content for c in out] == ["great", "ok", "bad"]
    assert all(c.messages[1] == Message("user", "hi") for c in out)   # the user turn is untouched
    by_score = list(conditioned_conversations([record], ConditionalTokens(min_good_score=2.0, where="user")))
    assert [c.messages[0].content for c in by_score] == ["<|good|> hi", "<|good|> hi", "<|bad|> hi"]
    assert good_prompt([Message("user", "q")])[0] == Message("system", "<|good|>")


@pytest.mark.slow
@pytest.mark.parametrize("conditional", [False, True])
def test_expert_iteration_rounds_are_resumable_stages(tiny_model_dir, tmp_path, conditional):
    import torch

    from drover.infer.expert_iteration import ExpertIterationConfig, expert_iterate
    from drover.train.runner import run_training

    calls: list = []
    trained: list = []

    def train(cfg):
        trained.append(cfg.model)
        return run_training(cfg, echo=False)

    config = ExpertIterationConfig(
        policy=str(tiny_model_dir), prompts=[prompts(tmp_path / "p.jsonl")], rounds=2, n=3, select="judge",
        judge="openai:judge", conditional_tokens=conditional, run_dir=str(tmp_path / "ei"),
        sft={"max_steps": 1, "micro_batch_size": 4, "max_length": 64, "mixed_precision": "no", "progress": False})
    final = expert_iterate(config, make_llm=lambda spec, cache: FakePolicy(spec, calls), train=train,
                           scorer=by_length)
    root = tmp_path / "ei"
    assert final == str(root / "round-2" / "sft" / "model")
    assert (root / "round-2" / "sft" / "model" / "config.json").exists()
    # round 2 samples from round 1's model and trains it further
    assert [spec for spec, _ in calls] == [str(tiny_model_dir)] * 4 + [str(root / "round-1" / "sft" / "model")] * 4
    assert trained == [str(tiny_model_dir), str(root / "round-1" / "sft" / "model")]
    if conditional:
        rows = [json.loads(line) for line in (root / "round-1" / "conditioned.jsonl").read_text().splitlines()]
        assert len(rows) == 4 * 3
        assert sorted({r["messages"][0]["content"] for r in rows}) == ["<|bad|>", "<|good|>"]
        assert calls[4][1][0] == {"role": "system", "content": "<|good|>"}   # later rounds ask for good
        round2 = list(read_ranked(root / "round-2" / "ranked.jsonl"))
        assert round2[0].messages[0].content == "<|good|>"
        rows2 = [json.loads(line) for line in (root / "round-2" / "conditioned.jsonl").read_text().splitlines()]
        assert all(r["messages"][0]["content"] in ("<|good|>", "<|bad|>") and r["messages"][1]["role"] == "user"
                   for r in rows2)                                           # one tag, not two
    else:
        best = list(read_conversations(root / "round-1" / "best.jsonl"))
        assert all(b.messages[-1].content.startswith("more more answer 2") for b in best)
    for r in (1, 2):
        assert (root / "stages" / f"round-{r}-sample.json").exists()
        assert (root / "stages" / f"round-{r}-sft.json").exists()
    # the same command again: every stage is done, nothing is sampled or trained
    expert_iterate(config, make_llm=lambda spec, cache: FakePolicy(spec, calls), train=train, scorer=by_length)
    assert len(calls) == 8 and len(trained) == 2
    # round 1 retrained under another lr: its samples stay, everything that read its model is redone
    from dataclasses import replace

    changed = replace(config, sft={**config.sft, "lr": 1e-3, "warmup_ratio": 0.0})  # (warmup: its 1 step has lr 0)
    expert_iterate(changed, make_llm=lambda spec, cache: FakePolicy(spec, calls), train=train, scorer=by_length)
    assert len(trained) == 4 and len(calls) == 12


class FakeJudge:
    """Rates an answer 9 if it holds 'good', 2 if 'poor', and answers gibberish otherwise."""

    def run(self, requests, desc="", total=None):
        for request in requests:
            text = request.message_dicts()[-1]["content"]
            answer = "9\nfine" if "good" in text else "2\nweak" if "poor" in text else "no idea"
            yield Completion([Choice(answer)])


def test_rating_judge_scorer_reads_scores_and_scores_unreadable_ratings_zero():
    from drover.judges.rating import rating_judge_scorer

    prompt = [Message("user", "Name a colour.")]
    scores = rating_judge_scorer(FakeJudge())([(prompt, "a poor answer"), (prompt, "a good answer"), (prompt, "x")])
    assert scores == [2.0, 9.0, 0.0]


def test_a_local_judge_retrained_in_place_resamples_the_round(tmp_path):
    """select=judge with hf:PATH: the samples were picked by that judge's weights, so another
    judge under the same path redoes the round instead of keeping the old judge's picks."""
    from pathlib import Path

    from drover.infer.expert_iteration import ExpertIterationConfig, expert_iterate

    judge = tmp_path / "judge"
    judge.mkdir()
    (judge / "model.safetensors").write_bytes(b"judge weights v1")
    calls: list = []

    def train(cfg):  # stands in for SFT: the round's model directory appears
        (Path(cfg.run_dir) / "model").mkdir(parents=True, exist_ok=True)
        (Path(cfg.run_dir) / "model" / "config.json").write_text("{}")

    config = ExpertIterationConfig(policy=str(tmp_path / "policy"), prompts=[prompts(tmp_path / "p.jsonl", 2)],
                                   rounds=1, n=2, select="judge", judge=f"hf:{judge}", run_dir=str(tmp_path / "ei"))

    def run():
        expert_iterate(config, make_llm=lambda spec, cache: FakePolicy(spec, calls), train=train, scorer=by_length)

    run()
    assert len(calls) == 2
    run()
    assert len(calls) == 2  # nothing changed: done
    (judge / "model.safetensors").write_bytes(b"judge weights v2, retrained")
    run()
    assert len(calls) == 4  # the round is sampled and judged again
