"""Rating forms: the questions a rater answers about one prompt and two responses.

A form is data (`resources/human/forms/<name>.json`), so adding one needs no code:

- `hhh`: GPT-4-LLM (Peng et al. 2023, Appendix A.1): Helpfulness, Honesty and
  Harmlessness, each a five-way preference (A much better ... B much better).
- `tulu`: Tülu (Wang et al. 2023, §4.3 / Appendix G): each output acceptable yes/no,
  then a five-level preference (A clearly better ... B clearly better).

Two orientations exist. The page shows responses as A and B in an order drawn per
(rater, item) and kept server-side; answers are stored *canonically*, from the study's
system `a`'s side. `to_canonical` / `to_display` convert between the two, so no summary
ever depends on the display order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from drover.errors import ConfigError, did_you_mean

FLAGS = {"invalid": "Invalid instance (broken prompt or outputs)", "too_hard": "Too hard for me to judge"}
ACCEPTABLE_VALUES = {"yes": True, "no": False}


@dataclass(frozen=True)
class Level:
    score: int       # from displayed A's side: +2 much/clearly better ... -2
    label: str


@dataclass(frozen=True)
class Question:
    name: str
    kind: str        # "preference" (five levels) or "acceptable" (yes / no about one side)
    title: str
    help: str
    keys: str        # keyboard shortcuts, one per option in display order
    side: str = ""   # "a" or "b" for an acceptable question (the displayed side)


@dataclass(frozen=True)
class Form:
    name: str
    title: str
    source: str
    instructions: str
    levels: tuple[Level, ...]
    questions: tuple[Question, ...]
    export_question: str

    @property
    def preference_questions(self) -> list[Question]:
        return [q for q in self.questions if q.kind == "preference"]

    @property
    def acceptable_questions(self) -> list[Question]:
        return [q for q in self.questions if q.kind == "acceptable"]

    def question(self, name: str) -> Question:
        for q in self.questions:
            if q.name == name:
                return q
        names = [q.name for q in self.questions]
        raise ConfigError(f"form {self.name!r} has no question {name!r}{did_you_mean(name, names)}; "
                          f"known: {', '.join(names)}")

    def options(self, q: Question) -> list[tuple[str, str, str]]:
        """(form value, label, shortcut key) of each option of `q`, in display order."""
        if q.kind == "acceptable":
            pairs = [("yes", "Yes"), ("no", "No")]
        else:
            pairs = [(str(level.score), level.label) for level in self.levels]
        return [(value, label, q.keys[i] if i < len(q.keys) else "") for i, (value, label) in enumerate(pairs)]

    def _canonical_name(self, q: Question, swapped: bool) -> str:
        """The stored name of an acceptable question: about system a or b, not displayed A or B."""
        if q.kind != "acceptable" or not swapped:
            return q.name
        other = "b" if q.side == "a" else "a"
        return next(o.name for o in self.acceptable_questions if o.side == other)

    def parse(self, form: dict[str, str], swapped: bool, required: bool) -> tuple[dict[str, Any], list[str]]:
        """Submitted display-order fields -> (canonical answers, problems). Unanswered
        questions are problems only when `required` (a flagged item may be left blank)."""
        answers: dict[str, Any] = {}
        problems: list[str] = []
        for q in self.questions:
            raw = form.get(q.name, "")
            if raw == "":
                if required:
                    problems.append(f"please answer: {q.title}")
                continue
            if q.kind == "acceptable":
                if raw not in ACCEPTABLE_VALUES:
                    problems.append(f"{q.title}: answer yes or no")
                    continue
                answers[self._canonical_name(q, swapped)] = ACCEPTABLE_VALUES[raw]
            else:
                scores = {str(level.score): level.score for level in self.levels}
                if raw not in scores:
                    problems.append(f"{q.title}: choose one of the {len(self.levels)} options")
                    continue
                answers[q.name] = -scores[raw] if swapped else scores[raw]
        return answers, problems

    def to_display(self, answers: dict[str, Any], swapped: bool) -> dict[str, str]:
        """Canonical answers -> the form values to pre-select on the page."""
        out: dict[str, str] = {}
        for q in self.questions:
            value = answers.get(self._canonical_name(q, swapped))
            if value is None:
                continue
            if q.kind == "acceptable":
                out[q.name] = "yes" if value else "no"
            else:
                out[q.name] = str(-value if swapped else value)
        return out

    def level_label(self, score: int) -> str:
        """The label of a canonical score, spoken from system a's side."""
        return next(level.label for level in self.levels if level.score == score)


@lru_cache(maxsize=None)
def load_form(name: str) -> Form:
    """The shipped form `name` (a ConfigError with "did you mean" otherwise)."""
    names = form_names()
    if name not in names:
        raise ConfigError(f"unknown form {name!r}{did_you_mean(name, names)}; known: {', '.join(names)}")
    raw = json.loads(_forms_dir().joinpath(f"{name}.json").read_text("utf-8"))
    return Form(
        name=raw["name"], title=raw["title"], source=raw["source"], instructions=raw["instructions"],
        levels=tuple(Level(int(lv["score"]), lv["label"]) for lv in raw["levels"]),
        questions=tuple(Question(q["name"], q["kind"], q["title"], q["help"], q.get("keys", ""), q.get("side", ""))
                        for q in raw["questions"]),
        export_question=raw["export_question"],
    )


def form_names() -> list[str]:
    return sorted(p.name[:-5] for p in _forms_dir().iterdir() if p.name.endswith(".json"))


def _forms_dir() -> Any:
    return resources.files("drover").joinpath("resources", "human", "forms")
