"""Recipes: a YAML list of drover commands run in order as resumable stages.

    name: quickstart
    run_dir: runs/quickstart
    vars: {model: "${run_dir}/models/base"}      # ${name} substitution, resolved in order
    services:                                     # background servers, started on demand
      teacher: {command: serve, args: ["${run_dir}/models/teacher", "--port", "${port}"]}
    stages:
      - {name: answers, command: generate, args: [answers, ...], uses: [teacher]}

Each stage runs `python -m drover <command> <args>` in a subprocess (a crash or
out-of-memory in one stage cannot corrupt the runner) and, on success, is marked done
in `RUN/stages/<name>.json`, keyed by content: its resolved command line (and those of
the services it uses) plus the fingerprints of its inputs. Inputs are the paths named
in its arguments that existed before it ran and that it did not change (a model
directory, a data file, a config file), plus what the command itself reports reading
(`runs.report_stage`: e.g. the datasets a training config names); paths it created or
changed are its outputs. A re-run skips a stage only when that key and every input's
fingerprint are unchanged: retraining a model re-runs every stage that reads it, and
nothing else. A stage that is re-run because its key changed starts fresh (its
command's `FRESH_FLAG`, e.g. `--force`), since resuming would mix settings. A stage whose
items failed is marked "failed": the next run retries it (only the failed items: done
records are kept) and `drover run` exits non-zero with the count. An interrupted stage
runs again and resumes from its own partial outputs (every long command is resumable).
`${drover_data}` is the directory of the datasets shipped with drover and
`${recipes}` that of the shipped recipes (e.g. `${recipes}/train/sft-tulu.yaml`);
`${services.NAME.url}` is the base URL of a started service (its `--port` is picked
free at start).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from drover.config import from_dict, merge_overrides, read_yaml
from drover.errors import ConfigError, DroverError
from drover.identity import digest
from drover.runs import RunDir, fingerprints, read_stage_report

ENDPOINTS_ENV = "DROVER_ENDPOINT_IDENTITIES"  # {base URL: identity} of the services a stage uses

RECIPES_DIR = Path(__file__).parent / "resources" / "recipes"
_VAR = re.compile(r"\$\{([A-Za-z0-9_.\-]+)\}")


@dataclass
class Service:
    command: str
    args: list[str] = field(default_factory=list)
    ready_path: str = "/v1/models"
    start_timeout: float = 180.0


@dataclass
class Stage:
    name: str
    command: str
    args: list[str] = field(default_factory=list)
    uses: list[str] = field(default_factory=list)
    description: str = ""
    always: bool = False  # run on every invocation (e.g. the report, which reads every other stage)


@dataclass
class Recipe:
    name: str
    run_dir: str
    stages: list[Stage]
    description: str = ""
    vars: dict[str, Any] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)

    def validate(self) -> None:
        from drover.cli import COMMANDS

        names = [s.name for s in self.stages]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConfigError(f"recipe {self.name}: duplicate stage names {sorted(dupes)}")
        for stage in self.stages:
            if stage.command not in COMMANDS:
                raise ConfigError(f"recipe {self.name}: stage {stage.name!r}: unknown command {stage.command!r}")
            for use in stage.uses:
                if use not in self.services:
                    raise ConfigError(f"recipe {self.name}: stage {stage.name!r} uses unknown service {use!r}")


def find_recipe(name_or_path: str) -> Path:
    """A path to a YAML file, or the name of a recipe shipped with drover."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = RECIPES_DIR / f"{name_or_path}.yaml"
    if shipped.exists():
        return shipped
    known = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    raise ConfigError(f"recipe {name_or_path!r} not found (not a file; shipped recipes: {', '.join(known)})")


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    path = find_recipe(name_or_path)
    data = merge_overrides(read_yaml(path), overrides or [])
    return from_dict(Recipe, data, where=str(path))


def resolve(text: str, variables: dict[str, Any], where: str, defer_services: bool = False) -> str:
    """Substitute ${name}; with `defer_services`, ${services.X.url} is left for later."""

    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in variables and defer_services and key.startswith("services."):
            return match.group(0)
        if key not in variables:
            raise ConfigError(f"{where}: unknown variable ${{{key}}} (known: {', '.join(sorted(variables))})")
        return str(variables[key])

    for _ in range(10):  # variables may refer to variables
        new = _VAR.sub(sub, text)
        if new == text:
            return new
        text = new
    return text


