"""`run_training(config)`: everything a training command does, for every objective.

Checks come first and cost nothing: the objective name, a resume directory, every dataset
name, the model and tokenizer paths, then every record (before the model is loaded). Only
then does the engine start. `drover sft`, `drover reward` and `drover tune` all call this.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from drover.errors import DataError
from drover.runs import RunDir


def prepare_examples(config: Any, spec: Any, tokenizer: Any, run: RunDir) -> tuple[list, list, Any]:
    """Training and held-out examples for `spec` (all checks before any training)."""
    from drover.train import mixture
    from drover.train.data import build_examples, split_eval

    dirs = [Path(d) for d in config.data_dirs] + [run.data]
    srcs = mixture.sources(config.data, config.mixture, dirs)
    eval_paths = [mixture.resolve(name, dirs) for name in config.eval_data]
    records = [r for src in srcs for r in mixture.load(src, config.seed)]
    examples, report = build_examples(records, spec, tokenizer, config.max_length, config.on_bad_records)
    eval_examples: list = []
    if eval_paths:
        eval_records = [r for p in eval_paths for r in mixture.load(mixture.DataSource(str(p), p), config.seed)]
        eval_examples, _ = build_examples(eval_records, spec, tokenizer, config.max_length, config.on_bad_records)
    elif config.eval_fraction > 0:
        examples, eval_examples = split_eval(examples, config.eval_fraction, config.seed)
        if not examples:
            raise DataError(f"eval_fraction={config.eval_fraction} leaves no training examples")
    return examples, eval_examples, report


def start_fresh(run: RunDir) -> None:
    """`--force`: remove what a previous training wrote into this run directory."""
    import shutil

    for path in (run.checkpoints, run.root / "model"):
        shutil.rmtree(path, ignore_errors=True)
    run.log_path.unlink(missing_ok=True)


def data_inputs(config: Any, run: RunDir) -> list[str]:
    """The files a training config reads (model, tokenizer, reference, every data source)."""
    from drover.train import mixture

    dirs = [Path(d) for d in config.data_dirs] + [run.data]
    paths = [str(src.path) for src in mixture.sources(config.data, config.mixture, dirs)]
    paths += [str(mixture.resolve(name, dirs)) for name in config.eval_data]
    models = [config.model, config.tokenizer_path] + ([config.reference_path] if config.reference_model else [])
    return list(dict.fromkeys([m for m in models if Path(m).exists()] + paths))


def run_training(config: Any, echo: bool = True) -> Path:
    """Train `config.model` with `config.objective`; returns the final model directory.

    A resume is checked (`train.resume`) before anything is written: a refused one leaves
    the run directory exactly as it was."""
    from drover.identity import path_fingerprint
    from drover.models import load_tokenizer
    from drover.provenance import provenance, stamp_model
    from drover.runs import report_stage
    from drover.train import checkpoint, resume
    from drover.train.data import examples_hash
    from drover.train.objectives import get_objective

    config.validate()
    spec = get_objective(config.objective)
    run = RunDir(config.run_dir)  # created only once every check has passed
    force = getattr(config, "force", False)
    resume_from = None if force else checkpoint.resolve_resume(getattr(config, "resume_from", ""), run.checkpoints)
    saved = checkpoint.read_state(resume_from) if resume_from is not None else None
    if saved is not None:
        resume.check_settings(saved, config, resume_from)
    tokenizer = load_tokenizer(config.tokenizer_path, config.chat_template, allow_download=config.allow_download)
    examples, eval_examples, report = prepare_examples(config, spec, tokenizer, run)
    if saved is not None:
        resume.check_data(saved, examples_hash(examples), config, resume_from)
    inputs = data_inputs(config, run)
    report_stage(inputs=inputs)

    from drover.train.engine import Engine

    started = time.time()
    plan_check = (lambda total, warmup: resume.check_plan(saved, config, resume_from, total, warmup)) if saved else None
    engine = Engine(config, spec, examples, eval_examples, tokenizer, run, check_plan=plan_check)
    if resume_from is not None:
        engine.check_layout(resume_from)  # a different process layout is refused before any file changes
    if engine.accelerator.is_main_process:
        if force:
            start_fresh(run)
        run.ensure().save_config(config)
        # The steps after the checkpoint (all of them when a killed run left none) are redone
        # and logged again: one line per step, however the earlier run ended.
        run.truncate_log(saved.step if saved is not None else 0)
    engine.accelerator.wait_for_everyone()
    if resume_from is not None and echo and engine.accelerator.is_main_process:
        print(f"drover {spec.name}: resuming from {resume_from}", file=sys.stderr)
    result = engine.train(resume_from)
    summary = {"objective": spec.name, "steps": result.steps, "tokens": result.tokens,
               "seconds": round(result.seconds, 2), "tokens_per_s": round(result.tokens_per_s, 1),
               "loss": result.loss, "mfu": round(result.mfu, 4), "matmul_gflops": round(result.matmul_gflops, 1),
               "attention": result.attention, "data": report.summary(), "model": str(result.model_dir or ""),
               **result.metrics}
    if engine.accelerator.is_main_process:
        run.log("summary", wall_seconds=round(time.time() - started, 2), **summary)
        if result.model_dir is not None:
            acc = engine.accelerator
            record = provenance(config, inputs={p: path_fingerprint(p) for p in inputs}, device=str(acc.device),
                                precision=acc.mixed_precision)
            summary["model_fingerprint"] = stamp_model(result.model_dir, {**record, "summary": summary})
            run.mark_done(f"train-{spec.name}", config, summary)
        if echo:
            print(_summary_text(summary), file=sys.stderr)
    return result.model_dir if result.model_dir is not None else run.checkpoints


def _summary_text(s: dict) -> str:
    where = s["model"] or "(stopped early: checkpoints only)"
    lines = [f"drover {s['objective']}: {s['steps']} steps, {s['tokens']:,} target tokens in {s['seconds']:.1f} s "
             f"({s['tokens_per_s']:,.0f} tokens/s), "
             + (f"final loss {s['loss']:.4f}" if s["loss"] is not None else "no step left to train (resumed at its end)"),
             f"  compute: MFU {s['mfu']:.1%} of this process's measured matmul rate "
             f"({s['matmul_gflops']:,.0f} GFLOP/s), attention {s['attention']}",
             f"  data: {s['data']}", f"  model: {where}"]
    lines += [f"  {k}: {v:.4f}" for k, v in s.items() if k.startswith("eval_")]
    return "\n".join(lines)
