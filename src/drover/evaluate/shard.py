"""The shard pass of `drover eval --shard I/N` (request sharding, see `drover.shards`).

Each task runs as usual on a `ShardedLLM`: this shard answers the requests it owns into
its own cache part, and writes no result (what a task computes from the placeholders
of other shards' requests is thrown away). Judge models a task opens (TruthfulQA's) are
left to the merge pass: their prompts depend on every shard's answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from drover.evaluate.prompting import PromptFormatter
from drover.evaluate.registry import TASKS
from drover.evaluate.task import EvalContext, EvalOptions
from drover.llm.sharded import ShardedLLM
from drover.runs import RunDir
from drover.shards import Shard, cache_part, mark_done, shard_dir

JOB = "eval"  # RUN/shards/eval/


class _ShardContext(EvalContext):
    def judge_llm(self, spec: str) -> Any:
        from drover.llm.client import LLM
        from drover.llm.config import LLMConfig

        return ShardedLLM(LLM(LLMConfig.from_spec(spec)), owns=lambda key: False)


def run_shard(llm: Any, fmt: PromptFormatter, names: list[str], run: RunDir, options: EvalOptions, shard: Shard,
              log: Callable[[str], None] = print, job: str = "") -> dict[str, Any]:
    """Answer this shard's requests of every task into its cache part; mark the shard done
    with `job` (the digest of the tasks' result keys: what rank 0 waits for)."""
    start = time.perf_counter()
    sharded = ShardedLLM(llm, owns=shard.owns_key)
    for name in names:
        task = TASKS.get(name)
        log(f"eval {name}: shard {shard.index}/{shard.count}")
        task.run(_ShardContext(sharded, fmt, options), task.settings(options))
    summary = {"tasks": names, "answered": sharded.answered, "left_to_other_shards": sharded.skipped,
               "time_s": round(time.perf_counter() - start, 3)}
    mark_done(shard_dir(run.root, JOB), shard, summary, job)
    log(f"eval shard {shard.index}/{shard.count}: {sharded.answered} requests answered into "
        f"{cache_part(run.root, JOB, shard)} ({sharded.skipped} left to other shards) in {summary['time_s']:.1f} s; "
        "run `drover eval` without --shard on this run directory to merge")
    return summary
