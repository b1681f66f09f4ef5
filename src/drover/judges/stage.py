"""The judge stage: one typed config, one run loop, one result writer for every judge.

`run_judge(config)` looks the judge up in the registry, loads what it judges, and builds
the result key from content: the judge's identity (endpoint URL + served model name; a
local model's directory fingerprint, chat template, max length and dtype), the judge's
settings, the options that change verdicts (temperature, max tokens, constraints) and
the digest of the answers judged. A finished result with the same key and no failures is
kept as it is; anything else is (re)judged, reusing every stored judgment whose content
key still matches (see `runner.run_calls`). The result goes through `drover.results`:

    RUN/eval/<model-slug>/<name>.json            kind "judge": metrics, standard_errors, n,
                                                 failures, usage (this run) and cost (all judgments)
    RUN/eval/<model-slug>/<name>.examples.jsonl  one line per judgment (raw output, typed verdict, key)

Judge options (`judge_options.KEY=VALUE`) are the judge LLM's settings: concurrency,
rpm, tpm, max_retries, timeout, prices (any `LLMConfig` field), plus `temperature` and
`max_tokens`, which apply to every judge call (max tokens as a cap on the protocol's own).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drover.errors import ConfigError, DroverError

# Options that change what the judge says (in the result key); the rest only change how fast.
CALL_OPTIONS = ("temperature", "max_tokens")
# the judge LLM's other decoding defaults: they fill what a judge's requests leave unset (a
# seed, top_p, stop strings) and so change verdicts; and its `constraints` mode (off: every
# verdict free text, as constrain=false; on: no unconstrained fallback); keyed only when
# given, so the keys of results judged without them stay as they were
DECODING_OPTIONS = ("top_p", "stop", "seed", "n", "logprobs", "top_logprobs", "constraints")
PRICES = ("price_input_per_1k", "price_output_per_1k")


@dataclass
class JudgeConfig:
    """`drover judge KIND`: every default of the judge stage."""

    kind: str = ""  # a registry name: vicuna, alpaca-eval, mt-bench, rank, meta, bias
    judge: str | None = None  # the judge LLM spec (http://host:port/v1#model, openai:gpt-4, hf:PATH)
    run_dir: str = "runs/judge"
    name: str | None = None  # result name (default: the judge's, from its inputs)
    label: str | None = None  # the judged model's label in results and the report (e.g. train/sft/model);
    #                           default: from the answers (drover's "teacher:SPEC" source as a model label)
    limit: int | None = None  # judge only the first N items
    constrain: bool = True  # ask the endpoint to constrain every verdict to its declared shape
    force: bool = False  # re-judge even when a finished result with the same key exists
    judge_options: dict[str, Any] = field(default_factory=dict)  # LLMConfig fields + temperature, max_tokens
    settings: dict[str, Any] = field(default_factory=dict)  # the judge's own Settings fields

    def validate(self) -> None:
        from drover.llm.config import LLMConfig

        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"judge: limit: must be at least 1 (got {self.limit})")
        known = {f.name for f in dataclasses.fields(LLMConfig)}
        for key, value in self.judge_options.items():
            if key not in known:
                from drover.errors import did_you_mean

                raise ConfigError(f"judge: judge_options.{key}: unknown option{did_you_mean(key, known)}; "
                                  f"e.g. concurrency, rpm, tpm, max_retries, timeout, temperature, max_tokens, "
                                  f"price_input_per_1k, price_output_per_1k")
            least = {"concurrency": 1, "max_tokens": 1, "max_retries": 0}.get(key)
            if least is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
                raise ConfigError(f"judge: judge_options.{key}: must be an integer >= {least} (got {value!r})")
            if key in ("temperature", "top_p") and isinstance(value, int) and not isinstance(value, bool):
                # `temperature=1` is 1.0: one setting, one result key and one cached answer
                self.judge_options[key] = float(value)


def judge_identity(llm_config: Any) -> dict[str, Any]:
    """Who judges, by content: `LLMConfig.identity()` (endpoint URL + served name, a recipe
    service's declared identity, or a local model's fingerprint, template, length, dtype)."""
    return llm_config.identity()


def protocol(judge: Any) -> dict[str, str]:
    """The judge's protocol by content: its module with the parser and metric modules it
    imports, and the shipped files it declares (`Judge.shipped`). A corrected prompt or
    verdict parser judges again instead of reporting the old verdicts as done."""
    from drover.identity import module_fingerprint, path_fingerprint
    from drover.judges.files import RESOURCES

    return {"code": module_fingerprint(type(judge).__module__),
            **{f"shipped:{rel}": path_fingerprint(RESOURCES.joinpath(*rel.split("/"))) for rel in judge.shipped}}


def result_key(config: JudgeConfig, settings: Any, content: Any, identity: Any, judge: Any) -> str:
    from drover.identity import digest

    return digest({"kind": config.kind, "judge": identity, "settings": dataclasses.asdict(settings),
                   "limit": config.limit, "constrain": config.constrain, "content": content,
                   "options": {**{k: config.judge_options.get(k) for k in CALL_OPTIONS},
                               **{k: config.judge_options[k] for k in DECODING_OPTIONS if k in config.judge_options}},
                   "protocol": protocol(judge)})


def _settings(judge: Any, config: JudgeConfig) -> Any:
    from drover.config import from_dict
    from drover.judges.judge import setting_options

    settings = from_dict(judge.Settings, dict(config.settings), where=f"judge {config.kind}")
    for f, meta in setting_options(judge.Settings):
        if meta["required"] and not getattr(settings, f.name):
            raise ConfigError(f"judge {config.kind}: --{f.name.replace('_', '-')} is required ({meta['help']})")
    return settings


def _open_llm(config: JudgeConfig, cache: Path) -> Any:
    from drover.llm.client import LLM
    from drover.llm.config import LLMConfig

    if not config.judge:
        raise ConfigError(f"judge {config.kind}: --judge SPEC is required (e.g. http://127.0.0.1:8000/v1#model)")
    options = {k: v for k, v in config.judge_options.items() if k not in CALL_OPTIONS}
    return LLM(LLMConfig.from_spec(config.judge, **options), cache_path=cache)


def answers_label(label: str, run_root: Path) -> str:
    """The judged model's row name: drover's generate stages record their answers' source as
    "teacher:SPEC"; SPEC is then named as `drover eval` names it (a model directory relative to
    the run), so a model's benchmark and judge results share one row in the report."""
    from drover.results import model_label

    return model_label(label.removeprefix("teacher:"), run_root)


