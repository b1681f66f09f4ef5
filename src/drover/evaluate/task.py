"""The benchmark task interface: load data -> build prompts -> generate or score -> metric.

A task is a small object with a typed `Settings` dataclass (every default in one place)
and one method, `run(ctx, settings) -> TaskResult`. It never loads the evaluated model:
it asks `ctx` to generate (`ctx.generate`) or score log-likelihoods (`ctx.score`), and
`ctx.fmt` renders prompts in the chosen chat format. Batching, stop handling, caching
(an interrupted eval resumes for free) and token accounting belong to the LLM client.

`--limit N` caps examples *per group* for grouped benchmarks (per MMLU subject, BBH task,
TydiQA language, ToxiGen group, Super-NI task), as the Tülu scripts' per-group caps do,
and in total for the others (GSM, Codex-Eval, TruthfulQA, Unnatural Instructions).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from drover.errors import ConfigError
from drover.evaluate.prompting import PromptFormatter
from drover.completions import Completion, Request, Score, ScoreRequest

T = TypeVar("T")


@dataclass
class EvalOptions:
    """Options of one `drover eval` call that tasks may read."""

    limit: int | None = None
    chat_format: str = "tulu"
    data_dir: str | None = None  # TydiQA / Super-NI / Unnatural Instructions files
    seed: int = 42
    toxigen_classifier: str | None = None
    truthfulqa_judge: str | None = None
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)  # task (or "*") -> key -> value


@dataclass
class TaskResult:
    metrics: dict[str, float]
    examples: list[dict[str, Any]]
    breakdown: dict[str, Any] = field(default_factory=dict)
    extra_settings: dict[str, Any] = field(default_factory=dict)  # facts learned while running


class EvalContext:
    """What a task may use: the LLM (through generate/score), the formatter, the options."""

    def __init__(self, llm: Any, fmt: PromptFormatter, options: EvalOptions, cache_path: Path | None = None):
        self.llm = llm
        self.fmt = fmt
        self.options = options
        self.cache_path = cache_path  # the run's LLM cache, shared with judges
        self.judges: list[Any] = []  # judge clients opened by the task (their usage is counted too)

    def judge_llm(self, spec: str) -> Any:
        """An LLM client for a judge model (not the evaluated one), caching into the run's cache."""
        from drover.llm.client import LLM
        from drover.llm.config import LLMConfig

        llm = LLM(LLMConfig.from_spec(spec), self.cache_path)
        self.judges.append(llm)
        return llm

    def generate(self, requests: Sequence[Request], desc: str = "") -> list[Completion]:
        """Completions in request order; a failed request raises (a benchmark cannot skip it)."""
        out = list(self.llm.run(list(requests), desc=desc))
        for completion in out:
            if completion.error is not None:
                from drover.errors import LLMError

                raise LLMError(f"{desc or 'generation'}: a request failed after retries: {completion.error}")
        return out

    def score(self, requests: Sequence[ScoreRequest], desc: str = "") -> list[Score]:
        """Log-likelihoods in request order."""
        out = list(self.llm.score(list(requests), desc=desc))
        for result in out:
            if result.error is not None:
                from drover.errors import LLMError

                raise LLMError(f"{desc or 'scoring'}: a scoring request failed: {result.error}")
        return out


class Task:
    """Base class of a benchmark task (one registry entry; one JSON result file)."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # the column header in the results table
    primary_metric: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True
    Settings: ClassVar[type] = object
    # What the task reads from drover/resources (files or folders, "/"-separated): their content
    # is in the result key, so corrected data, exemplars or prompts re-run the benchmark.
    shipped: ClassVar[tuple[str, ...]] = ()

    def default_settings(self) -> Any:
        return self.Settings()

    def settings(self, options: EvalOptions) -> Any:
        """Defaults, then `--limit`, then `-o key=value` overrides (all tasks, then this task)."""
        base = self.default_settings()
        values = dataclasses.asdict(base)
        if options.limit is not None and "limit" in values:
            values["limit"] = options.limit
        names = {f.name for f in dataclasses.fields(base)}
        for scope in ("*", self.name):
            for key, raw in options.overrides.get(scope, {}).items():
                if key not in names:
                    if scope == "*":
                        continue
                    from drover.errors import did_you_mean

                    raise ConfigError(f"-o {self.name}.{key}: unknown setting{did_you_mean(key, names)}; "
                                      f"known: {', '.join(sorted(names))}")
                values[key] = raw
        from drover.config import from_dict

        return from_dict(self.Settings, values, where=f"eval task {self.name}")

    def run(self, ctx: EvalContext, settings: Any) -> TaskResult:
        raise NotImplementedError


def subsample(items: Sequence[T], k: int | None, seed: int) -> list[T]:
    """A seeded sample of k items (all of them, in order, if k is None or too large)."""
    if k is None or k >= len(items):
        return list(items)
    return random.Random(seed).sample(list(items), k)


def resource_text(*parts: str) -> str:
    """A shipped resource file (under `drover/resources/`) as text."""
    return resources.files("drover").joinpath("resources", *parts).read_text(encoding="utf-8")


def resource_path(*parts: str) -> Path:
    return Path(str(resources.files("drover").joinpath("resources", *parts)))


def require_data_dir(options: EvalOptions, task: str, what: str) -> Path:
    """The user-given data directory of a task whose data does not ship."""
    if not options.data_dir:
        raise ConfigError(f"eval task {task}: its data does not ship with drover; pass --data-dir with {what}")
    path = Path(options.data_dir)
    if not path.exists():
        raise ConfigError(f"eval task {task}: --data-dir {path} does not exist")
    return path


def chunked(items: Iterable[T], size: int) -> Iterable[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
