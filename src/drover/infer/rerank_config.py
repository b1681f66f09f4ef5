"""`RerankConfig`: every setting of `drover rerank` (best-of-n / RSO) in one typed place."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from drover.errors import ConfigError


@dataclass
class RerankConfig:
    GROWS: ClassVar[tuple[str, ...]] = ("limit",)  # a larger limit continues the same outputs
    # Where records go (outputs, shard parts), not what they are: not part of the stage key.
    OUTPUTS: ClassVar[tuple[str, ...]] = ("out", "best", "rso_out", "shard", "merge_shards")

    reward_model: str = ""                 # a reward model directory saved by `drover reward`
    prompts: str = ""                      # Conversation/Ranked JSONL whose prompts are sampled (with policy)
    input: str = ""                        # or: a Ranked JSONL file to re-rank (no sampling)
    policy: str = ""                       # the sampling model: local dir, hf:PATH or http://host:port/v1#MODEL
    n: int = 8                             # responses sampled per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int = 0
    limit: int = 0                         # only the first N records (0 = all)
    batch_size: int = 8                    # reward-model scoring batch size (same scores at any size)
    run_dir: str = "runs/rerank"
    out: str = ""                          # ranked output (default RUN/data/ranked.jsonl)
    best: str = ""                         # top-1 output (default RUN/data/best.jsonl)
    select: Literal["best", "rso"] = "best"
    rso_k: int = 8                         # RSO: responses accepted per prompt (clipped to n)
    rso_beta: float = 0.5                  # RSO: temperature of exp(r / beta)
    rso_pairs: Literal["first-round", "tournament", "all"] = "first-round"
    rso_out: str = ""                      # RSO output (default RUN/data/rso.jsonl)
    shard: str | None = None               # "I/N": rank only records k with k mod N = I (drover.shards)
    merge_shards: int | None = None        # merge the N finished shards' parts into the outputs

    def validate(self) -> None:
        if not self.reward_model:
            raise ConfigError("rerank: reward_model: required (--reward-model DIR)")
        if bool(self.prompts) == bool(self.input):
            raise ConfigError("rerank: give exactly one of --prompts (sample with --policy) or --input (re-rank)")
        if self.prompts and not self.policy:
            raise ConfigError("rerank: --prompts needs --policy (the model to sample from)")
        if self.n < 1:
            raise ConfigError(f"rerank: -n must be >= 1, got {self.n}")
        if self.limit < 0:
            raise ConfigError(f"--limit must be >= 0 (0: all records), got {self.limit}")
        if self.batch_size < 1:
            raise ConfigError(f"rerank: batch_size must be >= 1, got {self.batch_size}")
        if self.select == "rso" and self.rso_k < 2:
            raise ConfigError(f"rerank: --rso-k must be >= 2 (pairs need two responses), got {self.rso_k}")
        if self.select == "rso" and not (self.rso_beta > 0 and math.isfinite(self.rso_beta)):
            raise ConfigError(f"rerank: --rso-beta must be a positive number, got {self.rso_beta}")
