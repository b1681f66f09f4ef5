"""Data statistics of Conversation/Ranked files: counts, prompt and response lengths,
unique tokens, and the root verb / direct object analysis of "Instruction Tuning with
GPT-4" (Figure 1), with a JSON summary and PNG plots.

    drover stats runs/g/data/answers.jsonl --out runs/g/stats
    drover stats data.jsonl --tokenizer path/to/model     # lengths in that tokenizer's tokens

The verb-noun part needs spaCy and an English pipeline (pip install 'drover[nlp]';
python -m spacy download en_core_web_sm); without them it is skipped, and the summary
says so.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="Conversation or Ranked JSONL files")
    parser.add_argument("--out", default=None, help="output folder (default: <first input>.stats/)")
    parser.add_argument("--tokenizer", default=None, help="count lengths in this Hugging Face tokenizer's tokens")
    parser.add_argument("--spacy-model", default="en_core_web_sm", help="spaCy pipeline for the verb-noun analysis")
    parser.add_argument("--verb-noun-of", choices=["response", "prompt"], default="response")
    parser.add_argument("--top", type=int, default=20, help="top verbs / verb-noun pairs to report")
    parser.add_argument("--no-verb-noun", action="store_true", help="skip the verb-noun analysis")


def run(args: argparse.Namespace) -> int:
    from drover.atomic import write_json
    from drover.stats import compute, load_spacy, plot

    from drover.errors import ConfigError

    out = Path(args.out) if args.out else Path(str(args.inputs[0]) + ".stats")
    if args.top < 1:
        raise ConfigError(f"--top must be at least 1 (got {args.top})")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory (stats writes a folder of JSON and PNG files)")
    tokenize, unit = None, "words"
    if args.tokenizer:
        from drover.models import load_tokenizer

        tok = load_tokenizer(args.tokenizer)
        tokenize, unit = (lambda text: tok(text, add_special_tokens=False)["input_ids"]), f"tokens of {args.tokenizer}"
    nlp, missing = (None, "disabled with --no-verb-noun") if args.no_verb_noun else load_spacy(args.spacy_model)
    summary = compute(args.inputs, tokenize=tokenize, tokens_name=unit, nlp=nlp, nlp_missing=missing,
                      top=args.top, verb_noun_of=args.verb_noun_of)
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
