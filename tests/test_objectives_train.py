"""Each alignment objective trained end to end on the tiny model: its own metric moves
the right way; reference log-probs are computed once; bad records are reported first."""

from __future__ import annotations

import contextlib
import json
import math
import random

import pytest

from drover.records import Message, Ranked, Response, write_jsonl

HH_TEST = "src/drover/resources/data/hh_rlhf/harmless-base/test.jsonl.gz"
# words whose presence decides the rank of a response: learnable by a tiny model
TIERS = [["thanks", "kindly", "glad"], ["maybe", "perhaps", "unsure"], ["no", "never", "stop"],
         ["ugh", "whatever", "bored"]]
TOPICS = ["cats", "rain", "bread", "music", "trains", "gardens", "maps", "rivers", "tea", "clocks", "boats",
          "stars", "paper", "lamps", "bikes", "shoes"]


@contextlib.contextmanager
def one_thread():
    """One intra-op thread: the machine is shared, and oversubscribed threads spin."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def ranked_lists(path, count: int, k: int = 4, with_reference: bool = True, seed: int = 0):
    rng = random.Random(seed)
    records = []
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        responses = [Response(" ".join(rng.choice(TIERS[t]) for _ in range(4)) + f" about {topic}.", float(k - t))
                     for t in range(k)]
        reference = " ".join(rng.choice(TIERS[0]) for _ in range(4)) + f" about {topic}." if with_reference else None
        records.append(Ranked(f"r{i}", [Message("user", f"Tell me about {topic}.")], responses, reference))
    write_jsonl(path, records)
    return path


def config(model, data, run_dir, objective, **kw):
    from drover.config import from_dict
    from drover.train.config import TrainConfig

    base = dict(model=str(model), objective=objective, data=[str(data)], run_dir=str(run_dir), epochs=1,
                micro_batch_size=4, max_length=128, mixed_precision="no", progress=False, warmup_ratio=0.0)
    base.update(kw)
    return from_dict(TrainConfig, base)


def events(run_dir, kind):
    return [e for e in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if e["event"] == kind]


@pytest.mark.slow
def test_dpo_margin_grows_and_reference_runs_once_across_epochs_and_resume(tiny_model_dir, tmp_path):
    from drover.train import reference
    from drover.train.runner import run_training

    data = ranked_lists(tmp_path / "pairs.jsonl", 16, k=2, with_reference=False)
    run_dir = tmp_path / "dpo"
    common = dict(epochs=3, lr=3e-3, eval_data=[str(data)], save_every=2, objective_params={"beta": 0.5})
    before = reference.FORWARD_PASSES
    run_training(config(tiny_model_dir, data, run_dir, "dpo", stop_after_steps=5, **common), echo=False)
    once = reference.FORWARD_PASSES - before
    # 16 records, 4 per batch, one pass for 3 epochs; the held-out file is the same data, so its
    # reference log-probs come from the same cache file
    assert once == 4
    run_training(config(tiny_model_dir, data, run_dir, "dpo", **common), echo=False)   # resumes at step 4
    assert reference.FORWARD_PASSES - before == once   # cached on disk: no reference pass on resume
    train = events(run_dir, "train")
    assert train[0]["reward_margin"] == pytest.approx(0.0, abs=1e-3)   # policy == reference at step 1
    final = events(run_dir, "eval")[-1]
    assert final["eval_reward_margin"] > 0.5
    assert final["eval_reward_accuracy"] > 0.9
    assert final["eval_loss"] < math.log(2)


@pytest.mark.slow
def test_tuna_ranking_accuracy_rises_through_the_cli(tiny_model_dir, tmp_path):
    from drover.cli import main

    data = ranked_lists(tmp_path / "lists.jsonl", 16)
    run_dir = tmp_path / "tuna"
    code = main(["tune", "--objective", "tuna", "--model", str(tiny_model_dir), "--data", str(data),
                 "--eval-data", str(data), "--run-dir", str(run_dir), "epochs=4", "lr=3e-3", "micro_batch_size=4",
                 "max_length=128", "mixed_precision='no'", "progress=false", "warmup_ratio=0"])
    assert code == 0
    first = events(run_dir, "train")[0]["ranking_accuracy"]     # the untrained policy, before its first update
    final = events(run_dir, "eval")[-1]["eval_ranking_accuracy"]
    assert final > first + 0.2 and final > 0.9
    assert (run_dir / "model" / "config.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["ipo", "slic", "rrhf", "pro", "dpo-ln"])
def test_other_objectives_learn_the_ranking(tiny_model_dir, tmp_path, objective):
    from drover.train.runner import run_training

    data = ranked_lists(tmp_path / "lists.jsonl", 16, k=3)
    run_dir = tmp_path / objective
    run_training(config(tiny_model_dir, data, run_dir, objective, epochs=4, lr=3e-3, eval_data=[str(data)]),
                 echo=False)
    final = events(run_dir, "eval")[-1]
    metric = {"ipo": "eval_reward_accuracy", "dpo-ln": "eval_reward_accuracy", "slic": "eval_pair_accuracy",
              "rrhf": "eval_ranking_accuracy", "pro": "eval_ranking_accuracy"}[objective]
    assert final[metric] > 0.8, final


@pytest.fixture(scope="module")
def hh_reward_model(tiny_model_dir, tmp_path_factory):
    """A reward model trained briefly on short HH-RLHF harmless test pairs (train/held-out split)."""
    from drover.formats.driver import convert_records
    from drover.train.runner import run_training

    tmp = tmp_path_factory.mktemp("hh")
    records = list(convert_records("hh-rlhf", HH_TEST))
    short = [r for r in records
             if sum(len(m.content) for m in r.messages) + max(len(x.content) for x in r.responses) < 400]
    train, held_out = write_jsonl(tmp / "train.jsonl", short[:400]), write_jsonl(tmp / "eval.jsonl", short[400:560])
    assert train == 400 and held_out == 160
    run_dir = tmp / "rm"
    with one_thread():   # module fixtures run before the autouse one
        model = run_training(config(tiny_model_dir, tmp / "train.jsonl", run_dir, "reward", lr=1e-3,
                                    micro_batch_size=8,
                                    max_length=128, eval_data=[str(tmp / "eval.jsonl")], eval_every=25,
                                    on_bad_records="drop"), echo=False)
    return model, run_dir, tmp


@pytest.mark.slow
def test_reward_model_on_hh_rlhf_learns_held_out_preferences(hh_reward_model):
    _, run_dir, _ = hh_reward_model
    train = events(run_dir, "train")
    quarter = len(train) // 4
    first = sum(e["loss"] for e in train[:quarter]) / quarter
    last = sum(e["loss"] for e in train[-quarter:]) / quarter
    assert last < first
    evals = events(run_dir, "eval")
    assert len(evals) >= 2                       # every eval_every steps, and at the end
    assert evals[-1]["eval_accuracy"] > 0.55     # held-out pairwise accuracy above chance (0.5)
    assert evals[-1]["eval_loss"] < math.log(2)


@pytest.mark.slow
def test_rerank_orders_by_reward_and_resumes(hh_reward_model, tmp_path):
    from drover.cli import main
    from drover.local.reward import load_reward_scorer
    from drover.records import read_conversations, read_ranked

    model, _, tmp = hh_reward_model
    src = list(read_ranked(tmp / "eval.jsonl"))[:12]
    swapped = [Ranked(r.id, r.messages, [Response(x.content, None, x.source) for x in r.responses]) for r in src]
    write_jsonl(tmp_path / "in.jsonl", swapped)
    args = ["rerank", "--input", str(tmp_path / "in.jsonl"), "--reward-model", str(model), "--run-dir",
            str(tmp_path / "run")]
    assert main(args) == 0
    ranked = list(read_ranked(tmp_path / "run" / "data" / "ranked.jsonl"))
    best = list(read_conversations(tmp_path / "run" / "data" / "best.jsonl"))
    scorer = load_reward_scorer(str(model))
    assert [r.id for r in ranked] == [r.id for r in src] == [b.id for b in best]
    for record, top in zip(ranked, best):
        rewards = scorer([(record.messages, x.content) for x in record.responses])
        assert rewards == pytest.approx([x.score for x in record.responses], abs=1e-4)
        assert rewards[0] >= rewards[1]
        assert top.messages[-1].content == record.responses[0].content
    assert main(args) == 0                                   # resumed: nothing appended twice
    assert len(list(read_ranked(tmp_path / "run" / "data" / "ranked.jsonl"))) == 12


def test_bad_ranked_records_are_reported_with_ids_before_training(tiny_model_dir, tmp_path):
    from drover.cli import main
    from drover.errors import DataError
    from drover.train.runner import run_training

    good = ranked_lists(tmp_path / "good.jsonl", 4)
    records = [json.loads(line) for line in good.read_text().splitlines()]
    records.append({"id": "single", "messages": [{"role": "user", "content": "hi"}],
                    "responses": [{"content": "only one", "score": 1}]})
    records.append({"id": "tied", "messages": [{"role": "user", "content": "hi"}],
                    "responses": [{"content": "a", "score": 1}, {"content": "b", "score": 1}]})
    records.append({"id": "noref", "messages": [{"role": "user", "content": "hi"}],
                    "responses": [{"content": "a", "score": 2}, {"content": "b", "score": 1}]})
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in records))
    base = ["tune", "--objective", "tuna", "--model", str(tiny_model_dir), "--data", str(bad), "--run-dir",
            str(tmp_path / "run"), "max_length=128", "progress=false", "mixed_precision='no'"]
    with pytest.raises(DataError) as err:
        run_training(config(tiny_model_dir, bad, tmp_path / "run", "tuna"), echo=False)
    message = str(err.value)
    assert "3 of 7 records" in message
    assert "'single'" in message and "fewer than 2 responses" in message
    assert "'noref'" in message and "reference" in message
    assert not (tmp_path / "run" / "model").exists()
    # the same through the CLI: exit 2, and `on_bad_records=drop` trains on the 4 good ones (tuna: ties are fine)
    assert main(base) == 2
    assert main(base + ["on_bad_records=drop", "max_steps=1"]) == 0
    # DPO needs a preference: the all-tied record is reported there
    with pytest.raises(DataError, match="'tied'"):
        run_training(config(tiny_model_dir, bad, tmp_path / "run2", "dpo"), echo=False)


@pytest.mark.slow
def test_reward_command_saves_a_model_transformers_loads_and_rerank_scores(tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from drover.cli import main
    from drover.local.reward import load_reward_scorer

    data = ranked_lists(tmp_path / "lists.jsonl", 8, k=2, with_reference=False)
    run_dir = tmp_path / "rm"
    assert main(["reward", "--model", str(tiny_model_dir), "--data", str(data), "--run-dir", str(run_dir),
                 "max_steps=2", "micro_batch_size=4", "max_length=64", "mixed_precision='no'", "progress=false",
                 "objective_params.margin=0.5"]) == 0
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "model")
    assert model.config.num_labels == 1
    rewards = load_reward_scorer(str(run_dir / "model"))([([Message("user", "hi")], "thanks about tea."),
                                                         ([Message("user", "hi")], "ugh about tea.")])
    assert len(rewards) == 2 and all(math.isfinite(r) for r in rewards)
    assert main(["reward", "--model", str(tiny_model_dir), "--data", str(data), "--run-dir", str(tmp_path / "x"),
                 "objective_params.margn=1"]) == 2          # a misspelt parameter is a config error


def test_a_reward_for_a_response_cut_away_entirely_is_refused_not_made_up(tiny_model_dir):
    """Past max_length the start is kept, as in training; a prompt that fills max_length
    leaves no response token for the head to read, and would otherwise get a reward read
    off the prompt (the same for every candidate)."""
    from transformers import AutoModelForSequenceClassification

    from drover.errors import DataError
    from drover.local.reward import score_sequences
    from drover.models import load_tokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1).eval()
    model.config.pad_token_id = model.config.eos_token_id
    tok = load_tokenizer(tiny_model_dir)
    long_response = score_sequences(model, tok, ["hi"], ["an answer " * 40], max_length=32)
    assert len(long_response) == 1 and math.isfinite(long_response[0])  # truncated, still a response
    with pytest.raises(DataError, match=r"prompt 1 fills max_length=32 .* none of its response"):
        score_sequences(model, tok, ["hi", "hello " * 60], ["an answer", "an answer"], max_length=32)
