"""The 1-10 rating judge of "Instruction Tuning with GPT-4" (FastChat's Vicuna reviewer prompt).

Protocol: lm-sys/FastChat `fastchat/eval/table/prompt.jsonl` (the "general" reviewer prompt)
and `eval_gpt_review.py` parse_score, as "Instruction Tuning with GPT-4" §3.2 used them for its
comparison data. Deliberate differences: the single- and K-answer forms of the prompt are
drover's generalisations, and an unreadable reply is retried once, never scored [-1, -1].

GPT-4 rates the helpfulness, relevance, accuracy and level of details of one or more
answers, scores on the first line, explanation after. With two answers the prompt is
FastChat's exactly; with one it is its single-answer form; with K it asks for K scores.

A reply whose first line does not hold exactly the expected scores in 1-10 is a
`ParseFailure` (never a guessed score); `rate()` retries such replies once with a
stricter instruction and reports what is still unreadable as a failure with the raw text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from drover.judges.verdicts import ParseFailure
from drover.prompts import load_prompt

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
SCORE_RANGE = (1.0, 10.0)


@dataclass(frozen=True)
class Scores:
    """K scores in 1-10, by position of the answers as shown, and the judge's explanation."""

    scores: tuple[float, ...]
    explanation: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"type": "scores", "scores": list(self.scores), "explanation": self.explanation}


def _n_words(n: int) -> str:
    return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)


def _assistants(n: int) -> str:
    """"1 and 2", "1, 2 and 3": how the reviewer prompt names the assistants."""
    ids = [str(i) for i in range(1, n + 1)]
    return ids[0] if n == 1 else ", ".join(ids[:-1]) + " and " + ids[-1]


def build_prompt(question: str, answers: list[str], strict: bool = False) -> list[dict[str, str]]:
    """Chat messages asking the judge to rate `answers` (K >= 1) to `question`.

    `strict=True` appends the stricter first-line instruction used for the one retry.
    """
    if not answers:
        raise ValueError("build_prompt needs at least one answer")
    if len(answers) == 1:
        user = load_prompt("judges/rating_single.txt").format(question=question, answer=answers[0])
    else:
        block = load_prompt("judges/rating_answer.txt")
        shown = "".join(block.format(i=i, answer=a) for i, a in enumerate(answers, start=1))
        user = load_prompt("judges/rating_multi.txt").format(
            question=question, answers=shown, n_words=_n_words(len(answers)),
            assistants=_assistants(len(answers)))
    if strict:
        n = len(answers)
        what = "the score of the assistant" if n == 1 else f"the scores of Assistant {_assistants(n)}, in that order"
        user += load_prompt("judges/rating_strict.txt").format(n_words=_n_words(n), what=what)
    return [{"role": "system", "content": load_prompt("judges/rating_system.txt")},
            {"role": "user", "content": user}]


_MARKUP = re.compile(r"[*#`_>]+")
_LABEL = re.compile(r"^\s*(?:(?:overall|final)\s+)?(?:scores?|ratings?)\s*(?:for\s+assistants?\s*[\d\s,and]*)?[:=\-]\s*",
                     re.IGNORECASE)
_ASSISTANT = re.compile(r"assistant\s*(\d+)\s*(?:'s\s+score)?\s*[:=\-]?\s*", re.IGNORECASE)
_DENOMINATOR = re.compile(r"\s*(?:/\s*10(?:\.0)?|out\s+of\s+10)\b", re.IGNORECASE)
_NUMBER = re.compile(r"^[+-]?\d+(?:\.\d+)?$")


def _clean(line: str) -> str:
    line = _MARKUP.sub(" ", line)
    line = _LABEL.sub("", line.strip())
    line = _DENOMINATOR.sub(" ", line)
    return line


def _numbers(line: str) -> list[str] | None:
    """The tokens of a cleaned score line if every one is a number, else None."""
    line = re.sub(r"[,;()\[\]]", " ", line)
    tokens = [t.rstrip(".") for t in line.split()]
    if tokens and all(_NUMBER.match(t) for t in tokens):
        return tokens
    return None


def _is_header(line: str) -> bool:
    """A short title line before the scores: "Scores:", "**Evaluation**", "## Score"."""
    return (not re.search(r"\d", line) and len(line) <= 40
            and (line.endswith(":") or line.startswith(("#", "**", "__"))))


