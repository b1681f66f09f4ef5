"""What every converter shares: the input row with typed, located field access,
the options, and the tally of skipped items.

A converter is a generator `fn(rows, options, stats) -> Iterator[Conversation | Ranked]`.
Structural problems (bad JSON, a missing or wrong-typed field, an unknown role) raise
`InputError` pointing at `file:line`; items that are well-formed but unusable for training
(an empty answer, two identical responses) are skipped and counted in `ConvertStats`, so
one odd item in 50,000 does not stop a conversion.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from drover.errors import InputError
from drover.records import Conversation, Ranked, Record


def typename(obj: Any) -> str:
    """The JSON name of a Python value's type, for error messages."""
    if isinstance(obj, bool):
        return "boolean"
    return {dict: "object", list: "array", str: "string", type(None): "null",
            int: "number", float: "number"}.get(type(obj), type(obj).__name__)


@dataclass
class Row:
    """One input item: a JSONL line, a JSON array element, or a whole JSON document.

    `line` is the 1-based line where the item starts; `index` its position in a JSON
    array (None for JSONL lines and whole documents), used in field names (`[3].output`).
    """

    path: str
    line: int
    index: int | None
    obj: Any

    def name(self, field_name: str) -> str:
        return field_name if self.index is None else f"[{self.index}].{field_name}"

    def error(self, field_name: str | None, problem: str) -> InputError:
        return InputError(self.path, self.line, None if field_name is None else self.name(field_name), problem)

    def object(self) -> dict[str, Any]:
        """The item itself, which must be a JSON object."""
        if not isinstance(self.obj, dict):
            where = None if self.index is None else f"[{self.index}]"
            raise InputError(self.path, self.line, where, f"expected a JSON object, got {typename(self.obj)}")
        return self.obj

    # Typed getters. `obj`/`prefix` address nested objects (e.g. "instances[2].").
    def get(self, key: str, kind: type | tuple[type, ...], *, obj: dict | None = None,
            prefix: str = "", required: bool = True, expected: str | None = None) -> Any:
        source = self.object() if obj is None else obj
        if key not in source or source[key] is None:
            if required:
                raise self.error(prefix + key, "missing field")
            return None
        value = source[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            wanted = expected or " or ".join(_json_name(k) for k in _as_tuple(kind))
            raise self.error(prefix + key, f"expected {wanted}, got {typename(value)}")
        return value

    def text(self, key: str, *, obj: dict | None = None, prefix: str = "", required: bool = True) -> str:
        """A string field; optional ones read as "" when missing or null."""
        value = self.get(key, str, obj=obj, prefix=prefix, required=required)
        return "" if value is None else value

    def array(self, key: str, *, obj: dict | None = None, prefix: str = "", nonempty: bool = True) -> list:
        value = self.get(key, list, obj=obj, prefix=prefix)
        if nonempty and not value:
            raise self.error(prefix + key, "empty list")
        return value

    def member(self, container: list, i: int, name: str) -> dict[str, Any]:
        """Element `i` of a list field, which must be an object."""
        item = container[i]
        if not isinstance(item, dict):
            raise self.error(f"{name}[{i}]", f"expected an object, got {typename(item)}")
        return item


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _json_name(kind: type) -> str:
    return {str: "a string", list: "an array", dict: "an object", int: "a number",
            float: "a number", bool: "a boolean"}.get(kind, kind.__name__)


def extra_meta(obj: dict[str, Any], used: Iterable[str]) -> dict[str, Any]:
    """The input's fields a converter did not consume, kept as provenance in `meta`."""
    skip = set(used)
    return {k: v for k, v in obj.items() if k not in skip and isinstance(v, (str, int, float, bool))}


TokenCounter = Callable[[str], int]


@dataclass
class ConvertOptions:
    """Every converter option; each converter reads the ones that concern it."""

    source: str | None = None          # dataset name: id prefix and `source` (default: the format's)
    max_tokens: int | None = 2048      # ShareGPT: split longer conversations (None/0: never); Tülu: 2048
    tokenizer: str | None = None       # ShareGPT: count tokens with this tokenizer (default: heuristic)
    oasst_mode: Literal["all", "top"] = "all"  # OASST: every root-to-assistant path, or top-ranked replies only
    shots: int = 0                     # Super-NI: positive examples in the prompt
    max_instances: int | None = None   # Super-NI: instances per task (Tk-Instruct evaluates 100)
    reformulations: bool = False       # Unnatural Instructions: also convert `reformulations`
    only: list[str] | None = None      # directory input: only these file names (without extension)
    count_tokens: TokenCounter | None = None  # set by the driver from `tokenizer`

    def name(self, default: str) -> str:
        return self.source or default


@dataclass
class ConvertConfig:
    """`drover convert`: which converter, from where to where, and its options (one typed
    config, so `--config FILE.yaml key=value` works as on every stage)."""

    fmt: str = ""                      # input format (a name in drover.formats.FORMATS)
    input: str = ""                    # a file, or a directory of them (e.g. Super-NI tasks/)
    output: str = ""                   # output JSONL (written atomically)
    source: str | None = None
    max_tokens: int | None = None      # ShareGPT: split longer conversations (0: never; default 4096)
    tokenizer: str | None = None
    oasst_mode: Literal["all", "top"] = "all"
    shots: int = 0
    max_instances: int | None = None
    reformulations: bool = False
    only: str | None = None            # directory input: a file listing the names to convert

    def validate(self) -> None:
        from drover.errors import ConfigError

        for name in ("fmt", "input", "output"):
            if not getattr(self, name):
                raise ConfigError(f"convert: {name}: required" + (" (--from FORMAT)" if name == "fmt" else ""))
        if self.shots < 0:
            raise ConfigError("--shots must be >= 0")
        if self.max_instances is not None and self.max_instances < 1:
            raise ConfigError("--max-instances must be >= 1")
        if self.max_tokens is not None and self.max_tokens < 0:
            raise ConfigError("--max-tokens must be >= 0 (0 disables splitting)")

    def options(self) -> ConvertOptions:
        from drover.formats.source import read_names

        max_tokens = ConvertOptions.max_tokens if self.max_tokens is None else (self.max_tokens or None)
        return ConvertOptions(source=self.source, max_tokens=max_tokens, tokenizer=self.tokenizer,
                              oasst_mode=self.oasst_mode, shots=self.shots, max_instances=self.max_instances,
                              reformulations=self.reformulations, only=read_names(self.only) if self.only else None)


@dataclass
class ConvertStats:
    """How many items were read, written and skipped (with reasons)."""

    read: int = 0
    written: int = 0
    skipped: Counter = field(default_factory=Counter)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n

    def summary(self) -> str:
        parts = [f"read {self.read} items, wrote {self.written} records"]
        if self.skipped:
            parts.append("skipped: " + ", ".join(f"{n} {why}" for why, n in self.skipped.most_common()))
        return "; ".join(parts)


ConvertFn = Callable[[Iterable[Row], ConvertOptions, ConvertStats], Iterator[Record]]


@dataclass(frozen=True)
class Converter:
    """A registered converter: the function and the record type it writes."""

    fn: ConvertFn
    kind: Literal["conversation", "ranked"]

    @property
    def record_type(self) -> type:
        return Conversation if self.kind == "conversation" else Ranked
