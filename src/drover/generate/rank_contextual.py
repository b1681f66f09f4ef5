"""`drover generate rank --method contextual` (Tuna_c, Li et al. 2023).

Protocol: Tuna (Li et al. 2023, "Tuna: Instruction Tuning using Feedback from Large
Language Models", §2.2 contextual ranking), prompt from its released `gpt-eval.py`.
For each instruction the *policy* (e.g. the SFT model) samples N = 4 responses. They
must be diverse: while some pair has ROUGE-L >= τ (0.8), the later response of the pair
is resampled with the temperature raised by 0.1 per trial, at most 3 trials, keeping
whichever candidate is least similar to the others; an instruction whose responses are
still near-duplicates after that is not ranked (it goes to the failures file), so no
written ranking breaks the rule. A judge then ranks the N responses, at temperature 0 as
the paper (the released script's default is 1.0: `judge_temperature`), in one prompt (Tuna's contextual-ranking prompt, `drover.judges.listwise`): it writes its
own reference as Response N, drops duplicates, scores each 0-15 and ends with
`rank: [...]`. Unreadable rankings go to `<output>.failures.jsonl` with the raw text.

Output: `Ranked` with the policy responses in the judge's order (the judge's own answer
is kept in `meta.judge_reference`, the original answer as `reference`). Scores are the
judge's 0-15 totals when it gave one for every ranked response consistently with its
order, else omitted (the order alone is the ranking).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from drover.errors import ConfigError
from drover.generate.answers import teacher_messages
from drover.generate.inputs import Prompt, read_prompts
from drover.generate.stage import Summary, cache_path, check_ranges, close_all, job_key, open_llm, require, sidecar
from drover.judges.listwise import Ranking, build_prompt, parse
from drover.metrics.rouge import rouge_l_tokens, tokenize
from drover.records import JsonlAppender, Ranked, Response
from drover.shards import RecordShards, Shard


@dataclass
class RankContextualConfig:
    input: str = ""
    output: str = ""
    policy: str = ""  # LLM spec of the model whose samples are ranked
    policy_options: dict[str, Any] = field(default_factory=dict)
    judge: str = ""
    judge_options: dict[str, Any] = field(default_factory=dict)
    n: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 512
    rouge_threshold: float = 0.8  # τ: pairwise ROUGE-L must stay below this
    temperature_step: float = 0.1
    max_trials: int = 3
    judge_temperature: float = 0.0  # the paper's setting (Tuna's released gpt-eval.py defaults to 1.0)
    judge_max_tokens: int = 2048
    prompt: Literal["alpaca", "chat"] = "alpaca"
    min_responses: int = 2
    chunk: int = 32  # instructions sampled and diversified together
    run_dir: str = ""
    limit: int = 0
    shard: str = ""  # "I/N": only instructions k with k mod N = I, into <output>.shard-I-of-N.jsonl
    merge_shards: int = 0  # N: merge the N finished shards' parts into `output` (input order)

    def validate(self) -> None:
        check_ranges(self)
        if self.shard:
            Shard.parse(self.shard, where="shard:")
        if self.shard and self.merge_shards:
            raise ConfigError("shard / merge_shards: rank a shard or merge the shards, not both")
        require(self.input, "input", "input")
        require(self.output, "output", "output")
        if self.n < 2:
            raise ConfigError(f"n: must be >= 2, got {self.n}")


def max_similarity(tokens: list[list[str]], i: int) -> float:
    """The highest ROUGE-L between response i and any other."""
    return max((rouge_l_tokens(tokens[i], tokens[j]) for j in range(len(tokens)) if j != i), default=0.0)


def too_similar_pair(tokens: list[list[str]], threshold: float) -> tuple[int, int] | None:
    """The first pair (i < j) with ROUGE-L >= threshold, or None."""
    for j in range(len(tokens)):
        for i in range(j):
            if rouge_l_tokens(tokens[j], tokens[i]) >= threshold:
                return i, j
    return None


class _Item:
    def __init__(self, prompt: Prompt, messages: list[dict[str, str]]):
        self.prompt = prompt
        self.messages = messages
        self.texts: list[str | None] = []
        self.trials = 0
        self.resampled = 0
        self.llm_error = False  # a sample failed with an LLM error: retried next run, not recorded


def _diversify(config: RankContextualConfig, policy: Any, items: list[_Item]) -> None:
    """Sample N per item, then resample too-similar responses (Tuna's diversity loop)."""
    from drover.completions import Request

    def request(item: _Item, index: int, temperature: float) -> Any:
        return Request.chat(item.messages, key=item.prompt.id, sample_index=index, temperature=temperature,
                            top_p=config.top_p, max_tokens=config.max_tokens)

    requests = [request(it, k, config.temperature) for it in items for k in range(config.n)]
    completions = list(policy.run(requests, desc="policy samples"))
    for i, it in enumerate(items):
        chunk = completions[i * config.n:(i + 1) * config.n]
        it.texts = [c.text.strip() if not c.error and c.text.strip() else None for c in chunk]
        it.llm_error = any(c.error for c in chunk)
    for trial in range(1, config.max_trials + 1):
        pending = []
        for it in items:
            if any(t is None for t in it.texts) or it.llm_error:
                continue
            tokens = [tokenize(t) for t in it.texts]
            pair = too_similar_pair(tokens, config.rouge_threshold)
            if pair is not None:
                pending.append((it, pair[1]))
        if not pending:
            return
        temperature = config.temperature + config.temperature_step * trial
        # A distinct sample index per (trial, slot) keeps every resample its own cache entry.
        requests = [request(it, config.n * trial + j, temperature) for it, j in pending]
        for (it, j), c in zip(pending, policy.run(requests, desc=f"resample (trial {trial}, T={temperature:.1f})")):
            it.trials = trial
            if c.error:  # no verdict on diversity: the prompt is left for the next run
                it.llm_error = True
                continue
            if not c.text.strip():
                continue
            old = it.texts[j]
            tokens = [tokenize(t) for t in it.texts]
            before = max_similarity(tokens, j)
            tokens[j] = tokenize(c.text.strip())
            if max_similarity(tokens, j) < before:  # keep the least similar candidate
                it.texts[j] = c.text.strip()
                it.resampled += 1
            else:
                it.texts[j] = old


def _job(config: RankContextualConfig) -> str:
    """The key every shard of one ranking job and its merge share (where the records go is no
    part of it): a shard marked done under other settings is not done for this job."""
    return job_key(replace(config, shard="", merge_shards=0))


def run_rank_contextual(config: RankContextualConfig) -> dict[str, Any]:
    from drover.completions import Request
    from drover.templates import render_alpaca

    shards = RecordShards.resolve(config.shard or None, config.merge_shards, "generate rank --method contextual")
    finals = [Path(config.output), sidecar(config.output, "failures.jsonl")]
    if shards.merge:
        shards.finish(finals, lambda: _ids(config), _job(config))
        return {"merged_shards": shards.merge}
    output, failures = shards.outputs(finals)
    cache = shards.cache(cache_path(config.output, config.run_dir), "rank-contextual")
    summary = Summary("generate rank --method contextual", output)
    policy = open_llm(config.policy, cache, config.policy_options, role="policy")
    judge = open_llm(config.judge, cache, config.judge_options, role="judge")
    try:
        with JsonlAppender(output) as out, JsonlAppender(failures) as bad:
            done = out.done_ids | bad.done_ids
            summary.add("already done", len(done))
            prompts = [p for n, p in enumerate(read_prompts(config.input))
                       if (not config.limit or n < config.limit) and p.id not in done
                       and shards.owns(n)]
            for start in range(0, len(prompts), config.chunk):
                items = [_Item(p, teacher_messages(p, config.prompt)) for p in prompts[start:start + config.chunk]]
                _diversify(config, policy, items)
                ready = []
                for it in items:
                    if it.llm_error:
                        summary.add("records failed (policy LLM error; re-run to retry)")
                        continue
                    if sum(t is not None for t in it.texts) < config.n:
                        bad.write({"id": it.prompt.id, "reason": "policy samples empty"})
                        summary.add("records rejected: empty policy samples (recorded)")
                        continue
                    pair = too_similar_pair([tokenize(t) for t in it.texts], config.rouge_threshold)
                    if pair is not None:  # the diversity rule holds for every ranking that is written
                        bad.write({"id": it.prompt.id, "responses": it.texts,
                                   "reason": f"responses {pair[0]} and {pair[1]} still have ROUGE-L >= "
                                             f"{config.rouge_threshold} after {config.max_trials} resampling trials"})
                        summary.add("records rejected: near-duplicates after resampling (recorded)")
                        continue
                    ready.append(it)
                shown = [render_alpaca(it.prompt.instruction, it.prompt.input) if it.prompt.instruction is not None
                         else it.prompt.user_text for it in ready]
                requests = [Request.chat(build_prompt(s, it.texts), key=it.prompt.id,
                                         temperature=config.judge_temperature, max_tokens=config.judge_max_tokens)
                            for s, it in zip(shown, ready)]
                for it, c in zip(ready, judge.run(requests, desc="judge rankings")):
                    _write(config, it, c, judge, out, bad, summary)
    finally:
        close_all(policy, judge)
    result = summary.finish({"policy": policy, "judge": judge})
    shards.finish(finals, lambda: _ids(config), _job(config))
    return result


def _write(config: RankContextualConfig, it: _Item, completion: Any, judge: Any, out: JsonlAppender,
           bad: JsonlAppender, summary: Summary) -> None:
    p = it.prompt
    if completion.error:
        summary.add("judge calls failed (LLM error; re-run to retry)")
        return
    verdict = parse(completion.text, config.n)
    if not isinstance(verdict, Ranking):
        bad.write({"id": p.id, "reason": verdict.reason, "raw": verdict.raw, "responses": it.texts})
        summary.add("rankings unreadable (recorded)")
        return
    order = verdict.ranked_responses
    if len(order) < config.min_responses:
        bad.write({"id": p.id, "reason": f"{len(order)} ranked responses < min_responses={config.min_responses}",
                   "raw": completion.text, "responses": it.texts})
        summary.add("records rejected: too few ranked (recorded)")
        return
    scores = [verdict.scores.get(i) for i in order]
    consistent = all(s is not None for s in scores) and all(a >= b for a, b in zip(scores, scores[1:]))
    responses = [Response(it.texts[i], scores[k] if consistent else None, f"policy#{i}")
                 for k, i in enumerate(order)]
    tokens = [tokenize(t) for t in it.texts]
    meta = {**p.meta, "method": "contextual", "judge": judge.config.model, "order": list(verdict.order),
            "dropped_as_duplicates": list(verdict.dropped), "judge_scores": {str(k): v for k, v in verdict.scores.items()},
            "judge_reference": verdict.reference, "diversity_trials": it.trials, "resampled": it.resampled,
            "max_pairwise_rouge_l": round(max(max_similarity(tokens, i) for i in range(len(tokens))), 4)}
    out.write(Ranked(p.id, list(p.messages), responses, p.reference, meta))
    summary.add("ranked records")
    if it.resampled:
        summary.add("responses resampled for diversity", it.resampled)


def _ids(config: RankContextualConfig) -> list[str]:
    """Every instruction's id in input order (what a merge of shards follows)."""
    return [p.id for n, p in enumerate(read_prompts(config.input)) if not config.limit or n < config.limit]
