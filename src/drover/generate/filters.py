"""The instruction filters of Self-Instruct and Alpaca's generation code, as reasons.

A filter returns why an instruction is dropped (a short, countable reason) or None.
The near-duplicate filter (ROUGE-L > 0.7 against the pool) lives in
`drover.metrics.rouge.NearDuplicateIndex`.
"""

from __future__ import annotations

import re
import string
from functools import lru_cache

# bootstrap_instructions.py (Self-Instruct); Alpaca's generate_instruction.py adds five.
BLACKLIST_SELF_INSTRUCT = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files",
                           "map", "maps", "draw", "plot", "go to")
BLACKLIST_ALPACA = BLACKLIST_SELF_INSTRUCT + ("video", "audio", "music", "flowchart", "diagram")


@lru_cache(maxsize=None)
def _word(word: str) -> re.Pattern[str]:
    return re.compile(r"\b({0})\b".format(re.escape(word)), flags=re.IGNORECASE)


def instruction_problem(inst: str, blacklist: tuple[str, ...] = BLACKLIST_ALPACA,
                        min_words: int = 3, max_words: int = 150) -> str | None:
    """Why `inst` is dropped, in the original code's order, or None if it passes.

    >>> instruction_problem("Give three tips for staying healthy.") is None
    True
    >>> instruction_problem("Draw a cat.")
    'too short (<= 3 words)'
    >>> instruction_problem("Describe the picture on the wall.")
    "blacklisted word 'picture'"
    >>> instruction_problem("Write a program that sorts numbers.")
    "starts with 'Write a program'"
    >>> instruction_problem("- List four colours please.")
    'starts with punctuation'
    """
    if not inst:
        return "empty instruction"
    words = len(inst.split())
    if words <= min_words:
        return f"too short (<= {min_words} words)"
    if words > max_words:
        return f"too long (> {max_words} words)"
    for word in blacklist:
        if _word(word).search(inst):
            return f"blacklisted word {word!r}"
    if inst.startswith("Write a program"):
        return "starts with 'Write a program'"
    if inst[0] in string.punctuation:
        return "starts with punctuation"
    if not inst[0].isascii():
        return "starts with a non-ASCII character"
    return None
