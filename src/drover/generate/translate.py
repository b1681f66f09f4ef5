"""`drover generate translate --to LANG`: instructions and inputs into another language.

GPT-4-LLM translated the 52K Alpaca instructions into Chinese with ChatGPT and had GPT-4
answer them (`generate answers` on this stage's output). Every record keeps its id, so the
two languages stay aligned; instruction and input are translated separately (an empty
input stays empty) and the originals are kept in `meta.original`. Any language name works:
it is only put into the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from drover.generate.batching import run_grouped
from drover.generate.inputs import Prompt, read_prompts
from drover.generate.stage import Summary, cache_path, check_ranges, close_all, open_llm, require
from drover.prompts import load_prompt
from drover.records import Conversation, JsonlAppender, Message


@dataclass
class TranslateConfig:
    input: str = ""
    output: str = ""
    to: str = ""  # target language name, e.g. Chinese, German, Swahili
    translator: str = ""  # LLM spec
    translator_options: dict[str, Any] = field(default_factory=dict)
    run_dir: str = ""
    temperature: float = 0.0
    max_tokens: int = 1024
    translate_reference: bool = False  # also translate the original answer, if any
    limit: int = 0

    def validate(self) -> None:
        check_ranges(self)
        require(self.input, "input", "input")
        require(self.output, "output", "output")
        require(self.to.strip(), "to", "to")


def _pieces(prompt: Prompt, with_reference: bool) -> list[tuple[str, str]]:
    """(field, text) pairs to translate for one prompt."""
    if prompt.instruction is not None:
        pieces = [("instruction", prompt.instruction)]
        if prompt.input.strip():
            pieces.append(("input", prompt.input))
    else:
        pieces = [(f"messages[{i}]", m.content) for i, m in enumerate(prompt.messages)]
    if with_reference and prompt.reference:
        pieces.append(("reference", prompt.reference))
    return pieces


def run_translate(config: TranslateConfig) -> dict[str, Any]:
    from drover.templates import join_instruction
    from drover.completions import Request

    summary = Summary(f"generate translate --to {config.to}", config.output)
    translator = open_llm(config.translator, cache_path(config.output, config.run_dir),
                          config.translator_options, role="translator")
    template = load_prompt("generate/translate.txt")
    try:
        with JsonlAppender(config.output) as out:
            summary.add("already done", len(out.done_ids))
            groups = []
            for n, prompt in enumerate(read_prompts(config.input)):
                if config.limit and n >= config.limit:
                    break
                if prompt.id in out.done_ids:
                    continue
                pieces = _pieces(prompt, config.translate_reference)
                requests = [Request.chat([{"role": "user", "content": template.format(language=config.to, text=t)}],
                                         key=f"{prompt.id}:{name}", temperature=config.temperature,
                                         max_tokens=config.max_tokens) for name, t in pieces]
                groups.append(((prompt, pieces), requests))
            total = sum(len(r) for _, r in groups)
            for (prompt, pieces), completions in run_grouped(translator, groups, desc=f"translate to {config.to}",
                                                            total=total):
                if any(c.error for c in completions):
                    summary.add("failed (LLM error; re-run to retry)")
                    continue
                done = {name: c.text.strip() for (name, _), c in zip(pieces, completions)}
                if any(not text for text in done.values()):
                    summary.add("failed (empty translation)")
                    continue
                if any(c.choices[0].finish_reason == "length" for c in completions):
                    summary.add("truncated translations")
                meta = {**prompt.meta, "language": config.to, "translator": translator.config.model}
                if prompt.instruction is not None:
                    meta.update({"instruction": done["instruction"], "input": done.get("input", ""),
                                 "original": {"instruction": prompt.instruction, "input": prompt.input}})
                    messages = [Message("user", join_instruction(done["instruction"], done.get("input", "")))]
                else:
                    meta["original"] = {"messages": [m.to_dict() for m in prompt.messages]}
                    messages = [Message(m.role, done[f"messages[{i}]"]) for i, m in enumerate(prompt.messages)]
                if "reference" in done:
                    meta["original_output"] = prompt.reference
                    messages.append(Message("assistant", done["reference"]))
                out.write(Conversation(prompt.id, messages, prompt.source or "translated", meta))
                summary.add("translated")
    finally:
        close_all(translator)
    return summary.finish({"translator": translator})