def cost(judgments: list[Any], llm_config: Any) -> dict[str, float]:
    """Tokens and price of every judgment in the result (cached ones included, at today's prices)."""
    prompt = sum(j.usage.get("prompt_tokens", 0) for j in judgments)
    completion = sum(j.usage.get("completion_tokens", 0) for j in judgments)
    usd = (prompt * llm_config.price_input_per_1k + completion * llm_config.price_output_per_1k) / 1000.0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "usd": usd}


def run_judge(config: JudgeConfig, open_llm: Any = None, log: Any = print) -> dict[str, Any]:
    """Judge, aggregate and write one result; returns the record. `open_llm(config, cache)` is for tests."""
    from drover.judges.judge import JudgeContext
    from drover.judges.registry import JUDGES
    from drover.results import examples_path, find_result, result_path, write_result
    from drover.runs import RunDir, report_stage

    config.validate()  # (again, for callers that build the config by hand): options checked and normalised
    judge = JUDGES.get(config.kind)
    settings = _settings(judge, config)
    if config.limit is not None and hasattr(settings, "limit"):
        settings = dataclasses.replace(settings, limit=config.limit)
    inputs = judge.load(settings)  # every input error before any request
    name = config.name or inputs.default_name
    run = RunDir(config.run_dir).ensure()
    if config.label or inputs.label:
        inputs.label = answers_label(config.label or inputs.label, run.root)
    start = time.time()
    llm = (open_llm or _open_llm)(config, run.llm_cache) if judge.uses_llm else None
    try:
        if inputs.label is None:  # the judge itself is evaluated
            inputs.label = llm.config.model if llm is not None else config.kind
        identity = judge_identity(llm.config) if llm is not None else None
        key = result_key(config, settings, inputs.content, identity, judge)
        if not config.force:
            _refuse_another_judges_result(result_path(run.root, inputs.label, name), identity,
                                          llm.config.model if llm is not None else None)
        previous = None if config.force else find_result(run.root, inputs.label, name, key)
        if previous is not None:
            log(f"judge {config.kind}: done already for these answers and settings "
                f"({run.root / previous['examples_file']}); re-run with force=true to judge again")
            report_stage(outputs=[result_path(run.root, inputs.label, name)])
            return previous
        ctx = None if llm is None else JudgeContext(
            llm, llm.config.model, identity, examples_path(run.root, inputs.label, name),
            temperature=config.judge_options.get("temperature"), max_tokens=config.judge_options.get("max_tokens"),
            constrain=config.constrain)
        output = judge.judge(ctx, settings, inputs)
        judgments = ctx.judgments if ctx is not None else []
        record = _record(config, judge, settings, inputs, name, key, output, judgments, llm)
    finally:
        if llm is not None:
            llm.close()
    record["time_s"] = round(time.time() - start, 3)
    _write_extra_files(run.root, record, output, inputs.label, name)
    path = write_result(run.root, record, [j.to_dict() for j in judgments])
    report_stage(outputs=[path])
    record["examples_file"] = str(Path(path).parent.relative_to(run.root) / f"{name}.examples.jsonl")
    if output.message:
        log(output.message)
    _summary(record, path, log)
    return record


