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
    [('prose', 'Use:\\n'), ('code', 'print(1)\\n'), ('prose', '\\nDone.')]
    >>> segments("no code <b>")
    [('prose', 'no code <b>')]
    """
    out: list[tuple[str, str]] = []
    pos = 0
    for match in _FENCE.finditer(text):
        if match.start() > pos:
            out.append(("prose", text[pos:match.start()]))
        out.append(("code", match.group(1)))
        pos = match.end()
    if pos < len(text):
        out.append(("prose", text[pos:]))
    return out or [("prose", "")]
