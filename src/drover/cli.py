"""The one entry point: `drover <command> ...`.

Commands map 1:1 to stages. Each lives in `drover/commands/<name>.py` and exposes
`add_arguments(parser)` and `run(args) -> int | None`; only the chosen command's module
is imported, so `drover --help` never pays for torch or transformers.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from drover import __version__
from drover.errors import DroverError, did_you_mean

# name -> (module, one-line help). The one registration site for commands.
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("drover.commands.quickstart", "run the embedded end-to-end demo (tiny model, CPU) into runs/quickstart"),
    "run": ("drover.commands.run", "run a recipe: its stages in order, skipping finished ones"),
    "init-tiny": ("drover.commands.init_tiny", "build a tiny Llama model + BPE tokenizer with a chat template, in seconds"),
    "data": ("drover.commands.data", "list the datasets that ship with drover (counts, licenses)"),
    "convert": ("drover.commands.convert", "convert a public dataset format into Conversation/Ranked JSONL"),
    "inspect-tokens": ("drover.commands.inspect_tokens", "show a record's tokens with the trained (assistant) ones highlighted"),
    "stats": ("drover.commands.stats", "data statistics: counts, lengths, unique tokens, verb-noun pairs"),
    "serve": ("drover.commands.serve", "serve a local model over an OpenAI-compatible HTTP API"),
    "cache": ("drover.commands.cache", "inspect the persistent LLM cache of a run (hits, tokens, cost)"),
    "generate": ("drover.commands.generate", "teacher data: answers, translate, self-instruct, feedback, rank"),
    "sft": ("drover.commands.sft", "supervised fine-tuning (assistant tokens only), full or LoRA"),
    "reward": ("drover.commands.reward", "train a pairwise reward model on Ranked data"),
    "tune": ("drover.commands.tune", "preference/ranking tuning: dpo, ipo, kto, orpo, simpo, cpo, tuna, ..."),
    "rerank": ("drover.commands.rerank", "best-of-n: sample n responses and rank them with a reward model"),
    "rl": ("drover.commands.rl", "online alignment: grpo, rloo, ppo, online-dpo with composable rewards"),
    "expert-iterate": ("drover.commands.expert_iterate", "expert iteration: sample, pick the best, SFT, repeat"),
    "eval": ("drover.commands.eval", "benchmarks: MMLU, GSM, BBH, TydiQA, Codex-Eval, ToxiGen, TruthfulQA, ..."),
    "judge": ("drover.commands.judge", "LLM-as-judge: Vicuna-80, AlpacaEval, MT-bench, ranking, LLMBar, TruthfulQA"),
    "human": ("drover.commands.human", "human evaluation (HHH or Tülu form): create a study, serve it, results, export"),
    "report": ("drover.commands.report", "the HTML + Markdown report of one or more run directories"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = [f"  {name:<15} {help_}" for name, (_, help_) in COMMANDS.items()]
    parser = argparse.ArgumentParser(
        prog="drover",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="drover: from a base language model to a tuned, evaluated assistant.",
        epilog="commands:\n" + "\n".join(lines) + "\n\nRun `drover <command> --help` for a command's options.",
        usage="drover [-h] [--version] <command> ...",
    )
    parser.add_argument("--version", action="version", version=f"drover {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not argv or argv[0].startswith("-"):
        parser = _top_parser()
        if not argv:
            parser.print_help()
            return 0
        parser.parse_args(argv)
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"drover: unknown command {name!r}{did_you_mean(name, COMMANDS)}; see `drover --help`",
              file=sys.stderr)
        return 2
    module_name, help_ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
        parser = argparse.ArgumentParser(prog=f"drover {name}", description=(module.__doc__ or help_).strip(),
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(parser)
        args = parser.parse_args(argv[1:])
        code = module.run(args)
        return int(code or 0)
    except DroverError as exc:
        print(f"drover {name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"drover {name}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
