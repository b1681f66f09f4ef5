"""Run a converter over a file: read rows, convert, validate, check ids, write atomically.

Every produced record is round-tripped through `Conversation.from_dict` /
`Ranked.from_dict`, so what `convert` writes is exactly what the rest of drover reads
back; a record that would not validate is reported against the input line it came from.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from drover.errors import InputError
from drover.formats import CONVERTERS
from drover.formats.base import Converter, ConvertOptions, ConvertStats, Row
from drover.formats.source import input_files, read_rows
from drover.formats.tokens import tokenizer_counter
from drover.records import Record, write_jsonl


def convert_records(fmt: str, in_path: str | Path, options: ConvertOptions | None = None,
                    stats: ConvertStats | None = None) -> Iterator[Record]:
    """Stream validated records converted from `in_path` (a file, or a directory of files
    read in name order) in format `fmt`."""
    options = options or ConvertOptions()
    stats = stats if stats is not None else ConvertStats()
    converter: Converter = CONVERTERS.get(fmt)
    if options.tokenizer and options.count_tokens is None:
        options.count_tokens = tokenizer_counter(options.tokenizer)
    files = input_files(in_path, options.only)
    current: list[Row] = []

    def counted() -> Iterator[Row]:
        for path in files:
            for row in read_rows(path):
                stats.read += 1
                current[:] = [row]
                yield row

    seen: dict[str, tuple[str, int]] = {}
    for record in converter.fn(counted(), options, stats):
        row = current[0]
        try:
            converter.record_type.from_dict(record.to_dict(), (row.path, row.line))
        except InputError as exc:
            raise InputError(row.path, row.line, exc.field, f"converted record is invalid: {exc.problem}") from None
        if record.id in seen:
            first_path, first_line = seen[record.id]
            where = f"line {first_line}" if first_path == row.path else f"{first_path}:{first_line}"
            raise InputError(row.path, row.line, None,
                             f"duplicate id {record.id!r} (first produced from {where}); "
                             "pass a different --source or fix the input ids")
        seen[record.id] = (row.path, row.line)
        stats.written += 1
        yield record


def convert_file(fmt: str, in_path: str | Path, out_path: str | Path,
                 options: ConvertOptions | None = None) -> ConvertStats:
    """Convert `in_path` into a JSONL file at `out_path` (written atomically)."""
    stats = ConvertStats()
    write_jsonl(out_path, convert_records(fmt, in_path, options, stats))
    return stats
