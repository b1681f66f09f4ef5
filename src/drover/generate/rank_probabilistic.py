"""`drover generate rank --method probabilistic` (Tuna_p, Li et al. 2023).

Protocol: Tuna (Li et al. 2023) §2.1, probabilistic ranking; microsoft/LMOps `tuna/`
(no released scoring script for this step): N = 4 samples at temperature 1, β = 1.3.

For each instruction, N = 4 responses are sampled from the teacher at temperature 1 with
their token log-probs, and ranked by the length-normalised log-likelihood
s = log p(r | i) / |r|^β (β = 1.3): a high-probability response under a strong teacher is
taken as a better one. Alternatively, `responses` (a Ranked file, or Conversation files
matched by id) are scored by a local scoring model (`scorer: hf:PATH` or an endpoint that
returns prompt log-probs) through `llm.score`. The original answer becomes `reference`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from drover.errors import ConfigError
from drover.generate.answers import teacher_messages
from drover.generate.batching import run_grouped
from drover.generate.inputs import Prompt, read_prompts
from drover.generate.stage import Summary, cache_path, check_ranges, close_all, open_llm, require, sidecar
from drover.records import JsonlAppender, Ranked, Response


@dataclass
class RankProbabilisticConfig:
    input: str = ""
    output: str = ""
    teacher: str = ""  # sample N responses with log-probs from this LLM
    teacher_options: dict[str, Any] = field(default_factory=dict)
    scorer: str = ""  # or score given responses with this LLM (llm.score)
    scorer_options: dict[str, Any] = field(default_factory=dict)
    responses: list[str] = field(default_factory=list)  # files of given responses (Ranked, or Conversations by id)
    n: int = 4
    beta: float = 1.3
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 512
    prompt: Literal["alpaca", "chat"] = "alpaca"
    min_responses: int = 2
    run_dir: str = ""
    limit: int = 0

    def validate(self) -> None:
        check_ranges(self)
        require(self.input, "input", "input")
        require(self.output, "output", "output")
        if bool(self.teacher) == bool(self.scorer):
            raise ConfigError("rank probabilistic: give either teacher=SPEC (sample N responses with log-probs) "
                              "or scorer=SPEC with responses=[FILE,...] (score given responses)")
        if self.scorer and not self.responses:
            raise ConfigError("rank probabilistic: scorer needs responses=[FILE,...] to score")
        if self.n < 2:
            raise ConfigError(f"n: must be >= 2, got {self.n}")


def normalized_score(total_logprob: float, length: int, beta: float) -> float:
    """Tuna's s = log p(r|i) / |r|^β (|r| in tokens).

    >>> round(normalized_score(-10.0, 8, 1.0), 3)
    -1.25
    """
    return total_logprob / (max(1, length) ** beta)


def _given(config: RankProbabilisticConfig, wanted: set[str]) -> dict[str, list[tuple[str, str]]]:
    """{prompt id: [(text, source)]} from the responses files."""
    from drover.records import iter_json_lines

    out: dict[str, list[tuple[str, str]]] = {}
    for path in config.responses:
        for number, obj in iter_json_lines(path):
            if isinstance(obj, dict) and "responses" in obj:
                ranked = Ranked.from_dict(obj, (path, number))
                if ranked.id in wanted:
                    out.setdefault(ranked.id, []).extend((r.content, r.source or path) for r in ranked.responses)
            else:
                for p in read_prompts_from_obj(obj, path, number):
                    if p.id in wanted and p.reference:
                        out.setdefault(p.id, []).append((p.reference, p.source or path))
    return out


def read_prompts_from_obj(obj: Any, path: str, number: int) -> list[Prompt]:
    from drover.generate.inputs import _from_record

    return [_from_record(obj, path, number)] if isinstance(obj, dict) and "messages" in obj else []


def run_rank_probabilistic(config: RankProbabilisticConfig) -> dict[str, Any]:
    summary = Summary("generate rank --method probabilistic", config.output)
    cache = cache_path(config.output, config.run_dir)
    llm = (open_llm(config.teacher, cache, config.teacher_options) if config.teacher
           else open_llm(config.scorer, cache, config.scorer_options, role="scorer"))
    try:
        with JsonlAppender(config.output) as out, JsonlAppender(sidecar(config.output, "failures.jsonl"), lazy=True) as bad:
            done = out.done_ids | bad.done_ids
            summary.add("already done", len(done))
            prompts = [p for n, p in enumerate(read_prompts(config.input))
                       if (not config.limit or n < config.limit) and p.id not in done]
            scored = _sampled(config, llm, prompts) if config.teacher else _scored(config, llm, prompts)
            for prompt, candidates, problems in scored:
                for problem in problems:
                    summary.add(problem)
                seen, responses = set(), []
                for text, total, length, source in candidates:
                    if text in seen:
                        summary.add("duplicate samples dropped")
                        continue
                    seen.add(text)
                    responses.append((normalized_score(total, length, config.beta), text, source, total, length))
                if len(responses) < config.min_responses and any("LLM error" in p for p in problems):
                    summary.add("records failed (LLM error; re-run to retry)")  # transient: not recorded
                    continue
                if len(responses) < config.min_responses:
                    bad.write({"id": prompt.id, "reason": f"{len(responses)} usable responses < "
                               f"min_responses={config.min_responses}", "problems": problems})
                    summary.add("records rejected: too few usable responses (recorded)")
                    continue
                responses.sort(key=lambda r: -r[0])
                meta = {**prompt.meta, "method": "probabilistic", "beta": config.beta, "model": llm.config.model,
                        "logprobs": [{"total": r[3], "tokens": r[4]} for r in responses]}
                out.write(Ranked(prompt.id, list(prompt.messages),
                                 [Response(r[1], r[0], r[2]) for r in responses], prompt.reference, meta))
                summary.add("ranked records")
    finally:
        close_all(llm)
    return summary.finish({"teacher" if config.teacher else "scorer": llm})


def _sampled(config: RankProbabilisticConfig, llm: Any, prompts: list[Prompt]):
    from drover.completions import Request

    groups = []
    for p in prompts:
        messages = teacher_messages(p, config.prompt)
        groups.append((p, [Request.chat(messages, key=p.id, sample_index=k, temperature=config.temperature,
                                        top_p=config.top_p, max_tokens=config.max_tokens, logprobs=True)
                           for k in range(config.n)]))
    for p, completions in run_grouped(llm, groups, desc="samples", total=len(prompts) * config.n):
        candidates, problems = [], []
        for k, c in enumerate(completions):
            if c.error:
                problems.append("samples lost (LLM error)")
                continue
            choice = c.choices[0]
            text = choice.text.strip()
            if not text:
                problems.append("empty samples")
                continue
            if not choice.logprobs:
                problems.append("samples without log-probs (the endpoint must support logprobs)")
                continue
            if choice.finish_reason == "length":
                problems.append("truncated samples (kept)")
            total = sum(t.logprob for t in choice.logprobs)
            candidates.append((text, total, len(choice.logprobs), f"{llm.config.model}#{k}"))
        yield p, candidates, problems


def _scored(config: RankProbabilisticConfig, llm: Any, prompts: list[Prompt]):
    from drover.completions import ScoreRequest
    from drover.templates import render_alpaca

    given = _given(config, {p.id for p in prompts})
    todo = []
    for p in prompts:
        context = render_alpaca(p.instruction, p.input) if p.instruction is not None else p.user_text
        todo.append((p, [(text, source, ScoreRequest(context, text, key=p.id)) for text, source in given.get(p.id, [])]))
    flat = [req for _, items in todo for _, _, req in items]
    scores = iter(llm.score(flat, desc="scoring", total=len(flat)))
    for p, items in todo:
        candidates, problems = [], []
        if not items:
            problems.append("prompts without given responses")
        for text, source, _ in items:
            score = next(scores)
            if score.error:
                problems.append("scores lost (LLM error)")
                continue
            candidates.append((text.strip(), score.total, len(score.token_logprobs), source))
        yield p, candidates, problems
