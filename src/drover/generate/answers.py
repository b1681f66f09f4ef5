"""`drover generate answers`: a teacher answers every instruction (GPT-4-LLM, Algorithm 1).

The teacher sees the Alpaca prompt (with or without input) as one user message, sampled
at temperature 1.0, top_p 1.0, up to 512 tokens, as in "Instruction Tuning with GPT-4".
`prompt: chat` sends the record's own turns instead (multi-turn prompts, or data
already in chat form). Each answer becomes a Conversation with the instruction as the user
turn; the finish reason, truncation and teacher go to `meta`. An empty answer is the
teacher's answer, not a transient failure (a re-run would read the same answer back from
the cache): it goes to `<output>.rejected.jsonl` and is not asked again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from drover.generate.inputs import Prompt, read_prompts
from drover.generate.stage import Summary, cache_path, check_ranges, close_all, open_llm, require, sidecar
from drover.records import Conversation, JsonlAppender, Message


@dataclass
class AnswersConfig:
    input: str = ""
    output: str = ""
    teacher: str = ""  # LLM spec, e.g. http://127.0.0.1:8000/v1#tiny or openai:gpt-4
    teacher_options: dict[str, Any] = field(default_factory=dict)  # LLMConfig fields (concurrency, rpm, prices...)
    run_dir: str = ""  # where llm-cache.sqlite lives (default: the output's run directory)
    prompt: Literal["alpaca", "chat"] = "alpaca"
    system: str = ""  # optional system message
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 512
    limit: int = 0  # answer only the first N prompts (0 = all)
    source: str = ""  # the records' `source` (default: teacher:<model>)

    def validate(self) -> None:
        check_ranges(self)
        require(self.input, "input", "input")
        require(self.output, "output", "output")


def teacher_messages(prompt: Prompt, style: str, system: str = "") -> list[dict[str, str]]:
    """The messages the teacher sees for a prompt."""
    from drover.templates import render_alpaca

    if style == "alpaca" and prompt.instruction is not None:
        messages = [{"role": "user", "content": render_alpaca(prompt.instruction, prompt.input)}]
    else:
        messages = [m.to_dict() for m in prompt.messages]
    if system and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}] + messages
    return messages


def _prompts(config: AnswersConfig, done: set[str]) -> Iterator[Prompt]:
    for n, prompt in enumerate(read_prompts(config.input)):
        if config.limit and n >= config.limit:
            return
        if prompt.id not in done:
            yield prompt


def run_answers(config: AnswersConfig) -> dict[str, Any]:
    from drover.completions import Request

    summary = Summary("generate answers", config.output)
    teacher = open_llm(config.teacher, cache_path(config.output, config.run_dir), config.teacher_options)
    source = config.source or f"teacher:{teacher.config.model}"
    try:
        with JsonlAppender(config.output) as out, JsonlAppender(sidecar(config.output, "rejected.jsonl"), lazy=True) as rejected:
            done = out.done_ids | rejected.done_ids
            summary.add("already done", len(done))
            prompts = list(_prompts(config, done))
            requests = [Request.chat(teacher_messages(p, config.prompt, config.system), key=p.id,
                                     temperature=config.temperature, top_p=config.top_p,
                                     max_tokens=config.max_tokens) for p in prompts]
            for prompt, completion in zip(prompts, teacher.run(requests, desc="answers")):
                if completion.error:
                    summary.add("failed (LLM error; re-run to retry)")
                    continue
                choice = completion.choices[0]
                answer = choice.text.strip()
                if not answer:
                    rejected.write({"id": prompt.id, "reason": "empty answer", "finish_reason": choice.finish_reason,
                                    "teacher": teacher.config.model})
                    summary.add("rejected (empty answer)")
                    continue
                truncated = choice.finish_reason == "length"
                meta = {**prompt.meta, "teacher": teacher.config.model, "finish_reason": choice.finish_reason,
                        "truncated": truncated, "prompt_style": config.prompt}
                if prompt.reference is not None:
                    meta["original_output"] = prompt.reference
                messages = list(prompt.messages) + [Message("assistant", answer)]
                out.write(Conversation(prompt.id, messages, source, meta))
                summary.add("answered")
                if truncated:
                    summary.add("truncated (finish_reason=length)")
    finally:
        close_all(teacher)
    return summary.finish({"teacher": teacher})
