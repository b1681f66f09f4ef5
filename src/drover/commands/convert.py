"""Convert a public dataset file (JSON array, JSONL or a single JSON document, optionally
gzipped; detected from the content) into drover's Conversation or Ranked JSONL."""

from __future__ import annotations

import argparse
import sys

from drover.formats import FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="fmt", required=True, metavar="FORMAT",
                        help="input format: " + ", ".join(FORMATS))
    parser.add_argument("input", metavar="IN", help="input file, or a directory of them (e.g. Super-NI tasks/)")
    parser.add_argument("output", metavar="OUT", help="output JSONL file (written atomically)")
    parser.add_argument("--source", help="dataset name used as id prefix and record source (default: per format)")
    parser.add_argument("--max-tokens", type=int,
                        help="sharegpt: split conversations longer than this many tokens "
                             "(0: never; default 2048, as Tülu)")
    parser.add_argument("--tokenizer", metavar="PATH",
                        help="sharegpt: count tokens with this local tokenizer (default: a word/character heuristic)")
    parser.add_argument("--oasst-mode", choices=("all", "top"), default="all",
                        help="oasst: every root-to-assistant path, or only the top-ranked reply at each branch")
    parser.add_argument("--shots", type=int, default=0, help="superni: positive examples in the prompt (default 0)")
    parser.add_argument("--max-instances", type=int, help="superni: instances per task (Tk-Instruct evaluates 100)")
    parser.add_argument("--reformulations", action="store_true",
                        help="unnatural: also convert each item's reformulations (full data)")
    parser.add_argument("--only", metavar="NAMES.txt",
                        help="directory IN: convert only the files named here, one name (without extension) "
                             "per line, e.g. Super-NI's splits/default/test_tasks.txt")
    lines = [f"  {name:<20} {help_}" for name, (_, help_) in FORMATS.items()]
    parser.epilog = "formats:\n" + "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from drover.errors import ConfigError
    from drover.formats import CONVERTERS
    from drover.formats.base import ConvertOptions
    from drover.formats.driver import convert_file
    from drover.formats.source import read_names

    if args.fmt not in CONVERTERS:
        CONVERTERS.get(args.fmt)  # raises ConfigError with "did you mean"
    if args.shots < 0:
        raise ConfigError("--shots must be >= 0")
    if args.max_instances is not None and args.max_instances < 1:
        raise ConfigError("--max-instances must be >= 1")
    if args.max_tokens is not None and args.max_tokens < 0:
        raise ConfigError("--max-tokens must be >= 0 (0 disables splitting)")
    max_tokens = ConvertOptions.max_tokens if args.max_tokens is None else (args.max_tokens or None)
    options = ConvertOptions(source=args.source, max_tokens=max_tokens, tokenizer=args.tokenizer,
                             oasst_mode=args.oasst_mode, shots=args.shots, max_instances=args.max_instances,
                             reformulations=args.reformulations,
                             only=read_names(args.only) if args.only else None)
    stats = convert_file(args.fmt, args.input, args.output, options)
    kind = CONVERTERS.get(args.fmt).kind
    print(f"{args.input} -> {args.output}: {stats.summary()} ({'Ranked' if kind == 'ranked' else 'Conversation'})",
          file=sys.stderr)
    return 0
