"""What every generation stage shares: where its cache lives, its LLM clients, its
resumable outputs and its end-of-stage summary.

Resuming is two mechanisms together: the output is appended record by record
(`JsonlAppender`; ids already written are skipped on restart) and every LLM call goes
through the run's persistent cache, so calls answered before a crash are not paid twice.

Resuming is honest (`claim_output`): `<output>.stage.json` records the stage's key, the
digest of its resolved config with every input file as its content fingerprint and every
LLM as its identity (`LLMConfig.identity()`). A re-run whose key differs (another
--max-tokens, teacher, prompt style or input file) refuses, naming what changed, before
anything is written; `--force` starts fresh. Only settings that add records without
changing those written (`GROWS`: `limit`, and e.g. self-instruct's `num_instructions`)
and settings that cannot change an answer (concurrency, rate limits, prices: `QUIET`)
are left out of the key.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drover.atomic import write_json
from drover.errors import ConfigError

GROWS = ("limit",)  # a config class may widen this with its own `GROWS`
QUIET = frozenset({"output", "run_dir", "concurrency", "rpm", "tpm", "timeout", "max_retries", "backoff_base",
                   "backoff_max", "price_input_per_1k", "price_output_per_1k", "batch_size", "lean_transport",
                   "api_key_env"})
SIDECARS = ("failures.jsonl", "rejected.jsonl", "tasks.jsonl", "instructions.jsonl", "summary.json", "stage.json")


def require(value: str, name: str, flag: str | None = None) -> str:
    if not value:
        hint = f" (--{flag} or {name}=...)" if flag else f" ({name}=...)"
        raise ConfigError(f"{name}: required{hint}")
    return value


def check_ranges(config: Any) -> None:
    """Reject out-of-range numbers in a stage config (a negative limit would silently do nothing)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if f.name == "limit" and value < 0:
            raise ConfigError(f"limit: must be >= 0 (0 = all), got {value}")
        if f.name.endswith("max_tokens") and value < 1:
            raise ConfigError(f"{f.name}: must be >= 1, got {value}")
        if f.name.endswith("temperature") and value < 0:
            raise ConfigError(f"{f.name}: must be >= 0, got {value}")
        if f.name.endswith("top_p") and not 0 < value <= 1:
            raise ConfigError(f"{f.name}: must be in (0, 1], got {value}")


def cache_path(output: str | Path, run_dir: str = "") -> Path:
    """`RUN/llm-cache.sqlite`: RUN is `run_dir` if given, else the run directory the output
    is in (`RUN/data/x.jsonl`), else the output's folder."""
    if run_dir:
        return Path(run_dir) / "llm-cache.sqlite"
    parent = Path(output).resolve().parent
    root = parent.parent if parent.name == "data" else parent
    return root / "llm-cache.sqlite"


def open_llm(spec: str, cache: Path, options: dict[str, Any] | None = None, role: str = "teacher") -> Any:
    """An `LLM` client for a spec string (`http://host/v1#model`, `openai:gpt-4`, `hf:PATH`)."""
    from drover.llm.client import LLM
    from drover.llm.config import LLMConfig

    require(spec, role, role)
    config = LLMConfig.from_spec(spec, **(options or {}))
    cache.parent.mkdir(parents=True, exist_ok=True)
    return LLM(config, cache_path=cache)


def sidecar(output: str | Path, suffix: str) -> Path:
    """`data/answers.jsonl` -> `data/answers.<suffix>` (failures, rejected, summary...)."""
    output = Path(output)
    stem = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.stem
    return output.with_name(f"{stem}.{suffix}")


@dataclass
class Summary:
    """Counts of a stage's outcomes, printed and saved as `<output>.summary.json` at the end."""

    stage: str
    output: Path
    counts: Counter = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    @property
    def failed(self) -> int:
        """Items that produced no record this time (a count whose key says "failed", except
        failures kept as records: "(recorded)"): a re-run retries exactly those."""
        return sum(n for key, n in self.counts.items() if "failed" in key and "(recorded)" not in key)

    def finish(self, llms: dict[str, Any]) -> dict[str, Any]:
        seconds = time.monotonic() - self.started
        usage = {name: llm.stats.to_dict() for name, llm in llms.items() if llm is not None}
        data = {"stage": self.stage, "output": str(self.output), "seconds": round(seconds, 2),
                "counts": dict(self.counts), "llm": usage, **self.extra}
        write_json(sidecar(self.output, "summary.json"), data)
        from drover.runs import report_stage

        report_stage(failed=self.failed)  # failed items leave a recipe stage "failed", not done
        lines = [f"\n{self.stage}: done in {seconds:.1f}s -> {self.output}"]
        for key, value in sorted(self.counts.items()):
            lines.append(f"  {key:<28} {value}")
        for name, s in usage.items():
            lines.append(f"  {name}: {s['misses']} calls ({s['hits']} cached), "
                         f"{s['prompt_tokens']} prompt + {s['completion_tokens']} completion tokens, "
                         f"${s['cost']:.4f}, {s['errors']} errors"
                         + (f" (first: {s['first_error']})" if s.get("first_error") else ""))
        for key, value in self.extra.items():
            lines.append(f"  {key}: {json.dumps(value) if not isinstance(value, str) else value}")
        print("\n".join(lines), flush=True)
        return data


