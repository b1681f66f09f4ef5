"""The HumanEval sandbox: canonical solutions pass, wrong ones fail, hostile programs are contained."""

from __future__ import annotations

import gzip
import json
import os
from importlib import resources
from pathlib import Path

import pytest

from drover.evaluate.sandbox import Limits, humaneval_program, isolation_report, run_program, run_programs

FAST = Limits(timeout_s=2.0, memory_mb=512, cpu_s=4, file_mb=1, max_processes=32)
IS_ROOT = os.geteuid() == 0


def _problems() -> list[dict]:
    path = resources.files("drover").joinpath("resources", "data", "humaneval", "HumanEval.jsonl.gz")
    with gzip.open(str(path), "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _processes_of(uid: int) -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("Uid:") and int(line.split()[1]) == uid:
                    pids.add(int(entry.name))
        except (OSError, ValueError):
            continue
    return pids


@pytest.mark.slow
def test_all_canonical_solutions_pass_and_wrong_ones_fail():
    problems = _problems()
    assert len(problems) == 164
    programs = [humaneval_program(p, p["canonical_solution"]) for p in problems]
    # Deliberately wrong: the first problem's body returns a constant.
    programs.append(humaneval_program(problems[0], "    return False\n"))
    programs.append(humaneval_program(problems[2], "    return number\n"))
    results = run_programs(programs, Limits(timeout_s=10.0))
    failed = [(p["task_id"], r.detail) for p, r in zip(problems, results) if not r.passed]
    assert failed == []
    assert [r.status for r in results[-2:]] == ["failed", "failed"]
    assert "AssertionError" in results[-1].detail


def test_early_exit_cannot_fake_a_pass():
    assert run_program("print('ok')", FAST).passed
    for source in ("import sys; sys.exit(0)", "import os; os._exit(0)", "raise KeyboardInterrupt",
                   "print('ok'); import os; os.kill(os.getpid(), 9)"):
        result = run_program(source, FAST)
        assert result.status == "failed", source


def test_infinite_loop_times_out():
    result = run_program("while True:\n    pass\n", Limits(timeout_s=1.0, cpu_s=5))
    assert result.status == "timeout"
    assert result.time_s < 5


def test_huge_allocation_is_refused():
    result = run_program("x = bytearray(10 * 1024 ** 3)\n", FAST)
    assert result.status == "failed" and "MemoryError" in result.detail
    result = run_program("chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024 ** 2))\n", FAST)
    assert not result.passed


def test_big_file_is_refused():
    result = run_program("with open('big', 'wb') as f:\n    f.write(b'x' * (5 * 1024 ** 2))\n", FAST)
    assert not result.passed


def test_fork_bomb_is_contained_and_leaves_no_process():
    uid = 65534 if IS_ROOT else os.getuid()
    before = _processes_of(uid)
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = run_program(bomb, Limits(timeout_s=1.5, memory_mb=256, cpu_s=3, max_processes=16))
    assert not result.passed
    if IS_ROOT:  # as another user, the test's own processes would be counted
        assert _processes_of(uid) - before == set()
    # The sandbox still works afterwards.
    assert run_program("print(1)", FAST).passed


def test_network_is_unreachable():
    if not isolation_report(FAST)["namespaces"]:
        pytest.skip("unshare is not available here")
    source = "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=3)\n"
    result = run_program(source, FAST)
    assert result.status == "failed" and "unreachable" in result.detail.lower()
    server = "import socket\ns = socket.socket()\ns.bind(('0.0.0.0', 0))\ns.listen()\nprint(s.getsockname())\n"
    assert run_program(server, FAST).passed  # a loopback socket in its own namespace is harmless
    assert not run_program(source.replace("1.1.1.1", "127.0.0.1").replace("80", "22"), FAST).passed


@pytest.mark.skipif(not IS_ROOT, reason="privilege drop needs root")
def test_host_files_are_unharmed(tmp_path):
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep me")
    attacks = [
        f"open({str(sentinel)!r}, 'w').write('gone')",
        f"import os\nos.remove({str(sentinel)!r})",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
        f"open({str(tmp_path / 'new.txt')!r}, 'w').write('x')",
        "open('/tmp/drover-sandbox-escape.txt', 'w').write('x')",
        "open('/dev/shm/drover-sandbox-escape.txt', 'w').write('x')",
        f"import os\nos.chmod({str(sentinel)!r}, 0o777)",
    ]
    results = run_programs(attacks, FAST)
    assert [r.status for r in results] == ["failed"] * len(attacks)
    assert sentinel.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sentinel.txt"]
    assert not Path("/tmp/drover-sandbox-escape.txt").exists()
    assert not Path("/dev/shm/drover-sandbox-escape.txt").exists()
    # Writing inside its own working directory is allowed.
    assert run_program("open('scratch.txt', 'w').write('x')\nimport os\nos.remove('scratch.txt')", FAST).passed
