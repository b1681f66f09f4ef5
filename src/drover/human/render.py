"""Split a prompt or response into prose and code for display.

Fenced blocks (```lang ... ```) become code segments, shown in a monospace <pre>; the
rest is prose shown with its line breaks kept. Nothing is interpreted as HTML or
Markdown: the template escapes every segment.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^```[^\n`]*\n(.*?)(?:^```[ \t]*$|\Z)", re.S | re.M)


def segments(text: str) -> list[tuple[str, str]]:
    """[("prose" | "code", text), ...] in order.

    >>> segments("Use:\\n```python\\nprint(1)\\n```\\nDone.")
    [('prose', 'Use:'), ('code', 'print(1)\\n'), ('prose', 'Done.')]
    >>> segments("no code <b>")
    [('prose', 'no code <b>')]
    """
    out: list[tuple[str, str]] = []
    pos = 0
    for match in _FENCE.finditer(text):
        prose = _trim(text[pos:match.start()])
        if prose:
            out.append(("prose", prose))
        out.append(("code", match.group(1)))
        pos = match.end()
    rest = _trim(text[pos:]) if out else text[pos:]
    if rest:
        out.append(("prose", rest))
    return out or [("prose", "")]


def _trim(prose: str) -> str:
    """Drop the one line break that only separates prose from a code block (pre-wrap would show it)."""
    prose = prose[:-1] if prose.endswith("\n") else prose
    return prose[1:] if prose.startswith("\n") else prose
