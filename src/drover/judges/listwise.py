"""Tuna's contextual (listwise) ranking judge (Li et al. 2023, microsoft/LMOps `tuna/src/gpt-eval.py`).

Protocol: microsoft/LMOps `tuna/src/gpt-eval.py` (the prompt and its `rank:` reading).
Deliberate difference: the parser below reads the bracketed list and rejects malformed
rankings instead of reading every integer after "rank:".

The judge sees an instruction and N responses (numbered 0..N-1), decides whether the
instruction is open- or close-ended, writes its own reference as Response N, drops
duplicate responses, scores every response 0-15 (three 0-5 criteria) and ends with
`rank: [i, j, ...]`, best first.

The reference code reads every integer after the first "rank:", stray ones included
(`rank: [2, 0, 1, 3, 4] (Response 4 is the reference)` becomes [2, 0, 1, 3, 4, 4]).
`parse` reads the *bracketed list* of the *last* "rank:" line that holds one, accepts
"Response k" items, and rejects out-of-range or repeated indices instead of guessing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from drover.judges.verdicts import ParseFailure
from drover.prompts import load_prompt

LETTERS = "ijklmnopqrstuvwxyzabcdefgh"
SCORE_MAX = 15.0


@dataclass(frozen=True)
class Ranking:
    """A listwise verdict: indices best first (N = the judge's own reference), per-index scores."""

    order: tuple[int, ...]
    n_responses: int
    scores: dict[int, float]
    reference: str | None = None

    @property
    def ranked_responses(self) -> tuple[int, ...]:
        """The order without the judge's reference (index `n_responses`)."""
        return tuple(i for i in self.order if i != self.n_responses)

    @property
    def dropped(self) -> tuple[int, ...]:
        """Responses the judge left out of the ranking (duplicates, by the prompt's rules)."""
        return tuple(i for i in range(self.n_responses) if i not in self.order)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "ranking", "order": list(self.order), "n_responses": self.n_responses,
                "scores": {str(k): v for k, v in self.scores.items()}, "reference": self.reference}


def _rank_example(n: int) -> str:
    return ", ".join(LETTERS[:n])


def build_prompt(instruction: str, responses: list[str]) -> list[dict[str, str]]:
    """Chat messages asking the judge to rank `responses` to `instruction`.

    `instruction` is shown as given; Tuna showed the Alpaca-formatted prompt
    (`drover.templates.render_alpaca`).
    """
    n = len(responses)
    if n < 1:
        raise ValueError("build_prompt needs at least one response")
    block = load_prompt("judges/tuna_contextual_response.txt")
    shown = "\n".join(block.format(k=k, response=r) for k, r in enumerate(responses))
    shorter = [f"'rank: [{_rank_example(m)}]'" for m in range(n, 0, -1)]
    rank_shorter = shorter[0] if len(shorter) == 1 else ", ".join(shorter[:-1]) + " or even " + shorter[-1]
    user = load_prompt("judges/tuna_contextual.txt").format(
        instruction=instruction, responses=shown, rated="/".join(map(str, range(n))), ref=n,
        all="/".join(map(str, range(n + 1))), rank_full=_rank_example(n + 1), rank_shorter=rank_shorter)
    return [{"role": "system", "content": load_prompt("judges/tuna_contextual_system.txt")},
            {"role": "user", "content": user}]


_RANK = re.compile(r"\brank(?:ing)?\b[\s*_`]*(?:\([^)]*\))?[\s*_`]*[:=]", re.IGNORECASE)
_ITEM = re.compile(r"^(?:###\s*)?(?:response|resp\.?|r)?\s*#?\s*(\d+)$", re.IGNORECASE)
_SCORE_LINE = re.compile(r"^[\s*#_`-]*response\s*(\d+)[\s*_`]*[:=]\s*(.*)$", re.IGNORECASE)


