"""Incremental detokenization for streamed completions.

Decoding a growing token list and sending what is new is not enough: a token can end in
the middle of a UTF-8 character (the decoded text then ends in U+FFFD until the next
token completes it), and the text may be heading into a stop string, which must never
reach the client (the final text is cut before it). So the text held back is: a trailing
replacement character, and the longest suffix that is a prefix of some stop string.
What is sent is therefore always a prefix of the final text.
"""

from __future__ import annotations

from typing import Any


class TextDelta:
    """One sample's stream: `push(token)` gives the text safe to send now."""

    def __init__(self, tokenizer: Any, stop: tuple[str, ...] = ()):
        self.tokenizer, self.stop = tokenizer, stop
        self.ids: list[int] = []
        self.sent = ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        end = len(text.rstrip("\ufffd"))
        cut = end
        for s in self.stop:
            found = text.find(s)
            if found >= 0:  # a whole stop string: the row ends here, nothing from it on is sent
                cut = min(cut, found)
            # The earliest position from which the rest of the text is a proper prefix of s.
            p = text.find(s[0], max(0, end - len(s) + 1), end)
            while p != -1:
                if s.startswith(text[p:end]):
                    cut = min(cut, p)
                    break
                p = text.find(s[0], p + 1, end)
        return self._send(text[:cut])

    def finish(self, final_text: str) -> str:
        """What remains of the final (stop-truncated) text."""
        return self._send(final_text)

    def _send(self, text: str) -> str:
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return ""
        new, self.sent = text[len(self.sent):], text
        return new
