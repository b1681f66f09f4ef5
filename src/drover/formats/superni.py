"""Super-NaturalInstructions task files (`tasks/<task>.json`, one JSON document each).

The prompt is Tk-Instruct's "definition + positive examples" encoding: the definition,
`shots` positive examples, then the instance (zero-shot when `shots` is 0). Pieces end with
a period when they do not already end in punctuation, as Tk-Instruct's collator does.
The layout lives in `resources/formats/superni/*.txt`.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Iterator
from functools import lru_cache
from importlib import resources
from pathlib import Path

from drover.formats.base import Converter, ConvertOptions, ConvertStats, Row
from drover.records import Conversation, Message


@lru_cache(maxsize=None)
def _template(name: str) -> str:
    return resources.files("drover").joinpath("resources", "formats", "superni", f"{name}.txt").read_text("utf-8")


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text[-1] in string.punctuation else text + "."


def superni_prompt(definition: str, examples: list[tuple[str, str]], input_: str) -> str:
    """Render one Tk-Instruct style prompt (`examples` are (input, output) pairs)."""
    parts = [_template("definition").format(definition=_sentence(definition))]
    for number, (ex_in, ex_out) in enumerate(examples, start=1):
        parts.append(_template("positive_example").format(number=number, input=_sentence(ex_in),
                                                          output=_sentence(ex_out)))
    parts.append(_template("query").format(input=_sentence(input_)))
    return "".join(parts)


def convert_superni(rows: Iterable[Row], opts: ConvertOptions, stats: ConvertStats) -> Iterator[Conversation]:
    """One record per instance; the first reference output is the answer, all of them
    are kept in `meta.references` (Super-NI scores ROUGE-L against the best match)."""
    source = opts.name("super_ni")
    for row in rows:
        row.object()
        task = Path(row.path).name.split(".")[0]
        definitions = row.array("Definition")
        if not isinstance(definitions[0], str):
            raise row.error("Definition[0]", "expected a string")
        definition = definitions[0]
        examples = []
        positives = row.array("Positive Examples") if opts.shots > 0 else []
        for i in range(min(opts.shots, len(positives))):
            ex = row.member(positives, i, "Positive Examples")
            prefix = f"Positive Examples[{i}]."
            examples.append((row.text("input", obj=ex, prefix=prefix), row.text("output", obj=ex, prefix=prefix)))
        if len(examples) < opts.shots:
            stats.skip(f"tasks with fewer than {opts.shots} positive examples (used all)")
        instances = row.array("Instances")
        limit = len(instances) if opts.max_instances is None else min(opts.max_instances, len(instances))
        suffix = f"_{opts.shots}shot" if opts.shots else ""
        for i in range(limit):
            inst = row.member(instances, i, "Instances")
            prefix = f"Instances[{i}]."
            iid = row.get("id", (str, int), obj=inst, prefix=prefix)
            input_ = row.text("input", obj=inst, prefix=prefix)
            outputs = row.array("output", obj=inst, prefix=prefix)
            for j, out in enumerate(outputs):
                if not isinstance(out, str):
                    raise row.error(f"{prefix}output[{j}]", "expected a string")
            if not outputs[0].strip():
                stats.skip("instances with an empty first output")
                continue
            prompt = superni_prompt(definition, examples, input_)
            yield Conversation(f"{source}_{iid}{suffix}",
                               [Message("user", prompt), Message("assistant", outputs[0].strip())], source,
                               {"task": task, "instance_id": iid, "shots": len(examples), "references": outputs})


SUPERNI = Converter(convert_superni, "conversation")
