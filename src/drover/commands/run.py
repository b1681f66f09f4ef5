"""Run a recipe: its stages in order, as resumable stages.

    drover run quickstart                       # a recipe shipped with drover
    drover run recipes/gpt4-llm.yaml vars.teacher=openai:gpt-4 run_dir=runs/g4
    drover run tulu --only sft,eval             # some stages only
    drover run tulu --list                      # show the stages and which are done

A finished stage is skipped while its command line and the content of its inputs are
unchanged, so re-running the same command after a crash or Ctrl-C continues where it
stopped, and retraining a model re-runs exactly the stages that read it. A stage whose
items failed is not done: the run exits 1 with the count, and a re-run retries them.
"""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="a recipe YAML path or the name of a shipped recipe")
    parser.add_argument("overrides", nargs="*", help="key=value overrides (e.g. run_dir=runs/x vars.model=PATH)")
    parser.add_argument("--only", default="", help="comma-separated stage names to run")
    parser.add_argument("--force", action="store_true",
                        help="re-run every stage from scratch, even those marked done")
    parser.add_argument("--list", action="store_true", help="list the stages and their status, run nothing")


def run(args: argparse.Namespace) -> int:
    from drover.errors import ConfigError, did_you_mean
    from drover.recipes import base_variables, load_recipe, run_recipe, stage_key
    from drover.runs import RunDir

    recipe = load_recipe(args.recipe, args.overrides)
    variables = base_variables(recipe)
    if args.list:
        run_dir = RunDir(variables["run_dir"])
        for stage in recipe.stages:  # todo, done, stale (inputs or settings changed), failed, missing (outputs)
            state = run_dir.stage_state(stage.name, stage_key(recipe, stage, variables, run_dir.root))
            print(f"{state:<8} {stage.name:<18} drover {stage.command} {' '.join(stage.args)}")
        return 0
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    names = [stage.name for stage in recipe.stages]
    for name in only:
        if name not in names:
            raise ConfigError(f"--only: recipe {recipe.name!r} has no stage {name!r}{did_you_mean(name, names)}; "
                              f"stages: {', '.join(names)}")
    print(f"drover run {recipe.name}: {len(recipe.stages)} stages into {variables['run_dir']}")
    if recipe.description:
        print(recipe.description.strip())
    start = time.monotonic()
    rows = run_recipe(recipe, only=only, force=args.force)
    total = time.monotonic() - start
    print(f"\n{recipe.name}: finished in {total / 60:.1f} min")
    for row in rows:
        status = f"failed ({row.failed} items)" if row.status == "failed" else row.status
        print(f"  {row.name:<18} {status:<18} {row.seconds:7.1f}s")
    report = RunDir(variables["run_dir"]).root / "report.html"
    if report.exists():
        print(f"report: {report.resolve()}")
    failed = [row for row in rows if row.status == "failed"]
    if failed:
        print(f"{sum(r.failed for r in failed)} item(s) failed in {len(failed)} stage(s) "
              f"({', '.join(r.name for r in failed)}); re-run the same command to retry them")
        return 1
    return 0
