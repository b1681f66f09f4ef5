"""The contract of a reward kind, and a weighted sum of kinds (`RewardSpec`).

A kind is `RewardKind(name, params, build)`: `build(params)` returns a `RewardFn`, a
callable (built with a `RewardContext`) from a list of `RewardInput` to one float per item, in order. Items of a batch
are scored together so model and judge kinds can batch their calls. `RewardSpec.score`
returns the weighted total *and* every term's value, so the caller logs each reward
call's inputs and outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drover.records import Conversation, Message, Ranked, Record


@dataclass
class RewardInput:
    """One sampled response: its prompt turns, the text, and the record the prompt came from
    (verifiable kinds read the gold answer or tests from it)."""

    prompt: list[Message]
    response: str
    record: Record


RewardFn = Callable[[list[RewardInput]], list[float]]


@dataclass(frozen=True)
class RewardContext:
    """What a kind may need from the run: where LLM calls are cached."""

    llm_cache: Path | None = None


@dataclass(frozen=True)
class RewardKind:
    name: str
    build: Callable[[Any, "RewardContext"], RewardFn]
    params: type | None = None      # dataclass of the kind's parameters (`rewards[i].params`)
    doc: str = ""
    check: Callable[[Any, Record], str | None] | None = None   # what a prompt record lacks, before training
    abstains: bool = False          # may return None for a response it has no verdict on (a judge that
                                    # failed): counted, never replaced by a guess
    inputs: Callable[[Any], list[str]] | None = None   # files/directories it reads (a reward model): their
                                                        # content keys a resumable run


@dataclass
class RewardTerm:
    """One weighted term of a reward spec (config: `rewards: [{kind, weight, params}]`)."""

    kind: str = ""
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)
    name: str = ""                  # label in logs; default: the kind


def reference_answer(record: Record) -> str:
    """The gold answer of a prompt record: a Conversation's last assistant turn, a Ranked
    record's `reference`, else `meta["answer"]`; "" when it has none."""
    if isinstance(record, Conversation) and record.messages and record.messages[-1].role == "assistant":
        return record.messages[-1].content
    if isinstance(record, Ranked) and record.reference:
        return record.reference
    return str(record.meta.get("answer", ""))


class RewardSpec:
    """sum_k weight_k * reward_k over the configured terms."""

    def __init__(self, terms: list[RewardTerm], context: RewardContext = RewardContext()):
        from drover.config import from_dict
        from drover.errors import ConfigError
        from drover.rewards import REWARDS

        if not terms:
            raise ConfigError("rewards: at least one reward term is required (e.g. kind: gsm-match)")
        self.terms = terms
        self.names: list[str] = []
        self.fns: list[RewardFn] = []
        self.abstains: list[bool] = []
        self.input_paths: list[str] = []
        self.checks: list[tuple[str, Any, Callable[[Any, Record], str | None]]] = []
        for i, term in enumerate(terms):
            kind: RewardKind = REWARDS.get(term.kind)
            if not math.isfinite(term.weight):
                raise ConfigError(f"rewards[{i}].weight: must be a finite number, got {term.weight}")
            where = f"rewards[{i}].params"
            if kind.params is not None:
                params = from_dict(kind.params, term.params, where=where)
            elif term.params:
                raise ConfigError(f"{where}: reward {term.kind!r} takes no parameters, got {sorted(term.params)}")
            else:
                params = None
            name = term.name or term.kind
            if name in self.names:
                name = f"{name}.{i}"
            self.names.append(name)
            self.fns.append(kind.build(params, context))
            self.abstains.append(kind.abstains)
            self.input_paths += kind.inputs(params) if kind.inputs is not None else []
            if kind.check is not None:
                self.checks.append((name, params, kind.check))

    def problem(self, record: Record) -> str | None:
        """Why a prompt record cannot be scored (a missing gold answer or tests), or None."""
        for name, params, check in self.checks:
            found = check(params, record)
            if found:
                return f"reward {name!r}: {found}"
        return None

    def score(self, items: list[RewardInput]) -> tuple[list[float | None], dict[str, list[float | None]]]:
        """(weighted totals, {term name: values}) for `items`, in order.

        Every value must be a finite number: a NaN or inf (a reward model overflowing, a
        broken reward function) would turn the advantages and then the weights into NaN
        without a word, so it stops the run here, naming the term and the record (the last
        checkpoint is kept; nothing of this step is logged). A kind that `abstains` (a
        judge) gives None where it has no verdict; the response's total is then None too:
        unknown, for the caller to count and leave out, never a guess."""
        values: dict[str, list[float | None]] = {}
        for name, fn, abstains in zip(self.names, self.fns, self.abstains):
            got = list(fn(items))
            if len(got) != len(items):
                raise RuntimeError(f"reward {name!r} returned {len(got)} values for {len(items)} items")
            values[name] = [None if v is None and abstains else finite(v, name, item) for v, item in zip(got, items)]
        totals: list[float | None] = []
        for i in range(len(items)):
            terms = [values[n][i] for n in self.names]
            totals.append(None if any(v is None for v in terms) else
                          sum(t.weight * v for t, v in zip(self.terms, terms)))  # type: ignore[operator]
        return totals, values


def finite(value: Any, name: str, item: RewardInput) -> float:
    """`value` as a float, or a `DataError` naming the term and the record when it is not a finite number."""
    from drover.errors import DataError

    try:
        number = None if isinstance(value, (str, bytes)) else float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number):
        raise DataError(f"reward {name!r}: record {item.record.id!r}: got {value!r} for a response, not a finite "
                        f"number; the run stops here (its last checkpoint is kept)")
    return number
