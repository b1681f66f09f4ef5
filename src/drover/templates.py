"""Prompt and chat templates: the Alpaca prompt pair and named chat templates.

The texts live in `resources/templates/` so that what a model is trained and evaluated on
can be read (and diffed) without reading Python. Chat templates carry a
`{% generation %}` block around assistant content + end-of-turn token, so transformers'
`return_assistant_tokens_mask=True` agrees with drover's own masking.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from typing import Any

from drover.errors import ConfigError, TemplateError, did_you_mean

CHAT_TEMPLATES = ("tulu", "chatml", "alpaca")  # alpaca: the Alpaca prompt as a training template
MODEL_TEMPLATE = "model"  # keep the tokenizer's own chat_template

_PLACEHOLDER = re.compile(r"\{(instruction|input)\}")


@lru_cache(maxsize=None)
def _resource(name: str) -> str:
    return resources.files("drover").joinpath("resources", "templates", name).read_text(encoding="utf-8")


def render_alpaca(instruction: str, input: str = "") -> str:  # noqa: A002 - the paper's field name
    """The Alpaca prompt (Algorithm 1 of "Instruction Tuning with GPT-4"), ending in "### Response:".

    An empty or whitespace-only `input` selects the no-input variant, as Stanford Alpaca does.
    """
    has_input = bool(input and input.strip())
    template = _resource("alpaca_with_input.txt" if has_input else "alpaca_no_input.txt")
    values = {"instruction": instruction, "input": input}
    # One pass, so braces or placeholders inside the instruction are left alone.
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def join_instruction(instruction: str, input_: str) -> str:
    """One user turn from an Alpaca instruction and input, in Tülu's fixed layout (what
    drover's converters write; `alpaca_fields` recognises it): the input, when
    present, follows after a blank line."""
    instruction, input_ = instruction.strip(), input_.strip()
    return f"{instruction}\n\n{input_}" if input_ else instruction


def alpaca_fields(messages: list[Any], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Messages as dicts, the single user turn carrying the record's Alpaca `instruction` and
    `input` (from `meta`, as drover's converters keep them) when its content is exactly their
    Tülu join: what the `alpaca` template needs to pick the with-input prompt. Other
    templates ignore the extra keys.
    """
    out = [m.to_dict() if hasattr(m, "to_dict") else dict(m) for m in messages]
    instruction, input_ = meta.get("instruction"), meta.get("input", "")
    users = [m for m in out if m.get("role") == "user"]
    if isinstance(instruction, str) and isinstance(input_, str) and len(users) == 1 \
            and users[0].get("content") == join_instruction(instruction, input_):
        users[0].update(instruction=instruction, input=input_)
    return out


def chat_template_text(name: str) -> str:
    """The Jinja source of a named chat template (`tulu`, `chatml`, `alpaca`)."""
    if name not in CHAT_TEMPLATES:
        raise ConfigError(f"unknown chat template {name!r}{did_you_mean(name, CHAT_TEMPLATES)}; "
                          f"choose one of: {', '.join(CHAT_TEMPLATES)} (or {MODEL_TEMPLATE!r} for the model's own)")
    return _resource(f"{name}.jinja")


def ensure_chat_template(tokenizer: Any, name: str | None) -> Any:
    """Give `tokenizer` a chat template and return it.

    A tokenizer that has its own template keeps it (a model is best used in the format it was
    trained in); one without gets the named template. `name="model"` or None requires the
    model's own template and fails if there is none.
    """
    own = getattr(tokenizer, "chat_template", None)
    if own:
        return tokenizer
    if name is None or name == MODEL_TEMPLATE:
        source = getattr(tokenizer, "name_or_path", "") or "this tokenizer"
        raise TemplateError(f"{source} has no chat_template; name one with --chat-template "
                            f"({', '.join(CHAT_TEMPLATES)})")
    tokenizer.chat_template = chat_template_text(name)
    return tokenizer
