"""Constrained decoding for the local decoding loop, on llguidance (the grammar engine vLLM
and SGLang also use), never on hand-written grammar code.

A `drover.completions.Constraint` (choice / regex / JSON schema) becomes an llguidance
grammar; each sampled row gets its own `LLMatcher`, which gives, before every step, the
set of tokens that keep the output inside the language (a bitmask over the vocabulary)
and, after it, consumes the token chosen. Disallowed tokens get logit -inf before argmax or
sampling; the log-probs reported stay those of the model's own distribution (vLLM's
default "raw" log-probs). EOS is allowed exactly when the output so far is complete; when
the grammar admits no continuation at all (a choice fully written) the row stops there.

JSON schemas compile without flexible whitespace (`{"a":1}`, items separated by `,`),
so a weak model cannot wander through unbounded whitespace; the output is still JSON.
llguidance was chosen over xgrammar because its wheel has no dependencies (xgrammar 0.2.9
adds triton and apache-tvm-ffi) and it reads any fast tokenizer, our tiny byte-level BPE
ones included, through `tokenizers`' own JSON.
"""

from __future__ import annotations

import json
from typing import Any

from drover.completions import Constraint


class ConstraintError(ValueError):
    """A constraint the grammar engine rejects (bad regex, unsupported schema)."""


_JSON_OPTIONS = {"whitespace_flexible": False}


def grammar(constraint: Constraint) -> str:
    """The llguidance grammar (its JSON form) that accepts exactly `constraint`'s outputs."""
    from llguidance import LLMatcher

    if constraint.choice is not None:
        if not constraint.choice:
            raise ConstraintError("choice: needs at least one string")
        alternatives = " | ".join(json.dumps(c) for c in constraint.choice)
        return LLMatcher.grammar_from_lark(f"start: {alternatives}\n")
    if constraint.regex is not None:
        return LLMatcher.grammar_from_regex(constraint.regex)
    try:
        return LLMatcher.grammar_from_json_schema(constraint.json_schema or "", defaults=_JSON_OPTIONS)
    except ValueError as exc:
        raise ConstraintError(f"json_schema: {exc}") from None


def engine_tokenizer(tokenizer: Any, vocab_size: int, eos: set[int]) -> Any:
    """llguidance's view of a fast HF tokenizer, built once per (tokenizer, vocab, EOS set)."""
    import llguidance.hf

    key = (vocab_size, tuple(sorted(eos)))
    cached = getattr(tokenizer, "_drover_llguidance", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        built = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=sorted(eos) or None)
    except ValueError as exc:
        raise ConstraintError(f"constrained decoding needs a fast tokenizer: {exc}") from None
    tokenizer._drover_llguidance = (key, built)
    return built


def check(constraint: Constraint, tokenizer: Any, vocab_size: int, eos: set[int]) -> None:
    """Raise ConstraintError (with the engine's message) if `constraint` cannot be compiled."""
    from llguidance import LLMatcher

    text = grammar(constraint)
    problem = LLMatcher.validate_grammar(text, engine_tokenizer(tokenizer, vocab_size, eos))
    if problem and not problem.startswith("WARNING"):
        raise ConstraintError(f"{_field(constraint)}: {' '.join(problem.split())}")
    # Some grammars validate and still fail to build (80,000 choices: "panic: ... symbols.len()
    # < u16"); build one as decoding will, so that is refused here rather than mid-generation.
    matcher = LLMatcher(engine_tokenizer(tokenizer, vocab_size, eos), text, log_level=0)
    if matcher.is_error():
        raise ConstraintError(f"{_field(constraint)}: {' '.join(matcher.get_error().split())[:300]}")


def _field(constraint: Constraint) -> str:
    return next(k for k in ("choice", "regex", "json_schema") if getattr(constraint, k) is not None)


class RowMatcher:
    """One sampled row's grammar state: which tokens may come next, and the tokens taken."""

    def __init__(self, constraint: Constraint, tokenizer: Any, vocab_size: int, eos: set[int]):
        from llguidance import LLMatcher

        self.vocab_size = vocab_size
        self.matcher = LLMatcher(engine_tokenizer(tokenizer, vocab_size, eos), grammar(constraint), log_level=0)
        if self.matcher.is_error():
            raise ConstraintError(f"{_field(constraint)}: {' '.join(self.matcher.get_error().split())}")

    def allowed(self) -> Any:
        """Bool tensor (vocab,): True where a token keeps the output valid (EOS when complete)."""
        import numpy as np
        import torch

        bits = np.unpackbits(np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
        return torch.from_numpy(bits[:self.vocab_size].astype(bool))

    def advance(self, token: int) -> bool:
        """Consume `token`; True when the row must end: the grammar admits nothing more, or the
        engine refused a token its own mask allowed (seen with a choice spelling a special
        token's text) — one row's grammar must never fail the whole batch."""
        return not self.matcher.consume_token(token) or self.matcher.is_stopped()

    @property
    def accepting(self) -> bool:
        return self.matcher.is_accepting()
