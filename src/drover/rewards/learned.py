"""Learned rewards: a drover reward model, or an LLM judge through the one client (RLAIF).

Both reuse the scorers best-of-n and expert iteration use (`drover.infer.reward_scorer`,
`drover.infer.best_of_n.rating_judge_scorer`): a reward model is read at the response's
EOS exactly as `drover reward` trained it; a judge rates each response 1-10 with the
GPT-4-LLM / FastChat reviewer prompt, every call cached in the run's LLM cache, so a
resumed run pays for no rating twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from drover.errors import ConfigError
from drover.rewards.kind import RewardContext, RewardFn, RewardInput, RewardKind


@dataclass
class RewardModelParams:
    path: str = ""                  # a `drover reward` run's model directory
    batch_size: int = 8
    max_length: int = 2048


def _reward_model(params: RewardModelParams, ctx: RewardContext) -> RewardFn:
    from drover.infer.reward_scorer import load_reward_scorer

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
            from drover.infer.best_of_n import rating_judge_scorer
            from drover.llm.client import LLM
            from drover.llm.config import LLMConfig

            state["scorer"] = rating_judge_scorer(LLM(LLMConfig.from_spec(params.llm), params.cache or ctx.llm_cache))
        ratings = state["scorer"]([(item.prompt, item.response) for item in items])  # type: ignore[operator]
        return [params.scale * r for r in ratings]

    return score


REWARD_MODEL = RewardKind("reward-model", _reward_model, RewardModelParams, "a `drover reward` model")
JUDGE = RewardKind("judge", _judge, JudgeParams, "an LLM judge's 1-10 rating (cached)")
