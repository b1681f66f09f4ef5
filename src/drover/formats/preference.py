"""Preference data into `Ranked` (responses best first): GPT-4-LLM comparison data
(v1 pairs, v2 scored lists), Anthropic HH-RLHF transcripts and LLMBar pairs."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from drover.formats.base import Converter, ConvertOptions, ConvertStats, Row, extra_meta, typename
from drover.records import Message, Ranked, Response


def _distinct(responses: list[Response], stats: ConvertStats) -> bool:
    """A preference needs two different, non-empty answers."""
    if any(not r.content.strip() for r in responses):
        stats.skip("items with an empty response")
        return False
    if len({r.content.strip() for r in responses}) < 2:
        stats.skip("items whose responses are identical")
        return False
    return True


def convert_gpt4llm_comparison(rows: Iterable[Row], opts: ConvertOptions,
                               stats: ConvertStats) -> Iterator[Ranked]:
    """GPT-4-LLM comparison data, both releases, told apart per item:

    v1 `{user_input, completion_a, completion_b}` with the preferred completion first;
    v2 `{user_input, responses_and_scores: [[text, score], ...]}` (GPT-4 scores 1-10),
    re-sorted best first (stable, so equal scores keep the file's order).
    """
    source = opts.name("gpt4llm_comparison")
    for number, row in enumerate(rows):
        obj = row.object()
        prompt = row.text("user_input")
        if "responses_and_scores" in obj:
            items = row.array("responses_and_scores")
            responses = []
            for i, item in enumerate(items):
                name = f"responses_and_scores[{i}]"
                if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                        or isinstance(item[1], bool) or not isinstance(item[1], (int, float))):
                    raise row.error(name, f"expected [text, score], got {typename(item)} {str(item)[:40]!r}")
                responses.append(Response(item[0].strip(), float(item[1]), ""))
            responses.sort(key=lambda r: -r.score)
            version = 2
        else:
            responses = [Response(row.text("completion_a").strip(), None, ""),
                         Response(row.text("completion_b").strip(), None, "")]
            version = 1
        if not prompt.strip():
            stats.skip("items with an empty user_input")
            continue
        if len(responses) < 2:
            stats.skip("items with fewer than 2 responses")
            continue
        if not _distinct(responses, stats):
            continue
        yield Ranked(f"{source}_{number}", [Message("user", prompt.strip())], responses, None,
                     {"source": source, "version": version})


# HH-RLHF transcripts: "\n\nHuman: ...\n\nAssistant: ..." (a few turns lack the space).
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_hh_transcript(text: str) -> list[Message]:
    """Split an HH-RLHF transcript into alternating turns; ValueError says what is wrong.

    A few real transcripts have two consecutive turns by the same speaker; they are
    merged (joined by the blank line that separated them), which keeps the text intact.

    >>> [m.role for m in parse_hh_transcript("\\n\\nHuman: hi\\n\\nAssistant: hello\\n\\nAssistant: there")]
    ['user', 'assistant']
    """
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise ValueError("transcript must start with '\\n\\nHuman: '")
    messages: list[Message] = []
    for i in range(1, len(parts), 2):
        role, content = _HH_ROLES[parts[i]], parts[i + 1].strip()
        if messages and messages[-1].role == role:
            messages[-1] = Message(role, f"{messages[-1].content}\n\n{content}".strip())
        else:
            messages.append(Message(role, content))
    if messages[0].role != "user":
        raise ValueError("transcript must start with a Human turn")
    if messages[-1].role != "assistant":
        raise ValueError("transcript must end with an Assistant turn")
    return messages


def convert_hh_rlhf(rows: Iterable[Row], opts: ConvertOptions, stats: ConvertStats) -> Iterator[Ranked]:
    """HH-RLHF `{chosen, rejected}`: the shared turns become the prompt, the two final
    assistant turns the responses (chosen first)."""
    source = opts.name("hh_rlhf")
    for number, row in enumerate(rows):
        row.object()
        turns = {}
        for key in ("chosen", "rejected"):
            try:
                turns[key] = parse_hh_transcript(row.text(key))
            except ValueError as exc:
                raise row.error(key, str(exc)) from None
        chosen, rejected = turns["chosen"], turns["rejected"]
        if chosen[:-1] != rejected[:-1]:
            stats.skip("pairs whose transcripts differ before the final turn")
            continue
        prompt = chosen[:-1]
        if any(not m.content for m in prompt):
            stats.skip("pairs with an empty prompt turn")
            continue
        responses = [Response(chosen[-1].content, None, "chosen"), Response(rejected[-1].content, None, "rejected")]
        if not _distinct(responses, stats):
            continue
        yield Ranked(f"{source}_{number}", prompt, responses, None, {"source": source})


def convert_llmbar(rows: Iterable[Row], opts: ConvertOptions, stats: ConvertStats) -> Iterator[Ranked]:
    """LLMBar `dataset.json`: `{input, output_1, output_2, label}` with label 1 or 2 naming
    the better output; it comes first, and `Response.source` keeps its original slot."""
    source = opts.name("llmbar")
    for number, row in enumerate(rows):
        obj = row.object()
        prompt = row.text("input")
        outputs = {1: row.text("output_1"), 2: row.text("output_2")}
        label = row.get("label", int)
        if label not in (1, 2):
            raise row.error("label", f"expected 1 or 2, got {label!r}")
        order = (label, 3 - label)
        responses = [Response(outputs[k], None, f"output_{k}") for k in order]
        if not prompt.strip():
            stats.skip("items with an empty input")
            continue
        if any(not r.content.strip() for r in responses):
            stats.skip("items with an empty response")
            continue
        yield Ranked(f"{source}_{number}", [Message("user", prompt)], responses, None,
                     {"source": source, "label": label, **extra_meta(obj, ("input", "output_1", "output_2", "label"))})


GPT4LLM_COMPARISON = Converter(convert_gpt4llm_comparison, "ranked")
HH_RLHF = Converter(convert_hh_rlhf, "ranked")
LLMBAR = Converter(convert_llmbar, "ranked")
