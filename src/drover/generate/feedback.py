"""`drover generate feedback`: comparison data, K responses rated 1-10 by a judge.

Protocol: "Instruction Tuning with GPT-4" §3.2 (comparison data) with FastChat's reviewer
prompt (`drover.judges.rating`); the released data is Instruction-Tuning-with-GPT-4/GPT-4-LLM
`data/comparision_data_v1.json` / `v2`, which `drover convert --from gpt4llm-comparison` reads.

"Instruction Tuning with GPT-4" (Sections 2 and 3.2) had GPT-4 rate the responses of
several models to each prompt from 1 to 10 and trained reward models on the resulting
orderings. Responses come from files (any model's outputs, matched to prompts by id:
`responses: [gpt4=a.jsonl, student=b.jsonl]`) and/or are sampled now from LLMs
(`sample: [teacher=http://host/v1#m]`, Alpaca prompt, temperature 1.0; one model named
twice gives two independent samples). The judge uses
`drover.judges.rating` (FastChat's reviewer prompt): `mode: single` rates each response
alone, `mode: joint` shows all K in one prompt and asks for K scores.

Output: `Ranked` records, responses ordered by score (ties keep source order). A rating
that is still unreadable after one stricter retry is never guessed: the response is left
out and the failure (reason and raw judge text) goes to `<output>.failures.jsonl`; a
record with fewer than `min_responses` rated responses is written there only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from drover.errors import ConfigError
from drover.generate.answers import teacher_messages
from drover.generate.inputs import Prompt, read_prompts
from drover.generate.stage import Summary, cache_path, check_ranges, close_all, open_llm, require, sidecar
from drover.identity import digest
from drover.judges.rating import RatingJob, Scores, rate
from drover.records import JsonlAppender, Ranked, Response


@dataclass
class FeedbackConfig:
    input: str = ""  # prompts (default: the prompts of the first responses file)
    output: str = ""
    judge: str = ""  # LLM spec
    judge_options: dict[str, Any] = field(default_factory=dict)
    responses: list[str] = field(default_factory=list)  # NAME=PATH: answers matched to prompts by id
    sample: list[str] = field(default_factory=list)  # NAME=SPEC: sample an answer now from this LLM
    sample_temperature: float = 1.0
    sample_max_tokens: int = 512
    mode: Literal["single", "joint"] = "single"
    temperature: float = 0.2  # FastChat reviewer decoding
    max_tokens: int = 1024
    min_responses: int = 2
    run_dir: str = ""
    limit: int = 0

    def validate(self) -> None:
        check_ranges(self)
        require(self.output, "output", "output")
        if not self.responses and not self.sample:
            raise ConfigError("feedback: give responses to rate: responses=[NAME=PATH,...] and/or "
                              "sample=[NAME=LLM_SPEC,...]")
        if not self.input and not self.responses:
            raise ConfigError("input: required when no responses file is given (the prompts to answer)")


def _named(items: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ConfigError(f"{what}: {item!r}: expected NAME=VALUE")
        out.append((name.strip(), value.strip()))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{what}: duplicate names in {names}")
    return out


def run_feedback(config: FeedbackConfig) -> dict[str, Any]:
    from drover.completions import Request

    files = _named(config.responses, "responses")
    samplers = _named(config.sample, "sample")
    if set(dict(files)) & set(dict(samplers)):
        raise ConfigError("feedback: a source name is used both in responses and sample")
    summary = Summary("generate feedback", config.output)
    cache = cache_path(config.output, config.run_dir)
    judge = open_llm(config.judge, cache, config.judge_options, role="judge")
    llms: dict[str, Any] = {"judge": judge}
    try:
        with JsonlAppender(config.output) as out, JsonlAppender(sidecar(config.output, "failures.jsonl"), lazy=True) as bad:
            done = out.done_ids | bad.done_ids
            summary.add("already done", len(done))
            prompts: list[Prompt] = []
            for n, p in enumerate(read_prompts(config.input or files[0][1])):
                if config.limit and n >= config.limit:
                    break
                if p.id not in done:
                    prompts.append(p)
            answers: dict[str, dict[str, str]] = {}
            for name, path in files:
                wanted = {p.id for p in prompts}
                answers[name] = {p.id: p.reference for p in read_prompts(path) if p.id in wanted and p.reference}
            repeats: Counter[str] = Counter()
            for name, spec in samplers:
                llms[name] = sampler = open_llm(spec, cache, role=f"sample {name}")
                # One model named twice is asked for two samples (indices 0, 1, ...), not one
                # cached answer under both names; the first of each model keeps index 0.
                model = digest(getattr(sampler, "identity", spec))
                index, repeats[model] = repeats[model], repeats[model] + 1
                requests = [Request.chat(teacher_messages(p, "alpaca"), key=p.id, sample_index=index,
                                         temperature=config.sample_temperature, max_tokens=config.sample_max_tokens)
                            for p in prompts]
                answers[name] = {}
                for p, c in zip(prompts, sampler.run(requests, desc=f"sample {name}")):
                    if c.error or not c.text.strip():
                        summary.add(f"no answer from {name}")
                    else:
                        answers[name][p.id] = c.text.strip()
            sources = [n for n, _ in files] + [n for n, _ in samplers]
            _rate_and_write(config, judge, prompts, sources, answers, out, bad, summary)
    finally:
        close_all(*llms.values())
    return summary.finish(llms)


def _rate_and_write(config: FeedbackConfig, judge: Any, prompts: list[Prompt], sources: list[str],
                    answers: dict[str, dict[str, str]], out: JsonlAppender, bad: JsonlAppender,
                    summary: Summary) -> None:
    present = {p.id: [s for s in sources if answers[s].get(p.id)] for p in prompts}
    jobs = []
    for p in prompts:
        have = present[p.id]
        if config.mode == "joint":
            if have:
                jobs.append(RatingJob(p.id, p.user_text, [answers[s][p.id] for s in have]))
        else:
            jobs.extend(RatingJob(f"{p.id}\t{s}", p.user_text, [answers[s][p.id]]) for s in have)
    results = iter(rate(judge, jobs, temperature=config.temperature, max_tokens=config.max_tokens, desc="ratings"))
    for p in prompts:
        have = present[p.id]
        if config.mode == "joint":
            got = [next(results)] if have else []
            per_source = [(s, got[0], i) for i, s in enumerate(have)]
        else:
            per_source = [(s, next(results), 0) for s in have]
        rated, failures, explanations = [], [], {}
        for source, result, position in per_source:
            if isinstance(result.verdict, Scores):
                rated.append(Response(answers[source][p.id], result.verdict.scores[position], source))
                explanations[source] = result.verdict.explanation
            else:
                failures.append({"source": source, "reason": result.verdict.reason, "raw": result.raw,
                                 "retried": result.retried, "error": result.error})
        summary.add("ratings parsed", len(rated))
        if failures:
            summary.add("ratings failed (recorded)", len(failures))
        missing = [s for s in sources if s not in have]
        if len(rated) < config.min_responses and any(f["error"] for f in failures):
            summary.add("records failed (judge LLM error; re-run to retry)")  # transient: not recorded
            continue
        if len(rated) < config.min_responses:
            bad.write({"id": p.id, "reason": f"{len(rated)} rated responses < min_responses={config.min_responses}",
                       "failures": failures, "missing_sources": missing})
            summary.add("records rejected: too few rated responses (recorded)")
            continue
        rated.sort(key=lambda r: -(r.score or 0.0))  # stable: ties keep source order
        meta = {**p.meta, "judge": judge.config.model, "rating_mode": config.mode, "explanations": explanations}
        if failures:
            meta["unrated"] = [f["source"] for f in failures]
            bad.write({"id": p.id, "reason": "some ratings unreadable", "failures": failures, "missing_sources": missing})
        if missing:
            meta["missing_sources"] = missing
        out.write(Ranked(p.id, list(p.messages), rated, p.reference, meta))
        summary.add("ranked records")
