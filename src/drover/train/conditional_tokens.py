"""Conditional (control) tokens: learn from good *and* bad responses, generate good ones.

Instead of throwing the worse responses away (as expert iteration does), SFT on all of
them with a control token that says which kind each one is, then generate with the
good token (Keskar et al. 2019, CTRL; Lu et al. 2022, Quark; Liu et al. 2023, Chain of
Hindsight; surveyed in "Teach Llamas to Talk", 2023).

Where the token goes (the choice, and why): by default it is the *system* turn
(prepended to an existing system message, or a new system message holding just the
token). The engine trains on assistant tokens only, so the token is context and never
a target, and putting it outside the user's text keeps the user turn byte-identical
to the data, which matters when the same prompts are later judged. `where="user"`
prefixes the first user turn instead, for chat templates that drop system messages.
The tokens are plain text (`<|good|>`, `<|bad|>`): the tokenizer may split them into
several pieces, which works without resizing the embeddings; add them as special
tokens yourself if you prefer one id each.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from drover.records import Conversation, Message, Ranked

GOOD = "<|good|>"
BAD = "<|bad|>"
Where = Literal["system", "user"]


@dataclass
class ConditionalTokens:
    good: str = GOOD
    bad: str = BAD
    where: Where = "system"
    good_top: int = 1          # the first `good_top` responses of a record are good ...
    min_good_score: float | None = None  # ... or, when set, every response scoring at least this
    keep_bad: bool = True      # also emit the other responses, tagged bad


def with_control(messages: list[Message], token: str, where: Where = "system") -> list[Message]:
    """The prompt turns with `token` placed in the system turn or the first user turn.

    >>> [m.content for m in with_control([Message("user", "hi")], "<|good|>")]
    ['<|good|>', 'hi']
    >>> [m.content for m in with_control([Message("system", "Be brief."), Message("user", "hi")], "<|good|>")]
    ['<|good|> Be brief.', 'hi']
    >>> [m.content for m in with_control([Message("user", "hi")], "<|bad|>", where="user")]
    ['<|bad|> hi']
    """
    out = [Message(m.role, m.content) for m in messages]
    if where == "system":
        if out and out[0].role == "system":
            out[0] = Message("system", f"{token} {out[0].content}")
        else:
            out.insert(0, Message("system", token))
        return out
    for i, message in enumerate(out):
        if message.role == "user":
            out[i] = Message("user", f"{token} {message.content}")
            return out
    raise ValueError("no user turn to put the control token in")


def is_good(record: Ranked, index: int, options: ConditionalTokens) -> bool:
    if options.min_good_score is not None:
        score = record.responses[index].score
        return score is not None and score >= options.min_good_score
    return index < options.good_top


def conditioned_conversations(records: Iterable[Ranked], options: ConditionalTokens | None = None
                              ) -> Iterator[Conversation]:
    """SFT data: one Conversation per (record, response), tagged good or bad."""
    options = options or ConditionalTokens()
    for record in records:
        for i, response in enumerate(record.responses):
            good = is_good(record, i, options)
            if not good and not options.keep_bad:
                continue
            token = options.good if good else options.bad
            messages = with_control(record.messages, token, options.where)
            yield Conversation(
                id=f"{record.id}/{i}", messages=messages + [Message("assistant", response.content)],
                source=response.source or "conditional-tokens",
                meta={**record.meta, "control": token, "rank": i, "score": response.score},
            )


def good_prompt(messages: list[Message], options: ConditionalTokens | None = None) -> list[Message]:
    """The prompt to generate from after conditional-token SFT: conditioned on `good`."""
    options = options or ConditionalTokens()
    return with_control(messages, options.good, options.where)
