"""Token counters for length budgets (ShareGPT splitting).

The default is a tokenizer-free estimate so conversion needs no model; pass a tokenizer
path for exact counts under the model you will train.
"""

from __future__ import annotations

import re

from drover.formats.base import TokenCounter

# Word runs, CJK characters (one token each: Chinese has no spaces) and single symbols.
_PIECES = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]+|[^\w\s]")


def heuristic_count(text: str) -> int:
    """Roughly what a ~32k-vocabulary BPE produces: one token per short word, one more per
    6 further characters of a long word, one per CJK character or symbol.

    >>> heuristic_count("Hello, world!")
    4
    >>> heuristic_count("internationalization")
    4
    >>> heuristic_count("你好")
    2
    """
    total = 0
    for piece in _PIECES.findall(text):
        total += 1 + (len(piece) - 1) // 6 if len(piece) > 1 else 1
    return total


def tokenizer_counter(path: str) -> TokenCounter:
    """Exact counts with a local tokenizer (no special tokens added)."""
    from drover.models import load_tokenizer

    tokenizer = load_tokenizer(path)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count
