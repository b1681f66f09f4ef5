"""Verifiable rewards: answers checked, code tested, formats matched — no model involved.

`gsm-match` reuses the GSM evaluation's own extraction and comparison
(`drover.metrics.extract.GSM_MATCHERS`: the response's last number vs the number after '####'
in the gold answer, exact-matched as open-instruct does by default, or by value with
`match=value`, the benchmark's setting of the same name), so training and evaluation agree on
what a correct answer is. `unit-tests` runs the response's code
against the record's tests in the Codex-Eval sandbox: model-written code is untrusted and
never runs outside it (`unsafe_no_isolation` is the sandbox's explicit opt-in).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from drover.errors import ConfigError
from drover.records import Record
from drover.rewards.kind import RewardContext, RewardFn, RewardInput, RewardKind, reference_answer

_CODE_BLOCK = re.compile(r"```(?:[a-zA-Z0-9_+-]*)\n(.*?)```", re.DOTALL)


@dataclass
class GsmMatchParams:
    correct: float = 1.0
    wrong: float = 0.0
    match: str = "exact"            # the GSM benchmark's `match` setting this reward agrees with: exact
                                    # (open-instruct, the benchmark's default) | value (signed, by value)

    def validate(self) -> None:
        from drover.errors import did_you_mean
        from drover.metrics.extract import GSM_MATCHERS

        if self.match not in GSM_MATCHERS:
            raise ConfigError(f"gsm-match reward: params.match {self.match!r} is unknown"
                              f"{did_you_mean(self.match, GSM_MATCHERS)}; choose one of: {', '.join(GSM_MATCHERS)}")


_BARE_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)")
NO_GOLD_NUMBER = "the gold answer is neither '... #### N' nor a bare number"


def gsm_gold(answer: str) -> str | None:
    """The gold number of a GSM-style answer: after '####' as the benchmark reads it
    (`metrics.extract.gsm_reference`), or the answer itself when it is a bare number
    (`meta.answer: 18`); None for anything else (a worked answer without '####', nothing or
    words after it: an empty gold would make an empty response "correct").

    >>> gsm_gold("so 18.\\n#### 1,024"), gsm_gold(" 18 "), gsm_gold("so she has 18"), gsm_gold("#### ")
    ('1024', '18', None, None)
    """
    from drover.metrics.extract import gsm_reference

    # the same stripping and comma pass as the benchmark's, after a '####' or of a bare answer
    gold = gsm_reference(answer if "####" in answer else "####" + answer)
    return gold if _BARE_NUMBER.fullmatch(gold) else None


def _gsm_match(params: GsmMatchParams, ctx: RewardContext) -> RewardFn:
    from drover.metrics.extract import GSM_MATCHERS

    params.validate()
    extract, correct_for = GSM_MATCHERS[params.match]

    def score(items: list[RewardInput]) -> list[float]:
        out = []
        for item in items:
            gold = gsm_gold(reference_answer(item.record))
            if gold is None:
                raise ConfigError(f"gsm-match reward: record {item.record.id!r}: {NO_GOLD_NUMBER}")
            out.append(params.correct if correct_for(extract(item.response), gold) else params.wrong)
        return out

    return score


def _needs_gold_number(_params: object, record: Record) -> str | None:
    answer = reference_answer(record)
    if not answer:
        return needs_reference(_params, record)
    return None if gsm_gold(answer) is not None else f"{NO_GOLD_NUMBER}: {answer[-40:]!r}"


@dataclass
class UnitTestsParams:
    tests_field: str = "tests"      # record.meta key holding the test code (asserts, or check(candidate) + call)
    prefix_field: str = ""          # record.meta key of code placed before the response (e.g. a HumanEval prompt)
    timeout_s: float = 3.0
    memory_mb: int = 1024
    unsafe_no_isolation: bool = False  # DANGEROUS: only where namespaces are unavailable, by explicit choice


def extract_code(text: str) -> str:
    """The first fenced code block of a response, else the response itself.

    >>> extract_code("Here:\\n```python\\ndef f():\\n    return 1\\n```\\nDone.")
    'def f():\\n    return 1\\n'
    >>> extract_code("x = 1")
    'x = 1'
    """
    match = _CODE_BLOCK.search(text)
    return match.group(1) if match else text


def _unit_tests(params: UnitTestsParams, ctx: RewardContext) -> RewardFn:
    from drover.evaluate.sandbox import Limits, run_many

    limits = Limits(timeout_s=params.timeout_s, memory_mb=params.memory_mb,
                    total_memory_mb=max(params.memory_mb, 1024), unsafe_no_isolation=params.unsafe_no_isolation)

    def score(items: list[RewardInput]) -> list[float]:
        jobs = []
        for item in items:
            tests = item.record.meta.get(params.tests_field)
            if not isinstance(tests, str) or not tests.strip():
                raise ConfigError(f"unit-tests reward: record {item.record.id!r} has no meta.{params.tests_field} "
                                  f"(the test code to run)")
            prefix = str(item.record.meta.get(params.prefix_field, "")) if params.prefix_field else ""
            jobs.append((prefix + extract_code(item.response), tests))
        return [1.0 if result.passed else 0.0 for result in run_many(jobs, limits)]

    return score


@dataclass
class RegexParams:
    pattern: str = ""
    mode: str = "search"            # search: 1 if found; fullmatch: 1 if the whole (stripped) response matches;
                                    # fraction: share of the response's characters covered by matches

    def validate(self) -> None:
        if not self.pattern:
            raise ConfigError("regex reward: params.pattern is required")
        if self.mode not in ("search", "fullmatch", "fraction"):
            raise ConfigError(f"regex reward: params.mode must be search, fullmatch or fraction, got {self.mode!r}")
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ConfigError(f"regex reward: params.pattern {self.pattern!r} is not a regular expression: {exc}") from None


def _regex(params: RegexParams, ctx: RewardContext) -> RewardFn:
    params.validate()
    pattern = re.compile(params.pattern)

    def one(text: str) -> float:
        if params.mode == "search":
            return 1.0 if pattern.search(text) else 0.0
        if params.mode == "fullmatch":
            return 1.0 if pattern.fullmatch(text.strip()) else 0.0
        covered = sum(m.end() - m.start() for m in pattern.finditer(text))
        return covered / len(text) if text else 0.0

    return lambda items: [one(item.response) for item in items]


@dataclass
class LengthParams:
    target: int = -1                # characters (required: a forgotten target rewarded empty responses)
    tolerance: int = 0              # reward 1 within target ± tolerance ...
    falloff: int = 0                # ... then falling linearly to 0 over `falloff` more characters (0: a step)

    def validate(self) -> None:
        if self.target == -1:
            raise ConfigError("length reward: params.target is required (the response length in characters)")
        if self.target < 0 or self.tolerance < 0 or self.falloff < 0:
            raise ConfigError("length reward: params.target, tolerance and falloff must be >= 0")


def length_reward(n: int, params: LengthParams) -> float:
    """1 within target ± tolerance, then linear down to 0 over `falloff` more characters.

    >>> length_reward(12, LengthParams(target=10, tolerance=1, falloff=4))
    0.75
    """
    off = abs(n - params.target) - params.tolerance
    if off <= 0:
        return 1.0
    return max(0.0, 1.0 - off / params.falloff) if params.falloff else 0.0


def _length(params: LengthParams, ctx: RewardContext) -> RewardFn:
    params.validate()
    return lambda items: [length_reward(len(item.response), params) for item in items]


def needs_reference(_params: object, record: Record) -> str | None:
    return None if reference_answer(record) else "no gold answer (a last assistant turn, `reference` or meta.answer)"


def _needs_tests(params: UnitTestsParams, record: Record) -> str | None:
    tests = record.meta.get(params.tests_field)
    return None if isinstance(tests, str) and tests.strip() else f"meta.{params.tests_field}: no test code"


GSM_MATCH = RewardKind("gsm-match", _gsm_match, GsmMatchParams, "last number == GSM8K gold answer",
                       check=_needs_gold_number)
UNIT_TESTS = RewardKind("unit-tests", _unit_tests, UnitTestsParams, "code passes the record's tests (sandboxed)",
                        check=_needs_tests)
REGEX = RewardKind("regex", _regex, RegexParams, "format check by regular expression")
LENGTH = RewardKind("length", _length, LengthParams, "format check on the response length")
