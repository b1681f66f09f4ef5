"""Show how a record is tokenized and which tokens are trained (assistant content + EOS).

    drover inspect-tokens data/sft.jsonl --model runs/tiny
    drover inspect-tokens data/sft.jsonl --model meta-llama/Llama-2-7b-hf --chat-template tulu --index 3

Trained tokens are shown in green on a terminal, and between [[ and ]] otherwise (or with
--plain). Use it to check a chat template before a long training run: everything outside
the highlighted spans is context the model is not trained to produce.
"""

from __future__ import annotations

import argparse
import sys

GREEN, RESET = "\033[32;1m", "\033[0m"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="Conversation JSONL file")
    parser.add_argument("--model", required=True, help="model directory or hub id (its tokenizer is used)")
    parser.add_argument("--chat-template", default="tulu",
                        help="template for a tokenizer without its own: tulu, chatml, or model (default tulu)")
    parser.add_argument("--index", type=int, default=0, help="which record (0-based, default 0)")
    parser.add_argument("--max-length", type=int, default=None, help="truncate to this many tokens, as training would")
    parser.add_argument("--plain", action="store_true", help="mark trained spans with [[...]] even on a terminal")
    parser.add_argument("--allow-download", action="store_true", help="let transformers fetch a hub tokenizer")


def highlight(pieces: list[tuple[str, bool]], colour: bool) -> str:
    """Join (text, trained) pieces, marking each run of trained text."""
    out, inside = [], False
    for text, trained in pieces:
        if trained != inside:
            out.append((GREEN if trained else RESET) if colour else ("[[" if trained else "]]"))
            inside = trained
        out.append(text)
    if inside:
        out.append(RESET if colour else "]]")
    return "".join(out)


def run(args: argparse.Namespace) -> int:
    from drover.errors import InputError
    from drover.records import read_conversations

    record = None
    for i, conv in enumerate(read_conversations(args.file)):  # validates every line it reads
        if i == args.index:
            record = conv
            break
    if record is None:
        raise InputError(args.file, None, "--index", f"there is no record {args.index} (file has {i + 1})")

    from drover.models import load_tokenizer
    from drover.tokenization import IGNORE_INDEX, encode_conversation

    tokenizer = load_tokenizer(args.model, chat_template=args.chat_template, allow_download=args.allow_download)
    example = encode_conversation(tokenizer, record.messages, args.max_length, record.id)
    # Decode runs, not single tokens: a byte-level token can hold half a UTF-8 character.
    pieces: list[tuple[str, bool]] = []
    run_ids: list[int] = []
    for j, (token, label) in enumerate(zip(example.input_ids, example.labels)):
        run_ids.append(token)
        trained = label != IGNORE_INDEX
        if j + 1 == len(example) or (example.labels[j + 1] != IGNORE_INDEX) != trained:
            pieces.append((tokenizer.decode(run_ids), trained))
            run_ids = []
    colour = sys.stdout.isatty() and not args.plain
    print(highlight(pieces, colour))
    print(f"\n-- record {record.id!r}: {len(example)} tokens, {example.num_trained} trained"
          f"{', truncated' if example.truncated else ''}")
    return 0
