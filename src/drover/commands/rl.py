"""Online alignment: the policy samples, rewards score, and it learns from its own samples.

    drover rl --algorithm grpo --model runs/sft/model --prompts gsm.jsonl --reward gsm-match --run-dir runs/grpo
    drover rl --algorithm ppo --model runs/sft/model --prompts prompts.jsonl \\
        --reward reward-model:path=runs/rm/model steps=200 train.lr=1e-6 algorithm_params.kl_coef=0.05
    drover rl --config recipes/train/rl-grpo-gsm.yaml train.model=runs/sft/model
    drover rl --engine vllm --model runs/sft/model --prompts gsm.jsonl --reward gsm-match vllm.dtype=bfloat16

Algorithms (drover/train/online/algorithms; loss, advantages and paper in each docstring):
  grpo        group-normalised rewards, clipped per-token surrogate + β·KL      Shao et al. 2024 (DeepSeekMath)
  rloo        leave-one-out baseline, KL in the reward, sequence-level clip     Ahmadian et al. 2024
  ppo         value head, GAE, per-token KL penalty, clipped policy + value    Schulman et al. 2017; Ouyang et al. 2022
  online-dpo  DPO on the best/worst of each prompt's fresh samples             Guo et al. 2024 (Online AI Feedback)

Rewards (drover/rewards; `--reward KIND[:key=value,...][@weight]`, repeatable, or `rewards:` in YAML):
  reward-model (path=), judge (llm=, a 1-10 rating through the LLM client, cached),
  judge-pairwise (llm=, preference over the record's reference answer, both orders), gsm-match (match=exact|value),
  unit-tests (sandboxed), regex (pattern=, mode=search|fullmatch|fraction), length (target=, tolerance=, falloff=)

Generation engines (`--engine`, or engine: in YAML; drover/local/samplers.py):
  hf    the local engine on the policy itself (default; CPU or GPU)
  vllm  an in-process vLLM on the training GPU, the policy's weights (LoRA merged) loaded into it
        before every step's sampling; settings vllm.gpu_memory_utilization (0.3), vllm.max_model_len
        (0: train.max_length), vllm.dtype (auto), vllm.enable_sleep_mode (false). Needs
        pip install 'drover[gpu]' and a CUDA GPU, checked before anything runs (never a silent
        fallback to hf); a run resumes only with the engine (and vllm.dtype) it started with.

Every OnlineConfig key can be set in --config or as key=value; training-engine settings (model, lr,
precision, LoRA, run_dir, save_every) are `train.KEY=VALUE`. A re-run of the same command
resumes from the last checkpoint; one with other settings (or another policy or reference model
at the same path) is refused, naming what changed; `--force` starts fresh. Outputs: RUN/model,
RUN/rewards.jsonl (every reward call's inputs and outputs), RUN/log.jsonl (reward, KL, loss per step).
"""

from __future__ import annotations

import argparse
from typing import Any

from drover.errors import ConfigError

FRESH_FLAG = "--force"  # what a recipe passes when this stage's inputs or settings changed
ALGORITHM_NAMES = ("grpo", "rloo", "ppo", "online-dpo")
ENGINE_NAMES = ("hf", "vllm")   # drover.local.samplers.SAMPLERS (a test keeps them equal)


def parse_reward(text: str) -> dict[str, Any]:
    """`KIND[:key=value,...][@weight]` -> a reward term mapping.

    >>> parse_reward("regex:pattern=^\\\\d+$,mode=fullmatch@0.5")
    {'kind': 'regex', 'weight': 0.5, 'params': {'pattern': '^\\\\d+$', 'mode': 'fullmatch'}}
    """
    from drover.config import parse_override

    weight = 1.0
    head, at, w = text.rpartition("@")
    if at:
        try:
            weight, text = float(w), head
        except ValueError:   # an '@' inside a parameter value, not a weight
            pass
    kind, _, rest = text.partition(":")
    params: dict[str, Any] = {}
    text_fields = _text_fields(kind)
    for item in filter(None, rest.split(",")):
        if "=" not in item:
            raise ConfigError(f"--reward {kind}: {item!r} is not key=value")
        keys, value = parse_override(item)
        key, raw = ".".join(keys), item.partition("=")[2]
        # numbers and booleans as YAML reads them; a text parameter (a regex, a path, an LLM
        # spec) and anything else verbatim: pattern=1.50 is the regex "1.50", not "1.5"
        params[key] = value if isinstance(value, (bool, int, float)) and key not in text_fields else raw
    return {"kind": kind, "weight": weight, "params": params}


def _text_fields(kind: str) -> set[str]:
    """The string-typed parameters of a reward kind (none for an unknown kind: it fails later, by name)."""
    import typing

    from drover.rewards import REWARDS

    try:
        params = REWARDS.get(kind).params
    except ConfigError:
        return set()
    return {name for name, tp in typing.get_type_hints(params).items() if tp is str} if params else set()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML with OnlineConfig keys")
    parser.add_argument("--algorithm", choices=ALGORITHM_NAMES, help="the online algorithm (default grpo)")
    parser.add_argument("--engine", choices=ENGINE_NAMES, help="the generation engine that samples (default hf)")
    parser.add_argument("--model", help="the policy to start from (local directory); train.model")
    parser.add_argument("--prompts", action="append", help="Conversation/Ranked JSONL of prompts (repeatable)")
    parser.add_argument("--reward", action="append", help="KIND[:key=value,...][@weight] (repeatable)")
    parser.add_argument("--run-dir", help="checkpoints, logs and the final policy; train.run_dir")
    parser.add_argument("--force", action="store_true",
                        help="start fresh: replace the run's checkpoints, model and logs instead of resuming; "
                             "train.force=true")
    parser.add_argument("overrides", nargs="*", help="key=value overrides (steps=50 train.lr=1e-6 ...)")


def build_config(args: argparse.Namespace) -> Any:
    """OnlineConfig from: defaults < --config YAML < flags < key=value overrides."""
    from drover.config import merge_overrides, read_yaml
    from drover.train.online.config import online_config

    data: dict[str, Any] = read_yaml(args.config) if args.config else {}
    train = dict(data.get("train") or {})
    if args.model:
        train["model"] = args.model
    if args.run_dir:
        train["run_dir"] = args.run_dir
    if getattr(args, "force", False):
        train["force"] = True
    data["train"] = train
    if args.algorithm:
        data["algorithm"] = args.algorithm
    if args.engine:
        data["engine"] = args.engine
    if args.prompts:
        data["prompts"] = args.prompts
    if args.reward:
        data["rewards"] = [parse_reward(r) for r in args.reward]
    data = merge_overrides(data, list(args.overrides or []))
    return online_config(data, where=args.config or "command line")


def run(args: argparse.Namespace) -> int:
    from drover.train.online.loop import run_online

    run_online(build_config(args))
    return 0
