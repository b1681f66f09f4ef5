"""Teacher-LLM data generation, one resumable stage per subcommand.

    drover generate answers --input instructions.json --output runs/g/data/answers.jsonl \\
        --teacher http://127.0.0.1:8000/v1#tiny
    drover generate translate --to Chinese --input alpaca.json --output runs/g/data/zh.jsonl --translator openai:gpt-3.5-turbo
    drover generate self-instruct --mode alpaca --output runs/g/data/si.jsonl --teacher openai:gpt-4 num_instructions=500
    drover generate feedback --input prompts.jsonl --responses gpt4=a.jsonl student=b.jsonl --judge openai:gpt-4
    drover generate rank --method probabilistic --input alpaca.json --output runs/t/data/p.jsonl --teacher URL#m
    drover generate rank --method contextual --input alpaca.json --output runs/t/data/c.jsonl --policy URL#sft --judge openai:gpt-4

Every stage takes `--config stage.yaml` (keys of its config) and `key=value` overrides
(they win over flags, which win over the file). LLMs are spec strings:
`http://host:port/v1#MODEL`, `openai:MODEL` (key from $OPENAI_API_KEY) or `hf:PATH`.
Re-running the same command resumes: finished records are skipped and LLM calls come
from the run's cache (`RUN/llm-cache.sqlite`). A re-run under settings that change the
records (--max-tokens, teacher, input...) refuses, naming what changed; a larger --limit
continues; `--force` starts the output fresh.
"""

from __future__ import annotations

import argparse
from typing import Any

FRESH_FLAG = "--force"  # what a recipe passes when this stage's inputs or settings changed

# subcommand -> (config class, runner), as "module:attr" strings so that --help stays light.
STAGES: dict[str, tuple[str, str]] = {
    "answers": ("drover.generate.answers:AnswersConfig", "drover.generate.answers:run_answers"),
    "translate": ("drover.generate.translate:TranslateConfig", "drover.generate.translate:run_translate"),
    "self-instruct": ("drover.generate.self_instruct:SelfInstructConfig",
                      "drover.generate.self_instruct:run_self_instruct"),
    "feedback": ("drover.generate.feedback:FeedbackConfig", "drover.generate.feedback:run_feedback"),
    "rank-probabilistic": ("drover.generate.rank_probabilistic:RankProbabilisticConfig",
                           "drover.generate.rank_probabilistic:run_rank_probabilistic"),
    "rank-contextual": ("drover.generate.rank_contextual:RankContextualConfig",
                        "drover.generate.rank_contextual:run_rank_contextual"),
}

# flag -> (config key, argparse kwargs), per subcommand.
_COMMON = {"input": {"help": "instructions/prompts (Alpaca JSON/JSONL, Conversation or Ranked JSONL)"},
           "output": {"help": "output JSONL (appended; re-run to resume)"},
           "run-dir": {"help": "run directory holding llm-cache.sqlite (default: the output's)"},
           "limit": {"type": int, "help": "process only the first N prompts"}}
_FLAGS: dict[str, dict[str, dict[str, Any]]] = {
    "answers": {"teacher": {"help": "teacher LLM spec"}, "prompt": {"choices": ["alpaca", "chat"]},
                "max-tokens": {"type": int}, "temperature": {"type": float}},
    "translate": {"to": {"help": "target language name (e.g. Chinese)"},
                  "translator": {"help": "translator LLM spec"}},
    "self-instruct": {"teacher": {"help": "teacher LLM spec"}, "mode": {"choices": ["alpaca", "self-instruct"]},
                      "num-instructions": {"type": int}, "seed-tasks": {}},
    "feedback": {"judge": {"help": "judge LLM spec"},
                 "responses": {"nargs": "+", "metavar": "NAME=PATH", "help": "answers to rate, by prompt id"},
                 "sample": {"nargs": "+", "metavar": "NAME=SPEC", "help": "sample an answer now from these LLMs"},
                 "mode": {"choices": ["single", "joint"]}},
    "rank": {"method": {"choices": ["probabilistic", "contextual"], "help": "Tuna_p or Tuna_c"},
             "teacher": {"help": "probabilistic: teacher sampling N responses with log-probs"},
             "scorer": {"help": "probabilistic: LLM scoring given responses (e.g. hf:PATH)"},
             "responses": {"nargs": "+", "metavar": "PATH", "help": "probabilistic: given responses to score"},
             "policy": {"help": "contextual: the policy LLM that samples"},
             "judge": {"help": "contextual: the ranking judge"},
             "n": {"type": int, "help": "responses per instruction (default 4)"}},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    helps = {"answers": "teacher answers to instructions (Alpaca template)",
             "translate": "translate instructions and inputs (--to LANG), ids kept",
             "self-instruct": "grow an instruction pool from seed tasks (alpaca or self-instruct mode)",
             "feedback": "rate K responses 1-10 with a judge -> Ranked comparison data",
             "rank": "Tuna rankings: --method probabilistic (teacher log-probs) or contextual (judge)"}
    for name, help_ in helps.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--config", help="YAML file with this stage's config keys")
        for flag, kwargs in {**_COMMON, **_FLAGS[name]}.items():
            p.add_argument(f"--{flag}", dest=flag.replace("-", "_"), default=None, **kwargs)
        p.add_argument("--force", action="store_true", help="start the output fresh instead of resuming it")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (win over flags)")


def _load(name: str) -> tuple[type, Any]:
    import importlib

    def get(target: str) -> Any:
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)

    cls, runner = STAGES[name]
    return get(cls), get(runner)


def build_config(args: argparse.Namespace) -> tuple[Any, Any]:
    """(config, runner) from --config, flags and key=value overrides, in that order of precedence."""
    from drover.config import from_dict, merge_overrides, read_yaml

    stage = args.stage
    if stage == "rank":
        method = args.method
        if method is None:
            for item in args.overrides:
                if item.startswith("method="):
                    method = item.partition("=")[2]
        if method is None and args.config:
            method = read_yaml(args.config).get("method")
        if method not in ("probabilistic", "contextual"):
            from drover.errors import ConfigError

            raise ConfigError("rank: --method probabilistic|contextual is required")
        stage = f"rank-{method}"
    cls, runner = _load(stage)
    import dataclasses

    data = read_yaml(args.config) if args.config else {}
    data.pop("method", None)
    fields = {f.name for f in dataclasses.fields(cls)}
    overrides = [o for o in args.overrides if not o.startswith("method=")]
    for flag in {**_COMMON, **_FLAGS[args.stage]}:
        key = flag.replace("-", "_")
        value = getattr(args, key, None)
        if isinstance(value, list):
            # `--responses a=x b=y max_tokens=8`: argparse gives trailing overrides to the list.
            moved = [v for v in value if v.partition("=")[0] in fields]
            overrides = moved + overrides
            value = [v for v in value if v not in moved]
        if value is not None and key != "method":
            data[key] = value
    data = merge_overrides(data, overrides)
    return from_dict(cls, data, where=args.config or f"generate {args.stage}"), runner


def run(args: argparse.Namespace) -> int:
    from drover.generate.stage import claim_output, claimed_outputs
    from drover.runs import report_stage

    config, runner = build_config(args)
    output, also = claimed_outputs(config)
    claim_output(config, force=args.force, output=output, also=also)
    runner(config)
    report_stage(inputs=[p for p in (getattr(config, "input", ""), getattr(config, "seed_tasks", "")) if p])
    return 0
