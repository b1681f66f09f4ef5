"""Errors a user can act on.

Every mistake a user can make (bad file, bad config, missing model) raises a
`DroverError`; the CLI prints its message on one line and exits with code 2, without a
traceback. Anything else is a bug in drover and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class DroverError(Exception):
    """Base class: the message alone must tell the user what to fix."""

    exit_code = 2


class InputError(DroverError):
    """A problem in an input file, located as `file:line: field: problem`."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, problem: str):
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"{field}: {problem}" if field else problem
        super().__init__(f"{where}: {what}")


class ConfigError(DroverError):
    """An invalid configuration key or value."""


class ModelNotFoundError(DroverError):
    """A model or tokenizer path/id that cannot be loaded without the network."""


class LLMError(DroverError):
    """An LLM endpoint failed in a way retries cannot fix (bad key, bad model name...)."""


class CacheError(DroverError):
    """The persistent LLM cache is corrupt, locked or unreadable."""


class TemplateError(DroverError):
    """A chat template that cannot be used safely (e.g. not prefix-stable)."""


class DataError(DroverError):
    """Data that is well-formed but unusable (no trainable tokens, too few responses...)."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' (did you mean X?)' suffix for a misspelt name, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
