"""Expert iteration: sample n responses, keep the best, fine-tune on them, repeat.

Round r (1..R) is two resumable stages in the run directory:

  round-r-sample   the current policy samples n responses per prompt (through the LLM
                   client and its cache); a reward model or an LLM judge scores them;
                   RUN/round-r/ranked.jsonl holds every ranking, best.jsonl the winners.
  round-r-sft      SFT of the *current* policy on the winners (RUN/round-r/sft, which
                   resumes from its own checkpoints); its model is the next policy.

Each stage writes a marker with the digest of its resolved config and the content
fingerprints of what it read (`RunDir.mark_done`): the policy, the prompts, the reward
model or the judge's identity (a local judge by content), the SFT data. Re-running the same command skips finished stages and continues an
interrupted one from its partial outputs; a finished stage whose config or inputs changed
(e.g. round 1 retrained with another `sft.lr`) is redone from scratch, and so is every
later round, since its policy changed. With `conditional_tokens`, every response is kept for
SFT, tagged `<|good|>` (the winner) or `<|bad|>` (the rest), and rounds after the
first sample with the good token (`drover.train.conditional_tokens`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from drover.errors import ConfigError


@dataclass
class ExpertIterationConfig:
    policy: str = ""                    # the starting model (local directory)
    prompts: list[str] = field(default_factory=list)   # Conversation or Ranked JSONL: their prompts
    rounds: int = 3
    n: int = 4                          # samples per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    select: Literal["reward-model", "judge"] = "reward-model"
    reward_model: str = ""              # for select=reward-model
    judge: str = ""                     # an LLM spec, for select=judge
    conditional_tokens: bool = False
    seed: int = 0
    run_dir: str = "runs/expert-iteration"
    sft: dict[str, Any] = field(default_factory=dict)  # TrainConfig keys for every round's SFT

    def validate(self) -> None:
        if not self.policy:
            raise ConfigError("expert-iterate: policy: required (the starting model directory)")
        if not self.prompts:
            raise ConfigError("expert-iterate: prompts: required (JSONL files whose prompts are sampled)")
        if self.rounds < 1 or self.n < 2:
            raise ConfigError(f"expert-iterate: need rounds >= 1 and n >= 2 (got {self.rounds}, {self.n})")
        if self.select == "reward-model" and not self.reward_model:
            raise ConfigError("expert-iterate: select=reward-model needs reward_model=PATH")
        if self.select == "judge" and not self.judge:
            raise ConfigError("expert-iterate: select=judge needs judge=SPEC (e.g. openai:gpt-4)")


def _default_llm(spec: str, cache: Path) -> Any:
    from drover.llm.client import LLM
    from drover.llm.config import LLMConfig

    return LLM(LLMConfig.from_spec(spec), cache)


def _scorer(config: ExpertIterationConfig, make_llm: Callable[[str, Path], Any], cache: Path) -> Any:
    from drover.judges.rating import rating_judge_scorer

    if config.select == "judge":
        return rating_judge_scorer(make_llm(config.judge, cache))
    from drover.local.reward import load_reward_scorer

    return load_reward_scorer(config.reward_model)


def _judge_identity(config: ExpertIterationConfig) -> Any:
    """Who picks the samples (select=judge), by content: a local judge's fingerprint, an
    endpoint's URL and served name, a recipe service's declared identity; not the spec string
    (a judge retrained under the same path picks differently)."""
    if config.select != "judge":
        return None
    from drover.llm.config import LLMConfig

    return LLMConfig.from_spec(config.judge).identity()


def _read_prompts(config: ExpertIterationConfig) -> list[Any]:
    """Every prompt record, read (and so checked) before any model is loaded."""
    from drover.records import read_records

    return [r for path in config.prompts for r in read_records(path)]


def _sample_stage(config: ExpertIterationConfig, policy: str, round_dir: Path, scorer: Any,
                  make_llm: Callable[[str, Path], Any], cache: Path, condition: bool,
                  records: list[Any]) -> dict[str, Any]:
    from drover.infer.best_of_n import SampleOptions, best_of_n
    from drover.records import prompt_of
    from drover.records import Conversation
    from drover.train.conditional_tokens import good_prompt

    if condition:   # ask the conditioned policy for its good behaviour
        records = [Conversation(r.id, good_prompt(prompt_of(r))) for r in records]
    options = SampleOptions(config.n, config.temperature, config.top_p, config.max_tokens, config.seed)
    llm = make_llm(policy, cache)
    try:
        summary = best_of_n(llm, records, scorer, round_dir / "ranked.jsonl", round_dir / "best.jsonl", options,
                            policy_name=Path(policy).name)
    finally:
        close = getattr(llm, "close", None)
        if close:
            close()
    return vars(summary)


def _sft_data(config: ExpertIterationConfig, round_dir: Path) -> Path:
    """The round's SFT file: the winners, or every response tagged good/bad."""
    if not config.conditional_tokens:
        return round_dir / "best.jsonl"
    from drover.records import Ranked, read_ranked, write_jsonl
    from drover.train.conditional_tokens import BAD, GOOD, conditioned_conversations

    def untagged(record: Ranked) -> Ranked:   # the prompt without the sampling-time control token
        first = record.messages[0]
        if first.role == "system" and first.content.split(" ")[0] in (GOOD, BAD):
            rest = first.content.split(" ", 1)[1] if " " in first.content else ""
            messages = ([replace(first, content=rest)] if rest else []) + record.messages[1:]
            return replace(record, messages=messages)
        return record

    out = round_dir / "conditioned.jsonl"
    write_jsonl(out, conditioned_conversations(untagged(r) for r in read_ranked(round_dir / "ranked.jsonl")))
    return out