def _refuse_another_judges_result(path: Path, identity: Any, judge: str | None) -> None:
    """Refuse, before any request, to replace the verdicts of *another* judge stored under the
    same result name for these answers: the default name says which protocol, not who judged,
    so a second judge would otherwise silently take the first one's place in the report."""
    from drover.results import read_result

    if not path.exists():
        return
    try:
        old = read_result(path)
    except DroverError:
        return  # a torn or foreign file is recomputed, then replaced (as find_result does)
    from drover.identity import digest

    if old.get("kind") == "judge" and digest(old.get("judge_identity")) != digest(identity):
        raise ConfigError(f"{path}: holds the verdicts of judge {old.get('judge')!r}, and {judge!r} is another "
                          f"judge; give it its own --name (or force=true to replace that result)")


def _record(config: JudgeConfig, judge: Any, settings: Any, inputs: Any, name: str, key: str, output: Any,
            judgments: list[Any], llm: Any) -> dict[str, Any]:
    """The result record (the keys `drover.results` documents, plus the judge's own)."""
    from drover.identity import digest
    from drover.judges.runner import failures

    failed = failures(judgments)
    return {
        "kind": "judge", "name": name, "task": judge.task_for(settings), "judge_kind": judge.name,
        "model": {"label": inputs.label, "spec": inputs.label, "fingerprint": digest(inputs.content)},
        "judge": llm.config.model if llm is not None else None,
        "judge_identity": judge_identity(llm.config) if llm is not None else None, "key": key,
        "metrics": {k: (None if v is None else float(v)) for k, v in output.metrics.items()},
        "standard_errors": {k: float(v) for k, v in output.standard_errors.items()},
        "primary_metric": judge.primary(settings, inputs), "higher_is_better": judge.higher_is_better,
        "breakdown": {**output.breakdown, "failures": failed},
        "settings": {**dataclasses.asdict(settings), **output.settings, "constrain": config.constrain,
                     "limit": config.limit, "judge_options": dict(config.judge_options)},
        "n": output.n_examples, "n_examples": output.n_examples, "n_judgments": len(judgments),
        "failures": len(failed), "request_errors": sum(f["kind"] == "request_error" for f in failed),
        "usage": llm.stats.to_dict() if llm is not None else {},
        "cost": cost(judgments, llm.config) if llm is not None else {"prompt_tokens": 0, "completion_tokens": 0,
                                                                     "usd": 0.0},
    }


def _write_extra_files(root: Path, record: dict[str, Any], output: Any, label: str, name: str) -> None:
    """A judge's extra JSON (alpaca_eval annotations) one level below the results (never read as a record)."""
    from drover.atomic import write_json
    from drover.results import result_path, strict

    for folder, content in output.extra_files.items():
        extra = result_path(root, label, name).parent / folder / f"{name}.json"
        write_json(extra, strict(content), indent=None)
        record["settings"].setdefault("files", {})[folder] = str(extra.relative_to(root))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() and abs(value) >= 1 else f"{value:.4g}"
    return str(value)


def _summary(record: dict[str, Any], path: Path, log: Any) -> None:
    metrics = record["metrics"]
    width = max((len(k) for k in metrics), default=10)
    log(f"{'metric':<{width}}  value")
    for key, value in metrics.items():
        se = record["standard_errors"].get(key)
        log(f"{key:<{width}}  {_fmt(value)}" + (f" ± {se:.2f}" if se is not None else ""))
    failed = record["breakdown"].get("failures") or []
    if failed:
        log(f"{len(failed)} of {record['n_judgments']} judgments failed ({record['request_errors']} request errors; "
            f"listed under breakdown.failures), e.g. {failed[0]['id']}: {failed[0]['reason']}")
    usage, spent = record.get("usage") or {}, record["cost"]
    if usage:
        log(f"requests: {usage.get('misses', 0)} new, {usage.get('hits', 0)} cached; tokens "
            f"{spent['prompt_tokens']} in / {spent['completion_tokens']} out; cost ${spent['usd']:.4f} "
            f"(this run ${usage.get('cost', 0.0):.4f})")
    log(f"result: {path}")
