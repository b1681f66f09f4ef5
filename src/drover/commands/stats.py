"""Data statistics of Conversation/Ranked files: counts, prompt and response lengths,
unique tokens, and the root verb / direct object analysis of "Instruction Tuning with
GPT-4" (Figure 1), with a JSON summary and PNG plots.

    drover stats runs/g/data/answers.jsonl --out runs/g/stats
    drover stats data.jsonl --tokenizer path/to/model     # lengths in that tokenizer's tokens

Every setting is a key of `StatsConfig` (`--config FILE.yaml`, `key=value` overrides).

The verb-noun part needs spaCy and an English pipeline (pip install 'drover[nlp]';
python -m spacy download en_core_web_sm); without them it is skipped, and the summary
says so.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass
class StatsConfig:
    inputs: list[str] = field(default_factory=list)  # Conversation or Ranked JSONL files
    out: str = ""                          # output folder (default: <first input>.stats/)
    tokenizer: str = ""                    # count lengths in this tokenizer's tokens (default: words)
    spacy_model: str = "en_core_web_sm"    # spaCy pipeline for the verb-noun analysis
    verb_noun_of: Literal["response", "prompt"] = "response"
    top: int = 20                          # top verbs / verb-noun pairs to report
    verb_noun: bool = True

    def validate(self) -> None:
        from drover.errors import ConfigError

        if not self.inputs:
            raise ConfigError("stats: inputs: name at least one JSONL file")
        if self.top < 1:
            raise ConfigError(f"--top must be at least 1 (got {self.top})")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", help="Conversation or Ranked JSONL files, then any key=value overrides")
    parser.add_argument("--config", help="YAML file of StatsConfig keys")
    parser.add_argument("--out", help="output folder (default: <first input>.stats/)")
    parser.add_argument("--tokenizer", help="count lengths in this Hugging Face tokenizer's tokens")
    parser.add_argument("--spacy-model", help="spaCy pipeline for the verb-noun analysis (default en_core_web_sm)")
    parser.add_argument("--verb-noun-of", choices=["response", "prompt"])
    parser.add_argument("--top", type=int, help="top verbs / verb-noun pairs to report (default 20)")
    parser.add_argument("--no-verb-noun", action="store_true", help="skip the verb-noun analysis")


def run(args: argparse.Namespace) -> int:
    from drover.atomic import write_json
    from drover.config import split_overrides, stage_config
    from drover.errors import ConfigError
    from drover.stats import compute, load_spacy, plot

    files, overrides = split_overrides(args.inputs)
    flags = {"inputs": files or None, "out": args.out, "tokenizer": args.tokenizer, "spacy_model": args.spacy_model,
             "verb_noun_of": args.verb_noun_of, "top": args.top, "verb_noun": False if args.no_verb_noun else None}
    config = stage_config(StatsConfig, args.config, flags, overrides, where="drover stats")
    out = Path(config.out) if config.out else Path(str(config.inputs[0]) + ".stats")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory (stats writes a folder of JSON and PNG files)")
    tokenize, unit = None, "words"
    if config.tokenizer:
        from drover.models import load_tokenizer

        tok = load_tokenizer(config.tokenizer)
        tokenize, unit = (lambda text: tok(text, add_special_tokens=False)["input_ids"]), f"tokens of {config.tokenizer}"
    nlp, missing = (None, "disabled with --no-verb-noun") if not config.verb_noun else load_spacy(config.spacy_model)
    summary = compute(config.inputs, tokenize=tokenize, tokens_name=unit, nlp=nlp, nlp_missing=missing,
                      top=config.top, verb_noun_of=config.verb_noun_of)
    plots = plot(summary, out)
    summary.pop("_lengths")
    summary["plots"] = [str(p) for p in plots]
    write_json(out / "stats.json", summary)
    print(f"{summary['records']} records ({', '.join(f'{k}: {v}' for k, v in summary['kinds'].items())}), "
          f"{summary['responses']} responses")
    for key in ("prompt_length", "response_length"):
        d = summary[key]
        if d.get("count"):
            print(f"  {key:<16} mean {d['mean']:.1f}  median {d['median']:.0f}  p90 {d['p90']:.0f}  max {d['max']} ({unit})")
    for key in ("prompt_vocabulary", "response_vocabulary"):
        v = summary[key]
        print(f"  {key:<20} {v['unique_tokens']} unique of {v['total_tokens']} (type-token ratio {v['type_token_ratio']})")
    vn = summary["verb_noun"]
    if vn["available"]:
        top = ", ".join(f"{v} {n} ({c})" for v, n, c in vn["top_pairs"][:8])
        print(f"  verb-noun pairs: {vn['unique_pairs']} unique; top: {top}")
    else:
        print(f"  verb-noun analysis skipped: {vn['skipped']}")
    print(f"summary: {out / 'stats.json'}; plots: {', '.join(json.dumps(str(p)) for p in plots)}")
    return 0
