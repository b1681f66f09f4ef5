"""Every benchmark task by name (one registration site), and the group names that expand
to the Tülu Table-8 columns (`--tasks mmlu` runs MMLU 0-shot and 5-shot)."""

from __future__ import annotations

from drover.errors import ConfigError, did_you_mean
from drover.registry import Registry

_T = "drover.evaluate.tasks"

TASKS: Registry = Registry("eval task", {
    "mmlu_0shot": f"{_T}.mmlu:ZERO_SHOT",
    "mmlu_5shot": f"{_T}.mmlu:FIVE_SHOT",
    "gsm_direct": f"{_T}.gsm:DIRECT",
    "gsm_cot": f"{_T}.gsm:COT",
    "bbh_direct": f"{_T}.bbh:DIRECT",
    "bbh_cot": f"{_T}.bbh:COT",
    "tydiqa_goldp": f"{_T}.tydiqa:GOLD_PASSAGE",
    "tydiqa_closedbook": f"{_T}.tydiqa:CLOSED_BOOK",
    "codex_pass1": f"{_T}.codex:PASS_AT_1",
    "codex_pass10": f"{_T}.codex:PASS_AT_10",
    "toxigen": f"{_T}.toxigen:TASK",
    "truthfulqa_mc": f"{_T}.truthfulqa:MULTIPLE_CHOICE",
    "truthfulqa_gen": f"{_T}.truthfulqa:GENERATION",
    "superni_0shot": f"{_T}.superni:ZERO_SHOT",
    "superni_2shot": f"{_T}.superni:TWO_SHOT",
    "unnatural": f"{_T}.unnatural:TASK",
})

# Group name -> tasks, in the column order of the Tülu paper's Table 8.
GROUPS: dict[str, tuple[str, ...]] = {
    "mmlu": ("mmlu_0shot", "mmlu_5shot"),
    "gsm": ("gsm_direct", "gsm_cot"),
    "bbh": ("bbh_direct", "bbh_cot"),
    "tydiqa": ("tydiqa_goldp", "tydiqa_closedbook"),
    "codex": ("codex_pass1", "codex_pass10"),
    "codex_eval": ("codex_pass1", "codex_pass10"),
    "humaneval": ("codex_pass1", "codex_pass10"),
    "truthfulqa": ("truthfulqa_mc", "truthfulqa_gen"),
    "superni": ("superni_0shot", "superni_2shot"),
    "tulu": ("mmlu_0shot", "mmlu_5shot", "gsm_direct", "gsm_cot", "bbh_direct", "bbh_cot", "tydiqa_goldp",
             "tydiqa_closedbook", "codex_pass1", "codex_pass10", "toxigen", "truthfulqa_mc", "truthfulqa_gen"),
}
# The shipped-data benchmarks (no --data-dir, no judge or classifier needed).
GROUPS["shipped"] = ("mmlu_0shot", "mmlu_5shot", "gsm_direct", "gsm_cot", "bbh_direct", "bbh_cot",
                     "codex_pass1", "codex_pass10", "truthfulqa_mc")


def expand_tasks(spec: str | list[str]) -> list[str]:
    """`"mmlu,gsm_cot"` -> ["mmlu_0shot", "mmlu_5shot", "gsm_cot"] (order kept, no repeats)."""
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    if not names:
        raise ConfigError("--tasks: name at least one task")
    out: list[str] = []
    for name in names:
        members = GROUPS.get(name, (name,))
        for member in members:
            if member not in TASKS:
                known = TASKS.names() + sorted(GROUPS)
                raise ConfigError(f"--tasks: unknown task {member!r}{did_you_mean(member, known)}; "
                                  f"known: {', '.join(known)}")
            if member not in out:
                out.append(member)
    return out
