"""The judge contract: what a judge asks, how it parses, how it aggregates (like `evaluate/task.py`).

A judge is one registry entry (`judges/registry.py`) with a typed `Settings` dataclass
(every default in one place; its fields are the judge's command-line options) and two
methods:

- `load(settings) -> JudgeInputs`: read and validate what is judged (answers, reference
  outputs), no LLM yet. `inputs.content` is the data the verdicts depend on; its digest
  is part of the result key, so changed answers are re-judged.
- `judge(ctx, settings, inputs) -> JudgeOutput`: build `JudgeCall`s (prompt messages from
  the shipped prompt files, a typed parser from `judges/verdicts.py`, and the verdict's
  `Constraint`), send them with `ctx.run(calls)` and aggregate the typed verdicts into
  metrics. Failures (request errors, unparseable outputs) are counted, never guessed.

`ctx.run` applies the stage's judge options (temperature, max tokens), asks the endpoint
to constrain each verdict (`constrain=True`; an endpoint that cannot falls back to free
text, which the parsers read as before) and resumes by content: a stored judgment is
reused only when the judge identity, prompt, decoding, constraint and the messages (which
hold the answers) are all unchanged. `drover.judges.stage.run_judge` writes the result
through `drover.results`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from drover.judges.runner import JudgeCall, Judgment, run_calls


@dataclass
class JudgeInputs:
    """What a judge judges: the evaluated model's label, a default result name, the data."""

    label: str | None  # None: the judge itself is what is evaluated (LLMBar meta-evaluation)
    default_name: str
    content: Any  # JSON-able: the answers/outputs judged (digested into the result key)
    data: Any = None  # the loaded objects the judge uses (not hashed)


@dataclass
class JudgeOutput:
    """A judge's aggregate: metrics (+ standard errors), per-item breakdown, n judged."""

    metrics: dict[str, float]
    breakdown: dict[str, Any]
    n_examples: int
    standard_errors: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # facts to record (reference name, annotator)
    extra_files: dict[str, Any] = field(default_factory=dict)  # folder -> JSON, as eval/<model>/<folder>/<name>.json
    message: str = ""  # one summary line for the terminal


class JudgeContext:
    """What a judge may use: the judge LLM (through `run`), the options, the examples journal."""

    def __init__(self, llm: Any, judge_label: str, identity: Any, examples_path: Path | None,
                 temperature: float | None = None, max_tokens: int | None = None, constrain: bool = True):
        self.llm = llm
        self.judge_label = judge_label  # the served model name, recorded per judgment
        self.identity = identity  # the judge's content identity (endpoint + model), in every call key
        self.examples_path = examples_path
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.constrain = constrain
        self.judgments: list[Judgment] = []  # every judgment of every stage, in order (the examples file)

    def prepare(self, calls: Sequence[JudgeCall]) -> list[JudgeCall]:
        """The stage options applied to each call: temperature replaced, max tokens capped,
        constraints dropped when the user turned them off (`constrain=false`)."""
        for call in calls:
            if self.temperature is not None:
                call.decoding["temperature"] = self.temperature
            if self.max_tokens is not None:
                call.decoding["max_tokens"] = min(call.decoding.get("max_tokens", self.max_tokens), self.max_tokens)
            if not self.constrain:
                call.constraint = None
        return list(calls)

    def run(self, calls: Sequence[JudgeCall], desc: str = "judge") -> list[Judgment]:
        """Judge every call (cached, concurrent, resumable by content); Judgments in call order."""
        out = run_calls(self.llm, self.prepare(calls), self.judge_label, self.examples_path, desc=desc,
                        identity=self.identity)
        self.judgments.extend(out)
        return out


class Judge:
    """Base class of a judge (one registry entry, one result per evaluated model)."""

    name: ClassVar[str] = ""  # the registry name and `drover judge` subcommand
    task: ClassVar[str] = ""  # the result's task label (e.g. "vicuna80")
    title: ClassVar[str] = ""  # one line for --help
    example: ClassVar[str] = ""  # a command line for --help
    primary_metric: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True
    uses_llm: ClassVar[bool] = True  # False: computed from files (bias)
    Settings: ClassVar[type] = object
    # What the judge reads from drover/resources (files or folders, "/"-separated: questions,
    # reference answers, prompts, annotator configs): their content is in the result key.
    shipped: ClassVar[tuple[str, ...]] = ()

    def task_for(self, settings: Any) -> str:
        """The result's task label (a judge with versions or modes names them)."""
        return self.task

    def primary(self, settings: Any, inputs: JudgeInputs) -> str:
        """The headline metric (a judge of K systems names the first one's)."""
        return self.primary_metric

    def load(self, settings: Any) -> JudgeInputs:
        raise NotImplementedError

    def judge(self, ctx: JudgeContext | None, settings: Any, inputs: JudgeInputs) -> JudgeOutput:
        raise NotImplementedError


def option(help: str, *, flag: str | None = None, nargs: str | None = None, choices: Sequence[str] | None = None,
           required: bool = False) -> dict[str, Any]:
    """Field metadata of a judge setting: how it appears on the command line."""
    return {"help": help, "flag": flag, "nargs": nargs, "choices": tuple(choices) if choices else None,
            "required": required}


def setting_options(settings_cls: type) -> list[tuple[dataclasses.Field, dict[str, Any]]]:
    """(field, option metadata) of every command-line setting of a judge."""
    return [(f, dict(f.metadata)) for f in dataclasses.fields(settings_cls) if "help" in f.metadata]
