"""AlpacaEval judging: replaying the official judge outputs through drover gives the official numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drover.judges import alpaca_eval as ae
from drover.judges.runner import run_calls
from drover.completions import Choice, Completion, TokenLogprob
from drover.metrics.winrate import win_rate

DATA = Path(__file__).parent / "data" / "alpaca_eval"


class ReplayLLM:
    """Answers each request with a recorded completion, looked up by the request key."""

    def __init__(self, answers: dict[str, Completion]):
        self.answers = answers
        self.requests = []

    def run(self, requests, desc="", total=None):
        for request in requests:
            self.requests.append(request)
            yield self.answers[request.key]


def _completion(raw: dict) -> Completion:
    first = raw["logprobs"]["content"][0]
    top = {t["token"]: t["logprob"] for t in first["top_logprobs"]}
    return Completion(choices=[Choice(raw["text"], raw.get("finish_reason"),
                                      [TokenLogprob(first["token"], first["logprob"], top)])])


@pytest.mark.parametrize("model", ["alpaca-7b", "vicuna-7b"])
def test_v2_replay_of_the_official_judge_outputs(model: str) -> None:
    annotations = json.loads((DATA / model / "weighted_alpaca_eval_gpt4_turbo" / "annotations.json").read_text())
    name, outputs = ae.load_outputs(DATA / model / "model_outputs.json")
    assert name == model
    pairs = ae.make_pairs(outputs, "gpt4_1106_preview")
    assert len(pairs) == 805
    annotator = ae.load_annotator("weighted_alpaca_eval_gpt4_turbo")
    calls = ae.build_calls(pairs, annotator)
    by_instruction = {a["instruction"]: a for a in annotations}
    # identical outputs are never sent (the official file has no judge output for them either)
    assert len(calls) == sum(a["raw_completion"] is not None for a in annotations)
    llm = ReplayLLM({c.id: _completion(by_instruction[pairs[int(c.id)].instruction]["raw_completion"])
                     for c in calls})
    judgments = run_calls(llm, calls, "gpt-4-1106-preview")
    assert all(r.decoding.max_tokens == 1 and r.decoding.top_logprobs == 5 for r in llm.requests)
    prefs = ae.preferences(pairs, judgments)
    for pair, pref in zip(pairs, prefs):
        assert pref == pytest.approx(by_instruction[pair.instruction]["preference"], abs=1e-9)
    official = win_rate([a["preference"] for a in annotations])
    assert win_rate(prefs)["win_rate"] == pytest.approx(official["win_rate"], abs=1e-8)
    assert win_rate(prefs)["standard_error"] == pytest.approx(official["standard_error"], abs=1e-8)


def test_position_coin_matches_alpaca_eval_and_is_seeded() -> None:
    flips = [ae.is_switched(f"instruction {i}") for i in range(200)]
    assert 60 < sum(flips) < 140
    assert flips == [ae.is_switched(f"instruction {i}", seed=0) for i in range(200)]
    assert flips != [ae.is_switched(f"instruction {i}", seed=1) for i in range(200)]


def test_switched_pairs_show_the_model_first() -> None:
    pairs = [ae.Pair(i, f"instruction {i}", "x", f"BASE{i}", f"MODEL{i}") for i in range(20)]
    calls = ae.build_calls(pairs, ae.load_annotator("alpaca_eval_gpt4"))
    for call in calls:
        text = call.messages[-1]["content"]
        model_first = text.index("MODEL") < text.index("BASE")
        assert model_first == call.meta["switched"]


def test_v1_ranking_judge_and_identical_outputs() -> None:
    pairs = [ae.Pair(0, "a", "x", "same", "same"), ae.Pair(1, "b", "x", "B", "M"), ae.Pair(2, "c", "x", "B", "M")]
    annotator = ae.load_annotator("alpaca_eval_gpt4")
    assert annotator.decoding == {"temperature": 0.0, "max_tokens": 100}
    calls = ae.build_calls(pairs, annotator)
    assert [c.id for c in calls] == ["1", "2"]
    first_wins = "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]"
    llm = ReplayLLM({"1": Completion(choices=[Choice(first_wins)]), "2": Completion(choices=[Choice("no idea")])})
    prefs = ae.preferences(pairs, run_calls(llm, calls, "j"))
    shown_first_is_model = calls[0].meta["switched"]
    assert prefs == [1.5, 2.0 if shown_first_is_model else 1.0, None]
    summary = ae.summarize(pairs, prefs)
    assert summary["metrics"]["n_missing"] == 1 and summary["metrics"]["n_draws"] == 1


def test_function_calling_annotators_are_refused() -> None:
    from drover.errors import ConfigError

    with pytest.raises(ConfigError, match="function calling"):
        ae.load_annotator("alpaca_eval_gpt4_fn")
    with pytest.raises(ConfigError, match="did you mean"):
        ae.load_annotator("alpaca_eval_gpt")


def test_outputs_outside_the_set_are_an_input_error(tmp_path: Path) -> None:
    from drover.errors import InputError

    path = tmp_path / "model_outputs.json"
    path.write_text(json.dumps([{"instruction": "not an AlpacaEval instruction", "output": "x", "generator": "m"}]))
    with pytest.raises(InputError):
        ae.make_pairs(ae.load_outputs(path)[1], "text_davinci_003")
