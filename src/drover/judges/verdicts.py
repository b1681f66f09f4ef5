"""Typed judge verdicts: what a parser may return.

A tie is a value (`Outcome.TIE`), never a magic float, and a judge output that cannot
be read is a `ParseFailure` that keeps the raw text and the reason: a failure is
counted and listed, never guessed into a verdict. Verdicts are positional (what the
judge saw as the first/second answer); `swapped()` maps a verdict from the swapped
order back to the original one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Union


class Outcome(str, Enum):
    """Which of the two answers the judge preferred, by position as shown."""

    FIRST = "first"
    SECOND = "second"
    TIE = "tie"

    def swapped(self) -> "Outcome":
        return {Outcome.FIRST: Outcome.SECOND, Outcome.SECOND: Outcome.FIRST}.get(self, Outcome.TIE)

    def preference(self) -> float:
        """AlpacaEval's encoding: 1 = first wins, 2 = second wins, 1.5 = tie."""
        return {Outcome.FIRST: 1.0, Outcome.SECOND: 2.0, Outcome.TIE: 1.5}[self]


@dataclass(frozen=True)
class ParseFailure:
    """A judge output that could not be read; `raw` is the text as returned."""

    raw: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "parse_failure", "reason": self.reason, "raw": self.raw}


@dataclass(frozen=True)
class Choice:
    """A pairwise choice (MT-bench [[A]]/[[B]]/[[C]], LLMBar Output (a)/(b), AlpacaEval v1 rank)."""

    outcome: Outcome

    def swapped(self) -> "Choice":
        return Choice(self.outcome.swapped())

    def to_dict(self) -> dict[str, Any]:
        return {"type": "choice", "outcome": self.outcome.value}


@dataclass(frozen=True)
class ScorePair:
    """Two scores on one line, for the first and second answer (Vicuna-80 review)."""

    first: float
    second: float

    @property
    def outcome(self) -> Outcome:
        if self.first > self.second:
            return Outcome.FIRST
        if self.second > self.first:
            return Outcome.SECOND
        return Outcome.TIE

    def swapped(self) -> "ScorePair":
        return ScorePair(self.second, self.first)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "score_pair", "first": self.first, "second": self.second}


@dataclass(frozen=True)
class Rating:
    """One absolute score (MT-bench single-answer grading, 1-10)."""

    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"type": "rating", "score": self.score}


@dataclass(frozen=True)
class Preference:
    """A soft pairwise preference in [1, 2]: 1 = first answer, 2 = second, 1.5 = tie.

    AlpacaEval 2's log-prob judge gives `2 - P(first)`; a discrete judge gives 1, 1.5 or 2.
    """

    value: float

    def __post_init__(self) -> None:
        if not 1.0 <= self.value <= 2.0:
            raise ValueError(f"a preference must lie in [1, 2], got {self.value}")

    @property
    def outcome(self) -> Outcome:
        if self.value < 1.5:
            return Outcome.FIRST
        if self.value > 1.5:
            return Outcome.SECOND
        return Outcome.TIE

    def swapped(self) -> "Preference":
        return Preference(3.0 - self.value)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "preference", "value": self.value}


@dataclass(frozen=True)
class YesNo:
    """A binary judgment (TruthfulQA's "is it true?" / "is it informative?")."""

    yes: bool

    def to_dict(self) -> dict[str, Any]:
        return {"type": "yes_no", "yes": self.yes}


@dataclass(frozen=True)
class Text:
    """A free-text intermediate (LLMBar metrics questions, reference output, explanations)."""

    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}


Verdict = Union[Choice, ScorePair, Rating, Preference, YesNo, Text, ParseFailure]


def verdict_from_dict(obj: dict[str, Any]) -> Verdict:
    """Inverse of `to_dict`, for resumed runs that read their examples file back."""
    kind = obj.get("type")
    if kind == "choice":
        return Choice(Outcome(obj["outcome"]))
    if kind == "score_pair":
        return ScorePair(float(obj["first"]), float(obj["second"]))
    if kind == "rating":
        return Rating(float(obj["score"]))
    if kind == "preference":
        return Preference(float(obj["value"]))
    if kind == "yes_no":
        return YesNo(bool(obj["yes"]))
    if kind == "text":
        return Text(obj["text"])
    if kind == "parse_failure":
        return ParseFailure(obj.get("raw", ""), obj.get("reason", ""))
    raise ValueError(f"unknown verdict type {kind!r}")
