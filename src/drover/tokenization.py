"""Chat → `input_ids` + `labels`, training only what the assistant says.

The rule (Tülu / open-instruct): loss on every assistant turn's content and on the
end-of-turn token (EOS) that closes it; role headers, system and user text, and the
separators between turns get label -100.

Why offsets and not "tokenize each turn and concatenate": a chat template decides the exact
text, and BPE merges across boundaries differ between a turn tokenized alone and the same
turn inside the conversation. So we render the whole conversation once with the tokenizer's
own chat template, locate every assistant turn as a character span of that text, and map
spans to tokens with the fast tokenizer's offsets. Spans are found by rendering growing
prefixes of the conversation, which is only sound if the template is *prefix-stable*
(rendering turns[:k] is a prefix of rendering turns[:k+1]); when it is not, or a span does
not map exactly onto whole tokens ending in the end-of-turn token, we raise `TemplateError`
naming the record rather than silently train on the wrong tokens. One tolerated case: a
token that joins whitespace of the header with leading whitespace of the content (byte-level
BPE turns "\n" + "  def" into "\n " + " def") is trained, since the model must produce
the content's whitespace; a token joining non-whitespace across the boundary is an error.

Labels are aligned with `input_ids` (not shifted); the model shifts them, as in transformers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from drover.errors import DataError, TemplateError
from drover.records import ROLES, Conversation, Message

IGNORE_INDEX = -100


@dataclass
class EncodedExample:
    """One tokenized example. `labels[i]` is `input_ids[i]` where trained, else -100."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    record_id: str = ""

    @property
    def num_trained(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)

    def __len__(self) -> int:
        return len(self.input_ids)


MessageLike = Message | dict[str, Any]


# Extra string fields a message may carry into the chat template (the `alpaca` template's).
TEMPLATE_FIELDS = ("instruction", "input")


def _as_dicts(messages: Sequence[MessageLike], record_id: str) -> list[dict[str, str]]:
    out = []
    for i, m in enumerate(messages):
        role, content = (m.role, m.content) if isinstance(m, Message) else (m.get("role"), m.get("content"))
        if role not in ROLES or not isinstance(content, str):
            raise DataError(f"record {record_id!r}: messages[{i}] needs a role in {ROLES} and string content")
        extra = {} if isinstance(m, Message) else {k: m[k] for k in TEMPLATE_FIELDS if isinstance(m.get(k), str)}
        out.append({"role": role, "content": content, **extra})
    return out


def _render(tokenizer: Any, messages: list[dict[str, str]], record_id: str,
            add_generation_prompt: bool = False) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(f"record {record_id!r}: the tokenizer has no chat template; load it with "
                            "drover.models.load_tokenizer(..., chat_template='tulu') or pass --chat-template")
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # jinja errors, raise_exception() inside templates
        raise TemplateError(f"record {record_id!r}: the chat template failed on {len(messages)} turn(s): "
                            f"{type(exc).__name__}: {exc}") from exc
    return text if isinstance(text, str) else str(text)


def _special_strings(tokenizer: Any) -> list[str]:
    """Every special token's text, EOS first (the usual end of an assistant turn)."""
    found: list[str] = []
    candidates = [tokenizer.eos_token, *getattr(tokenizer, "all_special_tokens", [])]
    candidates += [str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values()
                   if getattr(t, "special", False)]
    for tok in candidates:
        if tok and tok not in found:
            found.append(str(tok))
    return found


def _end_of_turn(tokenizer: Any, tail: str, turn: int, record_id: str) -> tuple[int, str]:
    """(offset just past the end-of-turn token in `tail`, that token's text).

    The end-of-turn token is the first special token after the content; only whitespace may
    come between (Llama-2 writes " </s>").
    """
    best: tuple[int, str] | None = None
    for tok in _special_strings(tokenizer):
        at = tail.find(tok)
        if at >= 0 and (best is None or at < best[0] or (at == best[0] and len(tok) > len(best[1]))):
            best = (at, tok)
    if best is None or tail[:best[0]].strip():
        raise TemplateError(f"record {record_id!r}: assistant turn {turn} is not closed by an end-of-turn "
                            f"token (EOS) in the chat template; the model would never learn to stop")
    return best[0] + len(best[1]), best[1]


def _assistant_spans(tokenizer: Any, messages: list[dict[str, str]], record_id: str,
                     ) -> tuple[str, list[tuple[int, int, int, str]]]:
    """The rendered conversation and, per assistant turn, (start, end, turn, end-of-turn token)."""
    renders = [_render(tokenizer, messages[:k], record_id) for k in range(1, len(messages) + 1)]
    for k in range(1, len(renders)):
        if not renders[k].startswith(renders[k - 1]):
            raise TemplateError(
                f"record {record_id!r}: the chat template is not prefix-stable: rendering the first {k} "
                f"turn(s) is not a prefix of rendering the first {k + 1}, so assistant turns cannot be "
                "located safely; use a prefix-stable template (e.g. --chat-template tulu)")
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = renders[i - 1] if i else ""
        after = renders[i]
        search_from = len(before)
        if i:
            header = _render(tokenizer, messages[:i], record_id, add_generation_prompt=True)
            if after.startswith(header):
                search_from = len(header)
        content = message["content"]
        start = after.find(content, search_from)
        if start < 0 and content.strip():
            content = content.strip()  # templates that trim content
            start = after.find(content, search_from)
        if start < 0 or not content:
            raise TemplateError(f"record {record_id!r}: the content of assistant turn {i} does not appear "
                                "verbatim in the rendered chat; the template rewrites content")
        end = start + len(content)
        eot_len, eot = _end_of_turn(tokenizer, after[end:], i, record_id)
        spans.append((start, end + eot_len, i, eot))
    return renders[-1] if renders else "", spans


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer prepends BOS to plain text (Llama-style), as training expects."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    return bool(with_special) and with_special[0] == bos and (not without or without[0] != bos)


