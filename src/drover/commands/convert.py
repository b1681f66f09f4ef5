"""Convert a public dataset file (JSON array, JSONL or a single JSON document, optionally
gzipped; detected from the content) into drover's Conversation or Ranked JSONL.

Every setting is a key of `drover.formats.base.ConvertConfig` (`fmt`, `input`, `output`,
...): `--config FILE.yaml` and `key=value` overrides work as on every stage."""

from __future__ import annotations

import argparse
import sys

from drover.formats import FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of ConvertConfig keys")
    parser.add_argument("--from", dest="fmt", metavar="FORMAT", help="input format: " + ", ".join(FORMATS))
    parser.add_argument("input", metavar="IN", nargs="?", help="input file, or a directory of them (e.g. Super-NI tasks/)")
    parser.add_argument("output", metavar="OUT", nargs="?", help="output JSONL file (written atomically)")
    parser.add_argument("--source", help="dataset name used as id prefix and record source (default: per format)")
    parser.add_argument("--max-tokens", type=int,
                        help="sharegpt: split conversations longer than this many tokens "
                             "(0: never; default 2048, as Tülu)")
    parser.add_argument("--tokenizer", metavar="PATH",
                        help="sharegpt: count tokens with this local tokenizer (default: a word/character heuristic)")
    parser.add_argument("--oasst-mode", choices=("all", "top"),
                        help="oasst: every root-to-assistant path, or only the top-ranked reply at each branch")
    parser.add_argument("--shots", type=int, help="superni: positive examples in the prompt (default 0)")
    parser.add_argument("--max-instances", type=int, help="superni: instances per task (Tk-Instruct evaluates 100)")
    parser.add_argument("--reformulations", action="store_true", default=None,
                        help="unnatural: also convert each item's reformulations (full data)")
    parser.add_argument("--only", metavar="NAMES.txt",
                        help="directory IN: convert only the files named here, one name (without extension) "
                             "per line, e.g. Super-NI's splits/default/test_tasks.txt")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="ConvertConfig overrides (win over flags)")
    lines = [f"  {name:<20} {help_}" for name, (_, help_) in FORMATS.items()]
    parser.epilog = "formats:\n" + "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from drover.config import split_overrides, stage_config
    from drover.formats import CONVERTERS
    from drover.formats.base import ConvertConfig
    from drover.formats.driver import convert_file

    paths, overrides = split_overrides([args.input, args.output, *args.overrides])
    names = ("fmt", "source", "max_tokens", "tokenizer", "oasst_mode", "shots", "max_instances", "reformulations",
             "only")
    flags = {k: getattr(args, k) for k in names} | dict(zip(("input", "output"), paths))
    config = stage_config(ConvertConfig, args.config, flags, overrides, where="drover convert")
    if config.fmt not in CONVERTERS:
        CONVERTERS.get(config.fmt)  # raises ConfigError with "did you mean"
    stats = convert_file(config.fmt, config.input, config.output, config.options())
    kind = CONVERTERS.get(config.fmt).kind
    print(f"{config.input} -> {config.output}: {stats.summary()} ({'Ranked' if kind == 'ranked' else 'Conversation'})",
          file=sys.stderr)
    return 0