def parse(text: str, n: int = 1) -> Scores | ParseFailure:
    """Read `n` scores from the first line of a rating reply.

    Tolerated: markdown, a short header line before the scores, a "Score:" label,
    "/10" or "out of 10", commas, brackets, and "Assistant k: s" labels (on one line or
    one per line). Anything else — missing or extra numbers, words mixed with the
    scores, values outside 1-10 — is a ParseFailure.

    >>> parse("8\\nThe answer is relevant.")
    Scores(scores=(8.0,), explanation='The answer is relevant.')
    >>> parse("**Score: 7/10**\\nGood.").scores
    (7.0,)
    >>> parse("8 9\\nBoth ...", n=2).scores
    (8.0, 9.0)
    >>> parse("Assistant 1: 6\\nAssistant 2: 9\\nWhy ...", n=2).scores
    (6.0, 9.0)
    >>> parse("8 9 10\\n...", n=2).reason
    'expected 2 scores on the first line, found 3'
    >>> parse("11\\n...").reason
    'score 11 is outside 1-10'
    >>> parse("The assistant did well, 8 points.").reason
    'the first line holds words besides the scores'
    """
    if not text or not text.strip():
        return ParseFailure(text, "empty output")
    lines = [ln.strip() for ln in text.strip().splitlines()]
    lines = [ln for ln in lines if _MARKUP.sub("", ln).strip()]
    if not lines:
        return ParseFailure(text, "empty output")
    start = 0
    # Skip up to two short header lines without digits ("Scores:", "**Evaluation**").
    while start < min(2, len(lines) - 1) and _is_header(lines[start]):
        start += 1
    first = _clean(lines[start])
    used = 1
    labelled = list(_ASSISTANT.finditer(first))
    if labelled:
        # "Assistant 1: 8  Assistant 2: 7" or one "Assistant k: s" per line.
        values: dict[int, str] = {}
        k = start
        while k < len(lines):
            line = _clean(lines[k])
            parts = _ASSISTANT.split(line)
            if len(parts) < 3 or parts[0].strip():
                break
            for label, rest in zip(parts[1::2], parts[2::2]):
                nums = _numbers(rest)
                if nums is None or len(nums) != 1:
                    return ParseFailure(text, f"could not read the score of Assistant {label}")
                if int(label) in values:
                    return ParseFailure(text, f"Assistant {label} is scored twice")
                values[int(label)] = nums[0]
            k += 1
            if len(values) >= n:
                break
        if sorted(values) != list(range(1, n + 1)):
            return ParseFailure(text, f"expected scores for Assistant {_assistants(n)}, found "
                                      f"{', '.join(map(str, sorted(values))) or 'none'}")
        tokens = [values[i] for i in range(1, n + 1)]
        used = k - start
    else:
        tokens = _numbers(first)
        if tokens is None:
            return ParseFailure(text, "the first line holds words besides the scores"
                                if re.search(r"\d", first) else "no scores on the first line")
        if len(tokens) != n:
            return ParseFailure(text, f"expected {n} score{'s' if n > 1 else ''} on the first line, "
                                      f"found {len(tokens)}")
    scores = []
    for token in tokens:
        value = float(token)
        if not SCORE_RANGE[0] <= value <= SCORE_RANGE[1]:
            return ParseFailure(text, f"score {token} is outside 1-10")
        scores.append(value)
    explanation = "\n".join(lines[start + used:]).strip()
    return Scores(tuple(scores), explanation)


@dataclass
class RatingJob:
    """Rate `answers` to `question`; `key` names the job in results (e.g. a record id)."""

    key: str
    question: str
    answers: list[str]


@dataclass
class RatingResult:
    key: str
    verdict: Scores | ParseFailure
    raw: list[str] = field(default_factory=list)  # every reply read, first attempt first
    retried: bool = False
    error: str | None = None  # the LLM call failed (after the client's own retries)


def rate(llm: Any, jobs: Iterable[RatingJob], temperature: float = 0.2, max_tokens: int = 1024,
         chunk: int = 64, desc: str = "rating") -> Iterator[RatingResult]:
    """Rate every job, in input order: one request each, one stricter retry if unreadable.

    Defaults are the FastChat reviewer's decoding (temperature 0.2, 1024 tokens). Both
    attempts go through the LLM cache, so an interrupted run resumes without paying twice.
    """
    from drover.completions import Request

    def request(job: RatingJob, strict: bool) -> Request:
        return Request.chat(build_prompt(job.question, job.answers, strict=strict), key=job.key,
                            temperature=temperature, max_tokens=max_tokens)

    batch: list[RatingJob] = []
    for job in jobs:
        batch.append(job)
        if len(batch) >= chunk:
            yield from _rate_batch(llm, batch, request, desc)
            batch = []
    if batch:
        yield from _rate_batch(llm, batch, request, desc)


def _rate_batch(llm: Any, batch: list[RatingJob], request: Any, desc: str) -> Iterator[RatingResult]:
    results: list[RatingResult] = []
    for job, completion in zip(batch, llm.run([request(j, False) for j in batch], desc=desc)):
        if completion.error:
            results.append(RatingResult(job.key, ParseFailure("", "LLM error"), [], False, completion.error))
            continue
        results.append(RatingResult(job.key, parse(completion.text, len(job.answers)), [completion.text]))
    retry = [i for i, r in enumerate(results) if isinstance(r.verdict, ParseFailure) and r.error is None]
    if retry:
        again = llm.run([request(batch[i], True) for i in retry], desc=f"{desc} (stricter retry)")
        for i, completion in zip(retry, again):
            result = results[i]
            result.retried = True
            if completion.error:
                result.error = completion.error
                continue
            result.raw.append(completion.text)
            verdict = parse(completion.text, len(batch[i].answers))
            if isinstance(verdict, ParseFailure):
                verdict = ParseFailure(completion.text, verdict.reason)
            result.verdict = verdict
    yield from results


def rating_judge_scorer(llm: Any, failed: float | None = 0.0) -> Any:
    """A best-of-n scorer ((prompt messages, response) items -> rewards) from an LLM judge:
    each response rated 1-10 on its own (the GPT-4-LLM / FastChat reviewer prompt above);
    a failed call or an unreadable rating scores `failed`: 0 for best-of-n and expert
    iteration, None for the online `judge` reward (which counts it and trains on nothing
    it did not judge)."""

    def score(items: list[tuple[list[Any], str]]) -> list[float | None]:
        jobs = [RatingJob(str(i), "\n\n".join(m.content for m in msgs if m.role == "user"), [text])
                for i, (msgs, text) in enumerate(items)]
        return [r.verdict.scores[0] if isinstance(r.verdict, Scores) else failed
                for r in rate(llm, jobs, desc="judge")]

    return score