def expert_iterate(config: ExpertIterationConfig, make_llm: Callable[[str, Path], Any] | None = None,
                   train: Callable[[Any], Any] | None = None, scorer: Any = None) -> str:
    """Run the rounds (skipping finished stages); returns the final policy directory.

    `make_llm(spec, cache_path)`, `train(TrainConfig)` and `scorer(items) -> rewards`
    default to the LLM client, `run_training` and the configured reward model or judge;
    tests pass stand-ins.
    """

    from drover.config import from_dict
    from drover.runs import RunDir, fingerprints
    from drover.train.config import TrainConfig

    config.validate()
    prompts = _read_prompts(config)  # a bad prompts file fails now, not after loading the reward model
    make_llm = make_llm or _default_llm
    if train is None:
        from drover.train.runner import run_training as train
    run = RunDir(config.run_dir).ensure()
    run.save_config(config, "expert-iteration.yaml")
    policy = config.policy
    judge = _judge_identity(config)
    for r in range(1, config.rounds + 1):
        round_dir = run.root / f"round-{r}"
        # what the samples depend on (not the SFT settings: changing sft.lr keeps the samples)
        sample_key = {"round": r, "policy": policy, "config": replace(config, sft={}, judge=""),
                      "judge": judge}
        sample_inputs = [policy, *config.prompts, *([config.reward_model] if config.reward_model else [])]
        if not run.stage_done(f"round-{r}-sample", sample_key):
            if run.stage_marker(f"round-{r}-sample") is not None:  # done before, on other inputs: redo
                for name in ("ranked.jsonl", "best.jsonl", "conditioned.jsonl"):
                    (round_dir / name).unlink(missing_ok=True)
            if scorer is None:
                scorer = _scorer(config, make_llm, run.llm_cache)
            round_config = replace(config, seed=config.seed + r)   # new samples each round
            summary = _sample_stage(round_config, policy, round_dir, scorer, make_llm, run.llm_cache,
                                    condition=config.conditional_tokens and r > 1, records=prompts)
            run.mark_done(f"round-{r}-sample", sample_key, summary, inputs=fingerprints(sample_inputs))
            print(f"expert-iterate round {r}: {summary['written']} prompts, mean best reward "
                  f"{summary['mean_best']:.3f} vs mean of all {summary['mean_all']:.3f}")
        sft = from_dict(TrainConfig, {**config.sft, "model": policy, "objective": "sft",
                                      "data": [str(_sft_data(config, round_dir))],
                                      "run_dir": str(round_dir / "sft")}, where="expert-iterate sft")
        if not run.stage_done(f"round-{r}-sft", sft):
            if run.stage_marker(f"round-{r}-sft") is not None:  # trained before, on other inputs: retrain
                sft.force = True
            train(sft)
            sft.force = False  # not part of the stage's key
            run.mark_done(f"round-{r}-sft", sft, inputs=fingerprints([policy, *sft.data]))
        policy = str(round_dir / "sft" / "model")
    return policy
