"""`EvalConfig`: every setting of `drover eval` in one typed place.

The command line (`--model`, `--tasks`, `-o TASK.KEY=VALUE` ...), `--config FILE.yaml` and
`key=value` overrides all fill this one dataclass; its resolved form is what a result's
key and provenance record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from drover.errors import ConfigError


@dataclass
class EvalConfig:
    model: str = ""                        # local model dir, http://host:port/v1#MODEL, or openai:MODEL
    name: str = ""                         # the model's label in results and the report (default: see model_label)
    tasks: list[str] = field(default_factory=lambda: ["shipped"])  # tasks or groups
    limit: int | None = None               # examples per subject/task/language/group (grouped), in total otherwise
    # auto: the model's own template when its tokenizer has one, Tülu's for a base model or one drover
    # trained in that format (evaluate.prompting.resolve_chat_format); the resolved name is recorded.
    chat_format: Literal["auto", "tulu", "model", "none"] = "auto"
    run_dir: str = "runs/eval"
    data_dir: str | None = None            # tydiqa / superni / unnatural data (not shipped)
    toxigen_classifier: str | None = None
    truthfulqa_judge: str | None = None
    seed: int = 42
    options: dict[str, Any] = field(default_factory=dict)  # "KEY" (every task) or "TASK.KEY" -> value
    batch_size: int | None = None          # local backend batch size: float32 outputs are identical at any size
    force: bool = False
    shard: str | None = None               # "I/N": answer only that shard's requests (drover.shards); not in keys

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("eval: model: required (--model PATH, http://host:port/v1#MODEL or openai:MODEL)")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"eval: limit: must be >= 1 (leave it out for each task's default), got {self.limit}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"eval: batch_size: must be >= 1, got {self.batch_size}")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ConfigError(f"eval: data_dir {self.data_dir}: directory not found")

    def task_overrides(self) -> dict[str, dict[str, Any]]:
        """`options` as {task or "*": {key: value}}, each task name and key checked."""
        import dataclasses

        from drover.errors import did_you_mean
        from drover.evaluate.registry import TASKS

        out: dict[str, dict[str, Any]] = {}
        for item, value in self.options.items():
            path = item.split(".")
            if len(path) == 1:
                out.setdefault("*", {})[path[0]] = value
            elif len(path) == 2:
                if path[0] not in TASKS:
                    raise ConfigError(f"-o {item}: unknown task {path[0]!r}{did_you_mean(path[0], TASKS.names())}")
                out.setdefault(path[0], {})[path[1]] = value
            else:
                raise ConfigError(f"-o {item}: expected KEY=VALUE or TASK.KEY=VALUE")
        known = {f.name for name in TASKS.names() for f in dataclasses.fields(TASKS.get(name).Settings)}
        for key in out.get("*", {}):
            if key not in known:
                raise ConfigError(f"-o {key}=...: no task has a setting {key!r}"
                                  f"{did_you_mean(key, known)}; known: {', '.join(sorted(known))}")
        return out

    def eval_options(self) -> Any:
        from drover.evaluate.task import EvalOptions

        return EvalOptions(limit=self.limit, chat_format=self.chat_format, data_dir=self.data_dir, seed=self.seed,
                           toxigen_classifier=self.toxigen_classifier, truthfulqa_judge=self.truthfulqa_judge,
                           overrides=self.task_overrides())
