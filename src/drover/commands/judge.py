"""LLM-as-judge evaluations: `drover judge KIND --judge SPEC [options] [key=value ...]`.

One subcommand per entry of the judge registry (`drover.judges.registry`); each one's
options are its `Settings` fields. SPEC is an LLM spec (openai:gpt-4,
http://127.0.0.1:8000/v1#model, hf:PATH). `judge_options.KEY=VALUE` sets the judge LLM's
concurrency, rpm, tpm, max_retries, timeout, prices, temperature and max_tokens. The stage
config is `drover.judges.stage.JudgeConfig` (`--config FILE.yaml` takes its keys). Results:
RUN/eval/<model>/<name>.json and .examples.jsonl (see `drover.judges.stage`).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

# Common flags -> JudgeConfig keys (the judge's own flags come from its Settings).
_COMMON: dict[str, dict[str, Any]] = {
    "run-dir": {"help": "run directory (results in RUN/eval/<model>/; default: runs/judge)"},
    "name": {"help": "result name (default: the judge's, e.g. vicuna80-vs-gpt35)"},
    "label": {"help": "the judged model's label in results and the report, e.g. train/sft/model "
                      "(default: from the answers' source)"},
    "limit": {"type": int, "help": "judge only the first N items (quick checks)"},
}
_WITH_LLM: dict[str, dict[str, Any]] = {
    "judge": {"help": "the judge LLM spec, e.g. openai:gpt-4 or http://127.0.0.1:8000/v1#model"},
    "concurrency": {"type": int, "help": "parallel requests to the judge (= judge_options.concurrency; default 16)"},
    "max-judge-tokens": {"type": int, "help": "cap every judge call's max_tokens (= judge_options.max_tokens)"},
}
_ALIASES = {"concurrency": "concurrency", "max_judge_tokens": "max_tokens"}  # flag -> judge_options key
_OPTION_KEYS = ("concurrency", "rpm", "tpm", "max_retries", "timeout", "price_input_per_1k", "price_output_per_1k")


def _options_help() -> str:
    """The judge options with their defaults (LLMConfig's), for every judge's --help."""
    from drover.llm.config import LLMConfig

    defaults = LLMConfig()
    listed = ", ".join(f"{k} ({getattr(defaults, k)})" for k in _OPTION_KEYS)
    return (f"judge options, as judge_options.KEY=VALUE: {listed}; temperature and max_tokens (default: the "
            f"protocol's; max_tokens caps it). Other stage keys: constrain=false (no constrained verdicts), "
            f"force=true (re-judge a finished result), limit=N. "
            f"Example: judge_options.rpm=500 judge_options.price_input_per_1k=0.01")


def _names() -> list[str]:
    from drover.judges.registry import JUDGES

    return JUDGES.names()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from drover.judges.judge import setting_options
    from drover.judges.registry import JUDGES

    options_help = _options_help()
    parser.epilog = options_help
    sub = parser.add_subparsers(dest="kind", required=True, metavar="{" + ",".join(_names()) + "}")
    for name in _names():
        judge = JUDGES.get(name)
        title = judge.title.replace("%", "%%")  # argparse formats help strings with %
        p = sub.add_parser(name, help=title, description=judge.title,
                           epilog=f"example: {judge.example}\n\n{options_help}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", help="YAML file with judge stage keys (JudgeConfig and this judge's settings)")
        flags = {**_COMMON, **(_WITH_LLM if judge.uses_llm else {})}
        for flag, kwargs in flags.items():
            p.add_argument(f"--{flag}", dest=flag.replace("-", "_"), default=None, **kwargs)
        if judge.uses_llm:
            p.add_argument("--no-constrain", dest="constrain", action="store_false", default=None,
                           help="never ask the endpoint to constrain verdicts (default: ask; endpoints that "
                                "cannot fall back to free text)")
        for f, meta in setting_options(judge.Settings):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            kwargs: dict[str, Any] = {"dest": f.name, "default": None,
                                      "help": (meta["help"] + (" (required)" if meta["required"] else
                                                               f" (default: {default})")).replace("%", "%%")}
            if isinstance(default, bool):
                kwargs["action"] = "store_true"
            else:
                if meta["nargs"]:
                    kwargs["nargs"] = meta["nargs"]
                if meta["choices"]:
                    kwargs["choices"] = meta["choices"]
                if isinstance(default, int):
                    kwargs["type"] = int
            p.add_argument(meta["flag"] or f"--{f.name.replace('_', '-')}", **kwargs)
        p.add_argument("overrides", nargs="*", metavar="key=value",
                       help="stage config overrides, e.g. judge_options.rpm=60 (win over flags)")


def build_config(args: argparse.Namespace) -> Any:
    """The JudgeConfig from --config, flags and key=value overrides, in that order of precedence."""
    from drover.config import from_dict, merge_overrides, read_yaml
    from drover.errors import ConfigError
    from drover.judges.judge import setting_options
    from drover.judges.registry import JUDGES
    from drover.judges.stage import JudgeConfig

    judge = JUDGES.get(args.kind)
    stage_keys = {f.name for f in dataclasses.fields(JudgeConfig)}
    setting_keys = {f.name for f in dataclasses.fields(judge.Settings)}
    data = read_yaml(args.config) if args.config else {}
    data["kind"] = args.kind
    overrides = list(args.overrides)
    for flag in {**_COMMON, **_WITH_LLM}:
        key = flag.replace("-", "_")
        value = getattr(args, key, None)
        if value is None:
            continue
        if isinstance(value, int) and value < 1:
            raise ConfigError(f"--{flag} must be at least 1 (got {value})")
        if key in _ALIASES:
            data.setdefault("judge_options", {})[_ALIASES[key]] = value
        else:
            data[key] = value
    if getattr(args, "constrain", None) is not None:
        data["constrain"] = args.constrain
    settings = dict(data.get("settings") or {})
    for f, _ in setting_options(judge.Settings):
        value = getattr(args, f.name, None)
        if isinstance(value, list):
            # `--model-outputs a b judge_options.rpm=9`: argparse gives trailing overrides to the list.
            moved = [v for v in value if "=" in v and v.partition("=")[0].split(".")[0] in stage_keys | setting_keys]
            overrides = moved + overrides
            value = [v for v in value if v not in moved]
        if value is not None and value is not False:
            settings[f.name] = value
    data = merge_overrides(data, overrides)
    for key in [k for k in data if k in setting_keys and k not in stage_keys]:
        settings[key] = data.pop(key)
    data["settings"] = settings
    return from_dict(JudgeConfig, data, where=args.config or f"judge {args.kind}")


def run(args: argparse.Namespace) -> int:
    from drover.judges.stage import run_judge

    record = run_judge(build_config(args))
    errors = record.get("request_errors") or 0
    if errors:
        print(f"{errors} judge request(s) failed after retries: re-run the same command to retry exactly those")
        return 1
    return 0