def encode_rendered_offsets(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets of rendered chat text (special tokens in the text are parsed).

    Adds BOS when the tokenizer would and the template did not write it, like
    `tokenizer(text)` does for Llama-style models trained by open-instruct. An added BOS
    has the empty offset (0, 0).
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    bos = getattr(tokenizer, "bos_token", None)
    if _adds_bos(tokenizer) and not (bos and text.startswith(bos)):
        ids, offsets = [tokenizer.bos_token_id, *ids], [(0, 0), *offsets]
    return ids, offsets


def encode_rendered(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a rendered prompt (chat template output or plain text) for inference.

    The one BOS rule shared by training and inference: BOS is added only when the
    tokenizer adds one and the text does not already start with it, so a template
    without BOS (tulu) still gets one and a template writing `{{ bos_token }}` gets no
    second one. Tokenizers that add no BOS encode exactly like `add_special_tokens=False`.
    """
    return encode_rendered_offsets(tokenizer, text)[0]


def _label_span(text: str, ids: list[int], offsets: list[tuple[int, int]], labels: list[int],
                span: tuple[int, int, int, str], eot_id: int, record_id: str) -> None:
    """Set labels for the tokens of one assistant span, checking they cover it exactly."""
    start, end, turn, eot = span
    inside = []
    for j, (s, e) in enumerate(offsets):
        if e <= s or e <= start or s >= end:
            continue
        # A token reaching outside the span may only carry whitespace there (e.g. "▁Hello").
        if (s < start and text[s:start].strip()) or (e > end and text[end:e].strip()):
            raise TemplateError(f"record {record_id!r}: a token straddles the boundary of assistant turn "
                                f"{turn} ({text[s:e]!r}); the template glues the header to the content")
        inside.append(j)
    ok = (bool(inside) and inside == list(range(inside[0], inside[-1] + 1))
          and not text[start:offsets[inside[0]][0]].strip() and not text[offsets[inside[-1]][1]:end].strip()
          and ids[inside[-1]] == eot_id)
    if not ok:
        raise TemplateError(f"record {record_id!r}: the tokens of assistant turn {turn} do not cover its text "
                            f"exactly, ending with {eot!r}; cannot mask this conversation safely")
    for j in inside:
        labels[j] = ids[j]


def _encode(tokenizer: Any, messages: Sequence[MessageLike], max_length: int | None, record_id: str,
            last_turn_only: bool) -> EncodedExample:
    msgs = _as_dicts(messages, record_id)
    if not msgs:
        raise DataError(f"record {record_id!r}: no messages")
    text, spans = _assistant_spans(tokenizer, msgs, record_id)
    ids, offsets = encode_rendered_offsets(tokenizer, text)
    labels = [IGNORE_INDEX] * len(ids)
    if last_turn_only:
        spans = spans[-1:]
    for span in spans:
        _label_span(text, ids, offsets, labels, span, tokenizer.convert_tokens_to_ids(span[3]), record_id)
    truncated = max_length is not None and len(ids) > max_length
    if truncated:  # keep the start: the prompt and the beginning of the answer
        ids, labels = ids[:max_length], labels[:max_length]
    return EncodedExample(ids, labels, truncated, record_id)


def encode_conversation(tokenizer: Any, messages: Sequence[MessageLike], max_length: int | None = None,
                        record_id: str = "") -> EncodedExample:
    """Tokenize a chat with the tokenizer's chat template; train on every assistant turn + its EOS."""
    return _encode(tokenizer, messages, max_length, record_id, last_turn_only=False)


def encode_prompt_response(tokenizer: Any, prompt_messages: Sequence[MessageLike], response: str,
                           max_length: int | None = None, record_id: str = "") -> EncodedExample:
    """Tokenize prompt turns + one assistant `response`; only the response (and its EOS) is labelled.

    Used to score or compare responses to the same prompt (preference/ranking objectives), so
    assistant turns inside the prompt are context, not targets.
    """
    messages = [*prompt_messages, {"role": "assistant", "content": response}]
    return _encode(tokenizer, messages, max_length, record_id, last_turn_only=True)


def encode_prompt(tokenizer: Any, prompt_messages: Sequence[MessageLike], record_id: str = "") -> list[int]:
    """Token ids of prompt turns followed by the assistant header, for generation.

    Same rendering and BOS rule as training, so a model is prompted exactly as it was trained.
    """
    msgs = _as_dicts(prompt_messages, record_id)
    text = _render(tokenizer, msgs, record_id, add_generation_prompt=True)
    return encode_rendered(tokenizer, text)


def encode_dataset(tokenizer: Any, conversations: Iterable[Conversation], max_length: int | None,
                   source: str | None = None) -> tuple[list[EncodedExample], int]:
    """Encode every conversation; drop those left with no trained token (after truncation).

    Returns (examples, number dropped). Raises `DataError` if nothing is left, naming `source`.
    """
    kept: list[EncodedExample] = []
    dropped = 0
    for conv in conversations:
        if isinstance(conv, dict):
            conv = Conversation.from_dict(conv, (source or "<dict>", None))
        example = encode_conversation(tokenizer, conv.messages, max_length, conv.id)
        if example.num_trained:
            kept.append(example)
        else:
            dropped += 1
    if not kept:
        where = f"{source}: " if source else ""
        if dropped:
            raise DataError(f"{where}all {dropped} examples have no trainable (assistant) token within "
                            f"max_length={max_length}; raise max_length or check the data has assistant turns")
        raise DataError(f"{where}no examples to encode")
    return kept, dropped
