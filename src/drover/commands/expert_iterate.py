"""Expert iteration: sample n responses per prompt, keep the best (reward model or judge),
SFT on the winners, and repeat for R rounds; each round is a resumable stage.

    drover expert-iterate --policy runs/sft/model --prompts prompts.jsonl --reward-model runs/rm/model \
        --rounds 3 -n 4 --run-dir runs/ei sft.lr=1e-5 sft.epochs=1
    drover expert-iterate ... --select judge --judge openai:gpt-4 --conditional-tokens

Outputs: RUN/round-r/{ranked,best}.jsonl and RUN/round-r/sft/model (the next policy).
`--conditional-tokens` trains on every response tagged <|good|>/<|bad|> and samples later
rounds with <|good|> (see drover/train/conditional_tokens.py). Any ExpertIterationConfig
key can be given as key=value (SFT keys as sft.KEY=VALUE) or in --config.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML with ExpertIterationConfig keys")
    parser.add_argument("--policy", help="the starting model directory")
    parser.add_argument("--prompts", action="append", help="Conversation/Ranked JSONL of prompts (repeatable)")
    parser.add_argument("--reward-model", help="reward model that picks the best response")
    parser.add_argument("--select", choices=["reward-model", "judge"], help="who picks the best (default reward-model)")
    parser.add_argument("--judge", help="an LLM spec for --select judge (1-10 rating per response)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("-n", type=int, help="samples per prompt")
    parser.add_argument("--conditional-tokens", action="store_true", default=None)
    parser.add_argument("--run-dir")
    parser.add_argument("overrides", nargs="*", help="key=value overrides (sft.lr=1e-5 temperature=0.8 ...)")


def run(args: argparse.Namespace) -> int:
    from drover.config import stage_config
    from drover.infer.expert_iteration import ExpertIterationConfig, expert_iterate

    flags = {"policy": args.policy, "prompts": args.prompts, "reward_model": args.reward_model,
             "select": args.select, "judge": args.judge, "rounds": args.rounds, "n": args.n,
             "conditional_tokens": args.conditional_tokens, "run_dir": args.run_dir}
    config = stage_config(ExpertIterationConfig, args.config, flags, args.overrides)
    final = expert_iterate(config)
    print(f"drover expert-iterate: {config.rounds} rounds done; final policy: {final}")
    return 0