def _read_list(after: str) -> tuple[list[int] | None, str]:
    """The integers of the first [...] list in `after` (one line, or across lines)."""
    match = re.match(r"[\s*_`]*\[([^\]]*)\]", after, re.DOTALL)
    if match is None:
        # No brackets: the rest of the line, e.g. "rank: 2 > 0 > 1" or "rank: 2, 0, 1".
        line = after.split("\n", 1)[0].strip(" *_`.")
        if not line:
            return None, "empty"
        body = line
    else:
        body = match.group(1)
    items = [t.strip(" *_`'\"") for t in re.split(r"[,>;]|\s{2,}|\n", body) if t.strip(" *_`'\"")]
    if len(items) == 1 and " " in items[0]:
        items = items[0].split()
    if not items:
        return None, "empty"
    out = []
    for item in items:
        m = _ITEM.match(item.rstrip("."))
        if m is None:
            return None, f"unreadable item {item!r}"
        out.append(int(m.group(1)))
    return out, ""


def _scores(text: str) -> dict[int, float]:
    """'Response k: [13]' lines; the total after '=' when the judge shows its sum."""
    out: dict[int, float] = {}
    for line in text.splitlines():
        m = _SCORE_LINE.match(line.strip())
        if not m:
            continue
        rest = m.group(2)
        if "=" in rest:
            rest = rest.rsplit("=", 1)[1]
        rest = re.sub(r"/\s*15\b|out of 15", " ", rest)
        nums = re.findall(r"\d+(?:\.\d+)?", rest)
        if nums and 0.0 <= float(nums[0]) <= SCORE_MAX:
            out[int(m.group(1))] = float(nums[0])
    return out


def _reference(text: str, n: int) -> str | None:
    """The judge's own answer written as '###Response N:' (up to the next section)."""
    m = re.search(rf"#+\s*Response\s*{n}\s*:?[ \t]*\n?(.*)", text, re.IGNORECASE | re.DOTALL)
    if m is None:
        return None
    body = m.group(1)
    stop = re.search(r"\n\s*(?:#{1,}|(?:\*\*)?(?:third|fourth|fifth|last|step|response\s*\d+\s*:|rank(?:ing)?\s*:))",
                     body, re.IGNORECASE)
    body = body[: stop.start()] if stop else body
    return body.strip() or None


def parse(text: str, n_responses: int) -> Ranking | ParseFailure:
    """Read the final `rank: [...]` of a Tuna contextual-ranking reply.

    Indices run 0..n_responses (n_responses is the judge's reference). The ranking may be
    shorter than n_responses + 1 (duplicates dropped) but not empty, out of range, or
    repeat an index.

    >>> parse("Response 0: 9\\nResponse 1: 12\\nrank: [1, 4, 0]", 4).order
    (1, 4, 0)
    >>> parse("The ranking should be 'rank: [i, j, k]'.\\n...\\n**Rank:** [Response 2, Response 0, Response 1]", 3).order
    (2, 0, 1)
    >>> parse("rank: [2, 0, 1, 3, 4] (Response 4 is the reference)", 4).order
    (2, 0, 1, 3, 4)
    >>> parse("rank: [2, 7, 1]", 4).reason
    'index 7 out of range 0-4'
    >>> parse("rank: [2, 1, 2]", 4).reason
    'index 2 ranked twice'
    >>> parse("I think response 2 is the best.", 4).reason
    'no rank: [...] list found'
    """
    if not text or not text.strip():
        return ParseFailure(text or "", "empty output")
    found: list[int] | None = None
    problem = "no rank: [...] list found"
    for m in reversed(list(_RANK.finditer(text))):
        items, why = _read_list(text[m.end():])
        if items is not None:
            found = items
            break
        if why != "empty" and re.search(r"\d", text[m.end():].split("\n", 1)[0]):
            problem = f"rank list: {why}"
    if found is None:
        return ParseFailure(text, problem)
    seen: set[int] = set()
    for index in found:
        if not 0 <= index <= n_responses:
            return ParseFailure(text, f"index {index} out of range 0-{n_responses}")
        if index in seen:
            return ParseFailure(text, f"index {index} ranked twice")
        seen.add(index)
    return Ranking(tuple(found), n_responses, _scores(text), _reference(text, n_responses))
