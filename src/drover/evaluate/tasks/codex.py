"""Codex-Eval: HumanEval (Chen et al. 2021) pass@1 and pass@10, as the Tülu evaluation.

Protocol: allenai/open-instruct `eval/codex_humaneval/run_eval.py`, main(), at the
Tülu-1-era commit cd06c6fb0 (July 2023); execution and pass@k as openai/human-eval
(`execution.py` check_correctness, `evaluation.py` estimate_pass_at_k).
n = 20 samples per problem (top-p 0.95; temperature 0.1 for the pass@1 run, 0.8 for the
pass@10 run), at most 512 new tokens, stopped at the Codex paper's sequences ("\\nclass",
"\\ndef", "\\n#", "\\nif", "\\nprint"). Raw format: the prompt is the problem's code. Chat
formats: "Complete the following python function.\\n\\n\\n" + code as the user turn, and the
assistant turn starts with "Here is the completed function:\\n\\n\\n" + code, so the model
continues the function body. `--limit N`: `random.seed(42)` then `random.sample(problems,
N)` as the reference's --max_num_examples (`--seed` is the seed). Each sample runs with
the problem's tests in the sandbox (`drover.evaluate.sandbox`); scores are the unbiased
pass@k estimator (`drover.metrics.passk`), in percent.
Deliberate differences: each completion runs in drover's isolated sandbox (human-eval's
own is "not a security sandbox"); chat API models, which cannot continue an assistant
turn, answer the whole function and its code block is run. Optional: `code_fence=true`
opens a ```python block in the chat cue and also stops at "```".
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field

from drover.evaluate.sandbox import Limits, humaneval_job, isolation_report, run_many
from drover.evaluate.task import EvalContext, Task, TaskResult, resource_path, subsample
from drover.metrics.passk import mean_pass_at_k

STOPS = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
_FENCE = re.compile(r"```(?:python|py)?\n(.*?)(?:```|$)", re.DOTALL)


def load_problems() -> list[dict]:
    with gzip.open(resource_path("data", "humaneval", "HumanEval.jsonl.gz"), "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def job_for(problem: dict, completion: str, whole_function: bool) -> tuple[str, str]:
    """(code, tests) to run: prompt + completion (continuations), or, for chat API answers
    that restate the whole function in a code block, the prompt closed off and the code."""
    code_and_tests = humaneval_job(problem, completion)
    if not whole_function:
        return code_and_tests
    match = _FENCE.search(completion)
    code = match.group(1) if match else completion
    if f"def {problem['entry_point']}" not in code:
        return code_and_tests
    closed = problem["prompt"] + "    pass\n\n"
    return closed + code + "\n", code_and_tests[1]


@dataclass
class CodexSettings:
    temperature: float = 0.1
    top_p: float = 0.95
    code_fence: bool = False  # drover option: the chat cue opens a ```python block, "```" stops
    n: int = 20
    ks: list[int] = field(default_factory=lambda: [1, 10])
    max_tokens: int = 512
    limit: int | None = None
    timeout_s: float = 3.0
    memory_mb: int = 4096  # per process (RLIMIT_AS); human-eval's own guard allows a few GB
    total_memory_mb: int = 4096  # per sample, /tmp included, where a cgroup is writable
    unsafe_no_isolation: bool = False  # DANGEROUS: run model code unisolated where namespaces fail


class Codex(Task):
    Settings = CodexSettings
    shipped = ("data/humaneval/HumanEval.jsonl.gz",)

    def __init__(self, name: str, title: str, temperature: float, primary_k: int):
        self.name, self.title, self.temperature = name, title, temperature
        self.primary_metric = f"pass@{primary_k}"

    def default_settings(self) -> CodexSettings:
        return CodexSettings(temperature=self.temperature)

    def run(self, ctx: EvalContext, settings: CodexSettings) -> TaskResult:
        problems = subsample(load_problems(), settings.limit, ctx.options.seed)
        instruction = "Complete the following python function.\n\n\n"
        cue = "Here is the completed function:\n\n\n" + ("```python\n" if settings.code_fence else "")
        stops = STOPS + (["```"] if ctx.fmt.is_chat and settings.code_fence else [])
        prompts = [ctx.fmt.render(instruction + p["prompt"], chat_cue=cue + p["prompt"]) if ctx.fmt.is_chat
                   else ctx.fmt.render(p["prompt"]) for p in problems]
        whole = not all(isinstance(p, str) for p in prompts)
        requests = [ctx.fmt.request(prompt, key=p["task_id"], temperature=settings.temperature, top_p=settings.top_p,
                                    n=settings.n, max_tokens=settings.max_tokens,
                                    stop=None if whole else stops)
                    for prompt, p in zip(prompts, problems)]
        outputs = ctx.generate(requests, desc=self.name)
        jobs, owners = [], []
        for i, (problem, out) in enumerate(zip(problems, outputs)):
            for choice in out.choices:
                jobs.append(job_for(problem, choice.text, whole))
                owners.append(i)
        limits = Limits(timeout_s=settings.timeout_s, memory_mb=settings.memory_mb,
                        total_memory_mb=settings.total_memory_mb, unsafe_no_isolation=settings.unsafe_no_isolation)
        results = run_many(jobs, limits)
        per_problem: list[list] = [[] for _ in problems]
        for owner, result in zip(owners, results):
            per_problem[owner].append(result)
        examples, samples, correct = [], [], []
        for problem, prompt, out, runs in zip(problems, prompts, outputs, per_problem):
            c = sum(r.passed for r in runs)
            samples.append(len(runs))
            correct.append(c)
            examples.append({"id": problem["task_id"], "prompt": prompt,
                             "prediction": [ch.text for ch in out.choices],
                             "reference": problem["canonical_solution"], "n": len(runs), "correct": c,
                             "results": [{"status": r.status, "detail": r.detail[-200:]} for r in runs]})
        metrics = {f"pass@{k}": 100 * mean_pass_at_k(samples, correct, k)
                   for k in settings.ks if samples and k <= min(samples)}
        return TaskResult(metrics, examples, extra_settings={"sandbox": isolation_report(limits)})


PASS_AT_1 = Codex("codex_pass1", "Codex-Eval P@1", 0.1, 1)
PASS_AT_10 = Codex("codex_pass10", "Codex-Eval P@10", 0.8, 10)
