"""Shared helpers of the human-evaluation tests: study inputs, sign-in, CSRF, a live server.

The browser and PostgreSQL tests find their tools the way `.ci/run` sets them up:
DROVER_TEST_CHROMIUM (default /usr/bin/chromium) and DROVER_TEST_PG_DSN (a SQLAlchemy URL
of a database the tests may fill). Where one is missing the test is skipped locally but
fails under CI=true, so CI can never pass by skipping them.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from drover.human.create import StudyConfig, create_study

SRC = str(Path(__file__).resolve().parents[1] / "src")


def require(what: str, available: bool) -> None:
    """Skip (locally) or fail (CI=true) when a tool a test needs is missing."""
    if available:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is missing under CI=true: .ci/run must install and start it")
    pytest.skip(f"{what} not available")


def chromium_path() -> str:
    path = os.environ.get("DROVER_TEST_CHROMIUM", "/usr/bin/chromium")
    try:
        import playwright  # noqa: F401
        ok = Path(path).is_file()
    except ImportError:
        ok = False
    require(f"Chromium ({path}) with Playwright", ok)
    return path


def pg_url() -> str:
    """A clean PostgreSQL database URL (every table of a previous test dropped)."""
    url = os.environ.get("DROVER_TEST_PG_DSN", "")
    require("PostgreSQL (DROVER_TEST_PG_DSN)", bool(url))
    from sqlalchemy import create_engine

    from drover.human import db

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            db.metadata.drop_all(conn)
    except Exception as exc:  # the server is not reachable: the same as missing
        require(f"PostgreSQL at {url} ({exc.__class__.__name__})", False)
    finally:
        engine.dispose()
    return url


def write_outputs(directory: Path, n: int, name: str, prompt: str = "Question {i}?", answer: str = "{name} says {i}",
                  ids: list[str] | None = None) -> Path:
    path = directory / f"{name}.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            rid = ids[i] if ids else f"q{i}"
            f.write(json.dumps({"id": rid, "messages": [
                {"role": "user", "content": prompt.format(i=i)},
                {"role": "assistant", "content": answer.format(i=i, name=name)}]}) + "\n")
    return path


def make_study(tmp: Path, form: str = "tulu", n: int = 4, raters: tuple[str, ...] = ("alice", "bob"),
               overlap: int = 0, per_item: int = 1, db: str = "", **outputs: str) -> tuple[Path, dict[str, str]]:
    """A study over `n` prompts of systems "sysa" and "sysb"; returns (directory, tokens)."""
    a = write_outputs(tmp, n, "sysa", **{k[2:]: v for k, v in outputs.items() if k.startswith("a_")})
    b = write_outputs(tmp, n, "sysb", **{k[2:]: v for k, v in outputs.items() if k.startswith("b_")})
    out, _, tokens = create_study(StudyConfig(a=str(a), b=str(b), out=str(tmp / "study"), form=form,
                                              raters=list(raters), per_item=per_item, overlap=overlap, db=db))
    return out, tokens


def url_of(study, item_id: str) -> str:
    """An item's page: /item/<its place in the study>."""
    return f"/item/{study.item(item_id).position}"


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def version_of(html: str) -> str:
    match = re.search(r'name="version" value="(\d+)"', html)
    assert match
    return match.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """`drover human serve STUDY` as a real process on 127.0.0.1 (stop/start = a restart)."""

    def __init__(self, study: Path, port: int | None = None):
        self.study, self.port = study, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "LiveServer":
        env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen([sys.executable, "-m", "drover", "human", "serve", str(self.study),
                                      "--port", str(self.port)], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stdout.read().decode()}")
            try:
                httpx.get(self.url + "/login", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None
