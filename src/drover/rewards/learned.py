"""Learned rewards: a drover reward model, or an LLM judge through the one client (RLAIF).

The pairwise judge (`judge-pairwise`) compares each response with the prompt record's reference
answer using the Vicuna-80 / FastChat pairwise review prompt (`drover.judges.vicuna`), in both
orders because judges favour a position: reward = mean over readable orders of 1 (win),
0.5 (tie), 0 (loss).

A judge can fail (an endpoint down after the client's retries, a verdict it cannot be made to
write readably): such a response gets no reward at all (None, never a guessed 0 that would
teach the policy its answer was bad); `RewardSpec` counts it, the online loop trains on none
of that prompt's group and logs how many were dropped.

Both reuse the scorers best-of-n and expert iteration use (`drover.local.reward`,
`drover.judges.rating.rating_judge_scorer`): a reward model is read at the response's
EOS exactly as `drover reward` trained it; a judge rates each response 1-10 with the
GPT-4-LLM / FastChat reviewer prompt, every call cached in the run's LLM cache, so a
resumed run pays for no rating twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from drover.errors import ConfigError
from drover.rewards.kind import RewardContext, RewardFn, RewardInput, RewardKind
from drover.rewards.verifiable import needs_reference


@dataclass
class RewardModelParams:
    path: str = ""                  # a `drover reward` run's model directory
    batch_size: int = 8
    max_length: int = 2048


def _reward_model(params: RewardModelParams, ctx: RewardContext) -> RewardFn:
    from drover.local.reward import load_reward_scorer

    if not params.path:
        raise ConfigError("reward-model reward: params.path is required (a `drover reward` model directory)")
    scorer = load_reward_scorer(params.path, params.batch_size, params.max_length)
    return lambda items: scorer([(item.prompt, item.response) for item in items])


@dataclass
class JudgeParams:
    llm: str = ""                   # an LLM spec, e.g. openai:gpt-4o-mini or hf:PATH
    cache: str = ""                 # the LLM cache file; default: the online run's llm-cache.sqlite
    scale: float = 0.1              # rating (1-10) times scale: 0.1-1.0


def _judge(params: JudgeParams, ctx: RewardContext) -> RewardFn:
    if not params.llm:
        raise ConfigError("judge reward: params.llm is required (an LLM spec, e.g. openai:gpt-4o-mini)")
    state: dict[str, object] = {}

    def score(items: list[RewardInput]) -> list[float]:
        if "scorer" not in state:   # connect on first use: building a spec validates nothing remote
            from drover.judges.rating import rating_judge_scorer
            from drover.llm.client import LLM
            from drover.llm.config import LLMConfig

            state["scorer"] = rating_judge_scorer(LLM(LLMConfig.from_spec(params.llm), params.cache or ctx.llm_cache),
                                                  failed=None)
        ratings = state["scorer"]([(item.prompt, item.response) for item in items])  # type: ignore[operator]
        return [None if r is None else params.scale * r for r in ratings]

    return score


@dataclass
class PairwiseJudgeParams:
    llm: str = ""                   # an LLM spec
    cache: str = ""                 # default: the online run's llm-cache.sqlite


def _pairwise_judge(params: PairwiseJudgeParams, ctx: RewardContext) -> RewardFn:
    from drover.judges.verdicts import Outcome
    from drover.judges.vicuna import load_prompts, parse_scores, prompt_for
    from drover.rewards.kind import reference_answer

    if not params.llm:
        raise ConfigError("judge-pairwise reward: params.llm is required (an LLM spec, e.g. openai:gpt-4o-mini)")
    prompt = prompt_for(load_prompts(), "general")
    state: dict[str, object] = {}

    def score(items: list[RewardInput]) -> list[float]:
        from drover.completions import Request

        if "llm" not in state:
            from drover.llm.client import LLM
            from drover.llm.config import LLMConfig

            state["llm"] = LLM(LLMConfig.from_spec(params.llm), params.cache or ctx.llm_cache)
        requests, slots = [], []
        for i, item in enumerate(items):
            reference = reference_answer(item.record)
            if not reference:
                raise ConfigError(f"judge-pairwise reward: record {item.record.id!r} has no reference answer "
                                  f"(a last assistant turn, `reference`, or meta.answer) to compare with")
            question = "\n\n".join(m.content for m in item.prompt if m.role == "user")
            for order, (a1, a2) in (("ab", (reference, item.response)), ("ba", (item.response, reference))):
                requests.append(Request.chat(prompt.messages(question, a1, a2), key=f"{item.record.id}/{order}",
                                             temperature=prompt.temperature, max_tokens=prompt.max_tokens))
                slots.append((i, order))
        wins: list[list[float]] = [[] for _ in items]
        for (i, order), completion in zip(slots, state["llm"].run(requests, desc="judge-pairwise")):  # type: ignore[attr-defined]
            verdict = parse_scores(completion.text) if completion.ok else None
            if verdict is None or not hasattr(verdict, "outcome"):
                continue
            mine = Outcome.SECOND if order == "ab" else Outcome.FIRST
            wins[i].append(0.5 if verdict.outcome == Outcome.TIE else float(verdict.outcome == mine))
        return [sum(w) / len(w) if w else None for w in wins]

    return score


def _local_judge(spec: str) -> list[str]:
    """The directory of a local judge model (`hf:PATH` or `PATH`): its content keys a resumable
    run, as a reward model's does (a judge retrained in place rates differently). An endpoint
    names no path: its URL and served name are in the config already."""
    path = spec.removeprefix("hf:")
    return [path] if path and "://" not in path and Path(path).is_dir() else []


REWARD_MODEL = RewardKind("reward-model", _reward_model, RewardModelParams, "a `drover reward` model",
                          inputs=lambda params: [params.path])
JUDGE = RewardKind("judge", _judge, JudgeParams, "an LLM judge's 1-10 rating (cached)", abstains=True,
                   inputs=lambda params: _local_judge(params.llm))
PAIRWISE_JUDGE = RewardKind("judge-pairwise", _pairwise_judge, PairwiseJudgeParams,
                            "an LLM judge's preference over the reference answer, both orders (cached)",
                            check=needs_reference, abstains=True, inputs=lambda params: _local_judge(params.llm))