def _identify(value: Any) -> Any:
    """A config value as content: existing paths -> fingerprints, LLM specs -> identities."""
    from drover.identity import path_fingerprint

    if isinstance(value, dict):
        return {k: _identify(v) for k, v in value.items() if k not in QUIET}
    if isinstance(value, (list, tuple)):
        return [_identify(v) for v in value]
    if not isinstance(value, str) or not value:
        return value
    name, sep, rest = value.partition("=")
    if sep and "://" not in name and not Path(value).exists():
        return {name: _identify(rest)}  # NAME=PATH / NAME=SPEC
    if "://" in value or value.startswith(("openai:", "hf:")):
        from drover.llm.config import LLMConfig

        try:
            return LLMConfig.from_spec(value).identity()
        except ConfigError:
            return value
    if Path(value).exists():
        return path_fingerprint(value)
    return value


def stage_key_settings(config: Any) -> dict[str, Any]:
    """What decides a stage's records (see the module docstring); a config class names its
    extra output paths in `OUTPUTS` (they are written, not read: not part of the key)."""
    skip = set(getattr(config, "GROWS", GROWS)) | set(getattr(config, "OUTPUTS", ())) | QUIET
    choices = _choice_fields(type(config))
    return {f.name: getattr(config, f.name) if f.name in choices else _identify(getattr(config, f.name))
            for f in dataclasses.fields(config) if f.name not in skip}


def _choice_fields(cls: type) -> set[str]:
    """Fields typed `Literal[...]`: a choice (`prompt: alpaca`), never a path, even where the
    working directory holds a file or folder of that name."""
    import typing

    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # (an unresolvable annotation: every field is identified as before)
        return set()
    return {name for name, hint in hints.items() if typing.get_origin(hint) is typing.Literal}


def stage_key(config: Any) -> str:
    """The digest of `stage_key_settings`: what `<output>.stage.json` and shard markers hold."""
    from drover.identity import digest

    return digest(stage_key_settings(config))


def job_key(config: Any) -> str:
    """The key every record shard of one job and its merge share (`drover.shards` done
    markers): the stage key plus what only grows an output (`GROWS`: a larger `limit`). A
    part finished under --limit 10 resumes under --limit 100, but is not done for it."""
    from drover.identity import digest

    grows = {name: getattr(config, name) for name in getattr(config, "GROWS", GROWS)}
    return digest({"stage": stage_key(config), "grows": grows})


def claimed_outputs(config: Any) -> tuple[Path, tuple[Path, ...]]:
    """(the file a run of `config` appends to and resumes, its other outputs). A record shard
    (a config with `shard` / `merge_shards`, `drover.shards`) writes parts of the output and
    of its failures, and resumes those: they, not the unmerged output, are what it claims."""
    from drover.shards import Shard, output_part

    output = Path(config.output)
    if getattr(config, "merge_shards", None) != 0:  # no sharding, or the merge (it writes the output)
        return output, ()
    shard = Shard.resolve(config.shard or None)  # (under a launcher: this rank's)
    if shard is None:
        return output, ()
    return output_part(output, shard), (output_part(sidecar(output, "failures.jsonl"), shard),)


def claim_output(config: Any, force: bool = False, output: str | Path | None = None,
                 also: tuple[str | Path, ...] = ()) -> None:
    """Refuse to resume an output written under other settings; `force` starts it (and the
    stage's other outputs, `also`) fresh. The key goes to `<output>.stage.json`."""
    output = Path(output or config.output)
    marker = sidecar(output, "stage.json")
    settings = stage_key_settings(config)
    key = stage_key(config)
    if force:
        for path in [output, *(sidecar(output, s) for s in SIDECARS), *map(Path, also)]:
            path.unlink(missing_ok=True)
    elif marker.exists() and any(p.exists() and p.stat().st_size > 0  # an empty output mixes nothing
                                 for p in (output, sidecar(output, "failures.jsonl"), sidecar(output, "rejected.jsonl"))):
        try:
            before = json.loads(marker.read_text(encoding="utf-8"))
        except ValueError:
            before = {}
        old = before.get("settings") or {}
        if before.get("key") != key:
            changed = [k for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)] or ["settings"]
            raise ConfigError(f"{output}: written under other settings (changed: {', '.join(changed)}); resuming "
                              f"would mix them. Start fresh with --force or give another --output")
    write_json(marker, {"key": key, "settings": settings})


def close_all(*llms: Any) -> None:
    for llm in llms:
        if llm is not None:
            llm.close()
