"""KTO's data paths (the unpaired converter, Ranked records, the mismatched KL sequences, the
records it cannot label) and a short `drover tune` run of each new objective that lowers its loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_objectives_train import config, events, one_thread, ranked_lists

from drover.errors import DataError, InputError
from drover.records import Message, Ranked, Response, write_jsonl
from drover.train.objective import MISMATCHED_RANK

UNPAIRED = Path(__file__).parent / "data" / "formats" / "unpaired.jsonl"


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def convert(path):
    from drover.formats.base import ConvertOptions, ConvertStats
    from drover.formats.driver import convert_records

    stats = ConvertStats()
    return list(convert_records("unpaired", path, ConvertOptions(), stats)), stats


# --- the labelled (unpaired) format ----------------------------------------------------

def test_unpaired_converter_reads_drover_and_trl_items():
    records, stats = convert(UNPAIRED)
    assert [len(r.responses) for r in records] == [1, 1, 1, 1]
    assert [r.responses[0].score for r in records] == [1.0, 0.0, 1.0, 1.0]
    assert [r.meta["label"] for r in records] == [True, False, True, True]
    assert [m.role for m in records[1].messages] == ["system", "user"] and records[1].meta["annotator"] == "a3"
    assert records[2].messages == [Message("user", "What is 2 + 2?")]
    assert records[3].responses[0].content == "The Danube."
    assert stats.skipped["items with an empty completion"] == 1


@pytest.mark.parametrize("item,field,problem", [
    ({"messages": [{"role": "user", "content": "hi"}], "completion": "x", "label": "yes"}, "label", "true or false"),
    ({"messages": [{"role": "user", "content": "hi"}], "completion": "x", "label": 1}, "label", "true or false"),
    ({"messages": [{"role": "user", "content": "hi"}], "completion": "x"}, "label", "true or false"),
    ({"messages": [{"role": "user", "content": "hi"}], "label": True}, "completion", "missing"),
    ({"prompt": "hi", "messages": [{"role": "user", "content": "hi"}], "completion": "x", "label": True}, None,
     "exactly one of"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}], "completion": "x",
      "label": True}, "messages[1].role", "end with a user turn"),
    ({"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "user", "content": "x"}],
      "label": True}, "completion", "one assistant message"),
    ({"messages": [{"role": "robot", "content": "hi"}], "completion": "x", "label": True}, "messages[0].role",
     "unknown role"),
])
def test_unpaired_converter_names_file_line_and_field(tmp_path, item, field, problem):
    path = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "hi"}], "completion": "fine", "label": True}
    path.write_text(json.dumps(good) + "\n" + json.dumps(item) + "\n")
    with pytest.raises(InputError) as err:
        convert(path)
    assert err.value.line == 2 and err.value.field == field and problem in err.value.problem
    assert str(path) in str(err.value)


def test_tune_on_unconverted_labelled_data_says_how_to_convert(tiny_model_dir, tmp_path, capsys):
    from drover.cli import main

    code = main(["tune", "--objective", "kto", "--model", str(tiny_model_dir), "--data", str(UNPAIRED),
                 "--run-dir", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{UNPAIRED}:1" in err and "drover convert --from unpaired" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_convert_command_writes_ranked_records_kto_reads(tmp_path):
    from drover.cli import main
    from drover.records import read_ranked

    out = tmp_path / "kto.jsonl"
    assert main(["convert", "--from", "unpaired", str(UNPAIRED), str(out)]) == 0
    assert [r.responses[0].score for r in read_ranked(out)] == [1.0, 0.0, 1.0, 1.0]


# --- records -> examples -----------------------------------------------------------------

def test_kto_examples_carry_the_previous_records_responses_as_mismatched(tiny_tokenizer):
    from drover.train.data import build_examples
    from drover.train.objectives import get_objective

    records = [Ranked("a", [Message("user", "A?")], [Response("yes a", 1.0)]),
               Ranked("b", [Message("user", "B?")], [Response("best b", 2.0), Response("worst b", 0.0)]),
               Ranked("c", [Message("user", "C?")], [Response("no c", 0.0)])]
    examples, _ = build_examples(records, get_objective("kto"), tiny_tokenizer, 128)
    assert [e.rank for e in examples] == [[0, MISMATCHED_RANK], [0, 1, MISMATCHED_RANK], [0, MISMATCHED_RANK,
                                                                                          MISMATCHED_RANK]]
    decode = lambda seq: tiny_tokenizer.decode(seq.input_ids)  # noqa: E731
    assert "A?" in decode(examples[0].sequences[1]) and "no c" in decode(examples[0].sequences[1])  # wraps around
    assert "B?" in decode(examples[1].sequences[2]) and "yes a" in decode(examples[1].sequences[2])
    assert all("C?" in decode(s) for s in examples[2].sequences)
    assert "best b" in decode(examples[2].sequences[1]) and "worst b" in decode(examples[2].sequences[2])
    # objectives that do not ask for them get none
    dpo_examples, _ = build_examples(records[1:2], get_objective("dpo"), tiny_tokenizer, 128)
    assert dpo_examples[0].rank == [0, 1]


def test_records_kto_cannot_label_are_reported_with_ids(tiny_tokenizer):
    from drover.train.data import build_examples
    from drover.train.objectives import get_objective

    records = [Ranked("ok", [Message("user", "A?")], [Response("yes", 1.0)]),
               Ranked("unscored", [Message("user", "B?")], [Response("lone", None)]),
               Ranked("tied", [Message("user", "C?")], [Response("x", 1.0), Response("y", 1.0)])]
    with pytest.raises(DataError) as err:
        build_examples(records, get_objective("kto"), tiny_tokenizer, 128)
    message = str(err.value)
    assert "2 of 3 records" in message and "'unscored'" in message and "without a score" in message
    assert "'tied'" in message and "tied" in message
    examples, report = build_examples(records, get_objective("kto"), tiny_tokenizer, 128, on_bad_records="drop")
    assert [e.record_id for e in examples] == ["ok"] and examples[0].rank == [0, MISMATCHED_RANK]


# --- end to end on the tiny model -------------------------------------------------------

def labelled(path: Path, count: int) -> Path:
    """Unpaired items: kind words are desirable, rude ones undesirable (learnable by a tiny model)."""
    topics = ["cats", "rain", "bread", "music", "trains", "gardens", "maps", "rivers"]
    with open(path, "w") as handle:
        for i in range(count):
            good = i % 2 == 0
            words = "thanks kindly glad" if good else "ugh whatever bored"
            handle.write(json.dumps({"prompt": f"Tell me about {topics[i % len(topics)]}.",
                                     "completion": f"{words} about {topics[i % len(topics)]}.", "label": good}) + "\n")
    return path


def test_kto_from_labelled_data_through_the_cli_lowers_the_loss(tiny_model_dir, tmp_path):
    from drover.cli import main

    data = tmp_path / "kto.jsonl"
    assert main(["convert", "--from", "unpaired", str(labelled(tmp_path / "raw.jsonl", 16)), str(data)]) == 0
    run_dir = tmp_path / "kto"
    assert main(["tune", "--objective", "kto", "--model", str(tiny_model_dir), "--data", str(data), "--eval-data",
                 str(data), "--run-dir", str(run_dir), "epochs=4", "lr=3e-3", "micro_batch_size=4",
                 "max_length=64", "mixed_precision='no'", "progress=false", "warmup_ratio=0",
                 "objective_params.beta=0.5"]) == 0
    first, final = events(run_dir, "train")[0], events(run_dir, "eval")[-1]
    assert first["loss"] == pytest.approx(0.5, abs=1e-3)        # policy == reference: 1 - σ(0) per example
    assert first["kl"] == pytest.approx(0.0, abs=1e-3)
    assert final["eval_loss"] < first["loss"] - 0.05
    assert final["eval_reward_accuracy"] > 0.9
    assert math.isfinite(final["eval_kl"]) and final["eval_kl"] >= 0


def test_kto_on_ranked_records_best_and_worst(tiny_model_dir, tmp_path):
    from drover.train.runner import run_training

    data = ranked_lists(tmp_path / "lists.jsonl", 16, k=3, with_reference=False)
    run_dir = tmp_path / "kto"
    run_training(config(tiny_model_dir, data, run_dir, "kto", epochs=3, lr=3e-3, eval_data=[str(data)],
                        max_length=64, objective_params={"beta": 0.5}), echo=False)
    first, final = events(run_dir, "train")[0], events(run_dir, "eval")[-1]
    assert first["desirable"] == pytest.approx(0.5)               # best and worst of each record
    assert final["eval_loss"] < first["loss"] - 0.05 and final["eval_reward_accuracy"] > 0.9


@pytest.mark.parametrize("objective", ["orpo", "simpo", "cpo"])
def test_reference_free_objectives_lower_their_loss_through_the_cli(tiny_model_dir, tmp_path, objective):
    from drover.cli import main

    data = ranked_lists(tmp_path / "pairs.jsonl", 16, k=2, with_reference=False)
    run_dir = tmp_path / objective
    assert main(["tune", "--objective", objective, "--model", str(tiny_model_dir), "--data", str(data),
                 "--eval-data", str(data), "--run-dir", str(run_dir), "epochs=4", "lr=3e-3", "micro_batch_size=4",
                 "max_length=64", "mixed_precision='no'", "progress=false", "warmup_ratio=0"]) == 0
    first, final = events(run_dir, "train")[0], events(run_dir, "eval")[-1]
    assert final["eval_loss"] < 0.8 * first["loss"], (first, final)
    assert final["eval_reward_accuracy"] > 0.9
    assert not (run_dir / "reference").exists()                  # no reference model: none computed
    assert (run_dir / "model" / "config.json").exists()


def test_tune_help_lists_every_objective_with_its_paper(capsys):
    from drover.cli import main
    from drover.commands.tune import tune_objectives
    from drover.train.objectives import get_objective

    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    text = capsys.readouterr().out
    assert {"kto", "orpo", "simpo", "cpo", "dpo", "tuna"} <= set(tune_objectives())
    assert "reward" not in tune_objectives() and "sft" not in tune_objectives()
    for name in tune_objectives():
        spec = get_objective(name)
        assert f"  {name} " in text and spec.paper in text and spec.formula in text


def test_unlabelled_data_written_back_round_trips(tmp_path):
    records, _ = convert(UNPAIRED)
    assert write_jsonl(tmp_path / "out.jsonl", records) == 4


def test_readme_objective_table_has_every_tune_objective():
    from drover.commands.tune import tune_objectives

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert all(f"| `{name}` |" in readme for name in tune_objectives())


def test_killed_and_resumed_kto_run_ends_with_the_same_weights(tiny_model_dir, tmp_path):
    """The mismatched sequences and their cached reference log-probs are rebuilt identically on resume."""
    import torch
    from test_train_e2e import _weights

    from drover.formats.driver import convert_file
    from drover.train.runner import run_training

    data = tmp_path / "kto.jsonl"
    convert_file("unpaired", labelled(tmp_path / "raw.jsonl", 12), data)
    common = dict(epochs=2, lr=3e-3, max_length=64, save_every=2, objective_params={"beta": 0.5})
    straight = run_training(config(tiny_model_dir, data, tmp_path / "straight", "kto", **common), echo=False)
    run_dir = tmp_path / "resumed"
    run_training(config(tiny_model_dir, data, run_dir, "kto", stop_after_steps=3, **common), echo=False)
    resumed = run_training(config(tiny_model_dir, data, run_dir, "kto", **common), echo=False)
    a, b = _weights(straight), _weights(resumed)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=name)
