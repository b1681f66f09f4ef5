"""The import layering of drover's packages (issue #15: generation and scoring below train and infer).

Every `import` counts, including those inside functions (drover imports heavy modules
lazily, so a module-level check alone would miss most edges). Lower layers first; a package
may import its own layer and those below, never one above:

    completions (leaf vocabulary) < local (engine) < llm (client) < judges < rewards < train < infer < commands

(judges sit below evaluate too: TruthfulQA's generation benchmark judges with them.) And no two
top-level packages or modules import each other, directly or around a loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

import drover

SRC = Path(drover.__file__).resolve().parent

# package -> the drover packages it must never import (anything above it).
ABOVE = {
    "completions": {"local", "llm", "judges", "rewards", "train", "infer", "evaluate", "generate", "commands",
                    "recipes", "report", "human"},
    "local": {"llm", "judges", "rewards", "train", "infer", "evaluate", "generate", "commands", "recipes",
              "report", "human"},
    "llm": {"judges", "rewards", "train", "infer", "evaluate", "generate", "commands", "recipes", "report", "human"},
    "judges": {"rewards", "train", "infer", "evaluate", "generate", "commands", "recipes", "report", "human"},
    "rewards": {"train", "infer", "commands", "recipes", "report", "human"},
    "train": {"infer", "commands", "recipes", "report", "human"},
    "infer": {"commands", "recipes", "report", "human"},
}


def _package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if rel.parts else ""


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "drover":
                found += [(node.lineno, f"drover.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, name) for line, name in found if name.startswith("drover.")]


def upward_imports() -> list[str]:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        pkg = _package(path)
        for line, name in _imports(path):
            target = name.split(".")[1]
            if target in ABOVE.get(pkg, ()):
                bad.append(f"{path.relative_to(SRC)}:{line}: {pkg} imports {name}")
    return bad


def test_no_import_runs_up_the_layers():
    assert upward_imports() == []


def test_completions_is_a_leaf():
    assert [name for _, name in _imports(SRC / "completions.py")] == []


def test_the_check_sees_function_level_imports(tmp_path):
    """The checker itself: a lazy upward import inside a function is reported."""
    fake = tmp_path / "drover"
    (fake / "local").mkdir(parents=True)
    (fake / "local" / "x.py").write_text("def f():\n    from drover.train.engine import Engine\n")
    global SRC
    saved, SRC = SRC, fake
    try:
        assert upward_imports() == ["local/x.py:2: local imports drover.train.engine"]
    finally:
        SRC = saved


def test_the_engine_modules_left_infer_and_train():
    """The decode loop, scoring and reward scoring live once, in drover.local."""
    for gone in ("infer/generation.py", "infer/kv_slots.py", "infer/scoring.py", "infer/constrained.py",
                 "infer/reward_scorer.py", "train/scalar.py", "train/logprobs.py", "train/attention.py",
                 "llm/types.py", "train/expert_iteration.py"):
        assert not (SRC / gone).exists(), gone


def _package_graph() -> dict[str, set[str]]:
    """drover's top-level packages and modules -> those they import (function level included)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        pkg = _package(path)
        for _, name in _imports(path):
            target = name.split(".")[1]
            if target != pkg:
                graph.setdefault(pkg, set()).add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycle_between_packages():
    """No two top-level packages or modules import each other, directly or around a loop
    (e.g. judges <-> evaluate, formats -> models -> templates -> formats, both gone)."""
    assert _cycles(_package_graph()) == []


def test_the_cycle_check_sees_a_loop():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
