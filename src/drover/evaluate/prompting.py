"""Chat formatting of benchmark prompts, in one place (`--chat-format auto|tulu|model|none`).

Every task builds its prompt as one user turn plus an answer cue (the Tülu evaluation
convention): with a chat format the user turn is rendered with the chat template and the
cue is appended after the assistant header ("<|assistant|>\\nThe answer is:"); with
`none` the raw text is sent as is, followed by its raw-text cue ("...\\nAnswer:").

- `tulu`: drover's Tülu template (`drover.templates`), rendered to text here.
- `model`: the tokenizer's own chat template, rendered to text when the tokenizer is on
  disk here (a local model, or a served model named by its path); otherwise the turn is
  sent as chat messages and the server applies the model's template.
- `none`: raw text (base models).

`auto` (the `drover eval` default) is resolved once, by `resolve_chat_format`, before any
task runs, and the resolved name is what every result records: the model's own template
when its tokenizer has one, Tülu's when it has none (a base model) or when its template is
drover's Tülu template (a model drover trained in that format).

API chat models (an `openai:` spec, or any endpoint with no local tokenizer, under a chat
format) get chat messages: they cannot continue a partial assistant turn, so the cue is
dropped there. Log-likelihood tasks need text prompts and refuse such models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drover.errors import ConfigError
from drover.completions import Request, ScoreRequest

CHAT_FORMATS = ("tulu", "model", "none")
AUTO = "auto"


def _is_local(config: Any) -> bool:
    return config.backend == "hf" or Path(str(config.model)).is_dir()


def _api_chat(config: Any) -> bool:
    return not _is_local(config) and (config.base_url is None or "api.openai.com" in str(config.base_url))


def resolve_chat_format(requested: str, config: Any, tokenizer: Any = None) -> tuple[str, str]:
    """(chat format, why) for `--chat-format requested` and an `LLMConfig`.

    `auto`: a local tokenizer with its own template -> `model` (unless that template is
    drover's Tülu template -> `tulu`); a tokenizer without one (a base model) -> `tulu`; an
    API chat model -> `model` (its server applies the model's template); any other endpoint
    without a local tokenizer -> `tulu` (its template cannot be read here).
    """
    if requested != AUTO:
        if requested not in CHAT_FORMATS:
            from drover.errors import did_you_mean

            raise ConfigError(f"--chat-format: unknown {requested!r}{did_you_mean(requested, CHAT_FORMATS + (AUTO,))}; "
                              f"choose one of: {AUTO}, {', '.join(CHAT_FORMATS)}")
        return requested, "as requested"
    if tokenizer is None and _is_local(config):
        from drover.models import load_tokenizer

        tokenizer = load_tokenizer(config.model)
    if tokenizer is None:
        if _api_chat(config):
            return "model", "auto: a chat API model; its server applies the model's own template"
        return "tulu", "auto: no local tokenizer to read the served model's template from; Tülu's"
    own = getattr(tokenizer, "chat_template", None)
    if not own:
        return "tulu", "auto: the tokenizer has no chat template (a base model); Tülu's"
    from drover.templates import chat_template_text

    if own.strip() == chat_template_text("tulu").strip():
        return "tulu", "auto: the model's template is drover's Tülu template"
    return "model", "auto: the model's own chat template"


@dataclass
class PromptFormatter:
    """Renders (user text, answer cue) into what the backend receives."""

    chat_format: str = "tulu"
    tokenizer: Any = None  # a local tokenizer: token counts, and the `model` template
    send_messages: bool = False  # API chat model: send messages instead of text
    _tulu: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.chat_format not in CHAT_FORMATS:
            from drover.errors import did_you_mean

            raise ConfigError(f"--chat-format: unknown {self.chat_format!r}"
                              f"{did_you_mean(self.chat_format, CHAT_FORMATS)}; choose one of: {', '.join(CHAT_FORMATS)}")

    @classmethod
    def for_llm(cls, config: Any, chat_format: str) -> "PromptFormatter":
        """The formatter for an `LLMConfig`: text prompts for local and served models."""
        tokenizer = None
        if _is_local(config):
            from drover.models import load_tokenizer

            tokenizer = load_tokenizer(config.model)
        if chat_format == AUTO:
            chat_format, _ = resolve_chat_format(chat_format, config, tokenizer)
        send = chat_format != "none" and (_api_chat(config) or (chat_format == "model" and tokenizer is None))
        return cls(chat_format, tokenizer, send)

    @property
    def is_chat(self) -> bool:
        return self.chat_format != "none"

    # --- rendering --------------------------------------------------------------------------
    def render(self, user: str, chat_cue: str = "", raw_cue: str = "", system: str | None = None) -> Any:
        """The prompt for one example: text, or a tuple of (role, content) for chat APIs."""
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        if self.chat_format == "none":
            return (system + "\n\n" if system else "") + user + raw_cue
        if self.send_messages:
            return tuple((m["role"], m["content"]) for m in messages)
        text = self._chat_text(messages)
        if chat_cue:
            text += chat_cue if text[-1:] in ("\n", " ") else " " + chat_cue
        return text

    def _chat_text(self, messages: list[dict[str, str]]) -> str:
        if self.chat_format == "model":
            if self.tokenizer is None or not getattr(self.tokenizer, "chat_template", None):
                raise ConfigError("--chat-format model: the model's tokenizer has no chat template; "
                                  "use --chat-format tulu or none")
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        from transformers.utils.chat_template_utils import render_jinja_template

        from drover.templates import chat_template_text

        if self._tulu is None:
            self._tulu = chat_template_text("tulu")
        eos = getattr(self.tokenizer, "eos_token", None) or "</s>"
        bos = getattr(self.tokenizer, "bos_token", None) or "<s>"
        rendered, _ = render_jinja_template([messages], chat_template=self._tulu, add_generation_prompt=True,
                                            eos_token=eos, bos_token=bos)
        return rendered[0]

    # --- requests ---------------------------------------------------------------------------
    def request(self, prompt: Any, key: str | None = None, sample_index: int = 0, **decoding: Any) -> Request:
        if isinstance(prompt, str):
            return Request.text(prompt, key=key, sample_index=sample_index, **decoding)
        return Request.chat(list(prompt), key=key, sample_index=sample_index, **decoding)

    def score_request(self, prompt: Any, continuation: str, key: str | None = None) -> ScoreRequest:
        if not isinstance(prompt, str):
            raise ConfigError("this task scores log-likelihoods, which needs a model reached as text "
                              "(a local or served model); chat API models cannot be scored")
        return ScoreRequest(prompt, continuation, key=key)

    # --- lengths ----------------------------------------------------------------------------
    def count_tokens(self, text: Any) -> int:
        """Tokens in `text` with the model's tokenizer, or ~4 characters a token without one."""
        if not isinstance(text, str):  # chat messages
            text = "\n".join(content for _, content in text)
        if self.tokenizer is None:
            return (len(text) + 3) // 4
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def truncate_tokens(self, text: str, max_tokens: int) -> str:
        """The first `max_tokens` tokens of `text` (as open-instruct truncates passages)."""
        if self.tokenizer is None:
            return text[: 4 * max_tokens]
        ids = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        if len(ids) <= max_tokens:
            return text
        return self.tokenizer.decode(ids[:max_tokens])


def prompt_text(prompt: Any) -> Any:
    """A prompt as stored in examples files: the text, or a list of {role, content}."""
    if isinstance(prompt, str):
        return prompt
    return [{"role": role, "content": content} for role, content in prompt]