def base_variables(recipe: Recipe) -> dict[str, Any]:
    from drover.shipped import data_dir

    variables: dict[str, Any] = {"run_dir": recipe.run_dir, "python": sys.executable,
                                 "drover_data": str(data_dir()), "recipes": str(RECIPES_DIR)}
    variables["run_dir"] = resolve(recipe.run_dir, variables, "run_dir")
    for key, value in recipe.vars.items():
        variables[key] = resolve(str(value), variables, f"vars.{key}", defer_services=True)
    return variables


def thread_env(processes: int) -> dict[str, str]:
    """Environment that splits the CPU cores between `processes` concurrent torch processes.

    A stage and the services it talks to run at the same time; with every process
    using all cores, OpenMP threads spin against each other and small-model
    generation gets 10-30x slower (measured on 2 cores). Each process gets an equal
    share unless the user already set OMP_NUM_THREADS.
    """
    if "OMP_NUM_THREADS" in os.environ or processes <= 1:
        return {}
    share = max(1, (os.cpu_count() or 1) // processes)
    return {"OMP_NUM_THREADS": str(share), "MKL_NUM_THREADS": str(share)}


def _die_with_parent(parent: int) -> Callable[[], None]:
    """For the service's child process (a `preexec_fn`): get SIGTERM when the runner dies
    (Linux), so a SIGKILLed `drover run` does not leave orphaned servers holding memory and
    ports. A runner that died before the signal was armed (between fork and prctl) is caught
    by the parent check after it: the child is then already an orphan and exits. prctl is
    looked up here, in the runner: the child between fork and exec imports and loads nothing."""
    import signal

    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (ImportError, OSError, AttributeError):  # no _ctypes, no glibc: no signal to arm
        return lambda: None

    def arm() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return arm


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def start_service(name: str, service: Service, variables: dict[str, Any], log_dir: Path,
                  env: dict[str, str] | None = None) -> Iterator[str]:
    """Start a drover service (e.g. `serve`) on a free loopback port; yield its base URL."""
    import httpx

    port = _free_port()
    local = {**variables, "port": port}
    args = [resolve(a, local, f"services.{name}.args") for a in service.args]
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"service-{name}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "drover", service.command, *args],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **(env or {})},
                            preexec_fn=_die_with_parent(os.getpid()) if sys.platform.startswith("linux") else None)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + service.start_timeout
    try:
        while True:
            if proc.poll() is not None:
                raise DroverError(f"service {name!r} exited with code {proc.returncode}; "
                                  f"see {log_dir / f'service-{name}.log'}")
            try:
                if httpx.get(url.rsplit("/v1", 1)[0] + service.ready_path, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise DroverError(f"service {name!r} did not become ready in {service.start_timeout:.0f}s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def path_args(args: list[str], run_root: Path) -> list[str]:
    """The existing paths an argument list names (`PATH`, `key=PATH`, `key=[A,B]`, `--flag=PATH`,
    `hf:PATH`), leaving out the run directory itself and its parents (every stage writes below them)."""
    skip = {run_root.resolve(), *run_root.resolve().parents}
    found: list[str] = []
    for arg in args:
        values = [arg]
        if "=" in arg:
            values = [v.strip(" \"'") for v in arg.partition("=")[2].strip("[]").split(",")]
        for value in values:
            value = value.removeprefix("hf:")
            if not value or "://" in value or value.startswith("-"):
                continue
            path = Path(value)
            try:
                if path.exists() and path.resolve() not in skip and value not in found:
                    found.append(value)
            except OSError:
                continue
    return found


def fresh_flag(command: str) -> str | None:
    """The flag that makes `command` start over instead of resuming (its module's FRESH_FLAG)."""
    from drover.cli import COMMANDS

    module = importlib.import_module(COMMANDS[command][0])
    return getattr(module, "FRESH_FLAG", None)


def service_identity(name: str, service: Service, variables: dict[str, Any], run_root: Path) -> str:
    """A service's identity, stable across runs (its port is not in it): its command line
    and the fingerprints of the paths it names (e.g. the model it serves)."""
    args = [resolve(a, {**variables, "port": "<port>"}, f"services.{name}.args") for a in service.args]
    return digest({"command": service.command, "args": args, "inputs": fingerprints(path_args(args, run_root))})


def stage_key(recipe: Recipe, stage: Stage, variables: dict[str, Any], run_root: Path) -> dict[str, Any]:
    """What a stage's marker is keyed by: its command line with service URLs as placeholders
    (ports change between runs) and the identities of the services it uses."""
    key_vars = {**variables, **{f"services.{k}.url": f"<{k}>" for k in recipe.services}}
    args = [resolve(a, key_vars, f"stages.{stage.name}") for a in stage.args]
    used = {u: service_identity(u, recipe.services[u], variables, run_root) for u in stage.uses}
    return {"command": stage.command, "args": args, **({"services": used} if used else {})}


@dataclass
class StageRun:
    """What happened to one stage in a `drover run`."""

    name: str
    status: Literal["done", "skipped", "failed"]
    seconds: float = 0.0
    failed: int = 0  # items that failed (status "failed")


def run_recipe(recipe: Recipe, only: list[str] | None = None, force: bool = False,
               echo=print) -> list[StageRun]:
    """Run the stages in order; returns what happened to each."""
    variables = base_variables(recipe)
    run = RunDir(variables["run_dir"]).ensure()
    run.save_config(recipe)  # the recipe as run (overrides applied): RUN/config.yaml
    stages = [s for s in recipe.stages if not only or s.name in only]
    rows: list[StageRun] = []
    with ExitStack() as stack:
        started: dict[str, str] = {}
        identities: dict[str, str] = {}
        for index, stage in enumerate(stages, start=1):
            local = {**variables, **{f"services.{k}.url": v for k, v in started.items()}}
            key = stage_key(recipe, stage, variables, run.root)
            state = run.stage_state(stage.name, key)
            if not force and not stage.always and state == "done":
                echo(f"[{index}/{len(stages)}] {stage.name}: already done, skipped")
                rows.append(StageRun(stage.name, "skipped"))
                continue
            concurrent = 1 + len(stage.uses)  # idle services cost no CPU
            for use in stage.uses:
                if use not in started:
                    echo(f"  starting service {use!r} ...")
                    started[use] = stack.enter_context(
                        start_service(use, recipe.services[use], variables, run.root / "logs",
                                      env=thread_env(1 + len(recipe.services))))
                    identities[started[use]] = key["services"][use]
                    local[f"services.{use}.url"] = started[use]
            args = [resolve(a, local, f"stages.{stage.name}") for a in stage.args]
            flag = fresh_flag(stage.command) if (force or state == "stale") and not stage.always else None
            if flag and flag not in args:
                args.append(flag)  # what it did was computed from other inputs or settings
            candidates = path_args(key["args"], run.root)
            before = fingerprints(candidates)
            echo(f"[{index}/{len(stages)}] {stage.name}: drover {stage.command} {' '.join(args)}")
            status_file = run.status_file(stage.name)
            status_file.unlink(missing_ok=True)
            start = time.monotonic()
            env = {**os.environ, **thread_env(concurrent), "DROVER_STAGE": stage.name,
                   "DROVER_STAGE_STATUS": str(status_file),
                   ENDPOINTS_ENV: json.dumps({url: identities[url] for url in started.values()})}
            code = subprocess.call([sys.executable, "-m", "drover", stage.command, *args], env=env)
            seconds = time.monotonic() - start
            if code != 0:
                raise DroverError(f"stage {stage.name!r} failed (exit {code}); fix the cause and re-run "
                                  f"the same command: finished stages are skipped, this one resumes")
            report = read_stage_report(status_file)
            status_file.unlink(missing_ok=True)
            # Paths the stage created did not exist before it ran: named in its arguments, they
            # are outputs too (else a deleted output of a first run would never be noticed).
            after = fingerprints(list(dict.fromkeys([*candidates, *path_args(key["args"], run.root)])))
            inputs = {p: fp for p, fp in after.items() if before.get(p) == fp}
            inputs.update(fingerprints([p for p in report["inputs"] if p not in after]))
            outputs = [p for p in after if before.get(p) != after[p]]
            outputs += [p for p in report["outputs"] if p not in outputs]
            failed = report["failed"]
            run.mark_done(stage.name, key, {"seconds": round(seconds, 2)}, inputs=inputs, outputs=outputs,
                          failed=failed)
            run.log("stage", name=stage.name, seconds=seconds, failed=failed)
            rows.append(StageRun(stage.name, "failed" if failed else "done", seconds, failed))
            if failed:
                echo(f"[{index}/{len(stages)}] {stage.name}: {failed} item(s) failed; re-run to retry them")
    return rows
