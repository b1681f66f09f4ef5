"""The report's tables: models x benchmarks in Tülu Table 8 order, with uncertainty.

Every cell is `value [low, high]` (95% interval, method in `uncertainty`) and, for rows
other than the baseline, `(Δ vs baseline)`, marked `*` when the two-sided exact sign test
on the examples both models answered gives p < 0.05. Columns follow the Tülu paper's
Table 8 (the `tulu` task group of `drover.evaluate.registry`); the average is per
*benchmark* as there: the settings of one benchmark (MMLU 0- and 5-shot, ...) are
averaged first, then the benchmarks, over the higher-is-better benchmarks every row has.
Lower-is-better benchmarks (ToxiGen's % toxic) are shown but never averaged in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from drover.evaluate.registry import GROUPS
from drover.report.collect import Result
from drover.report.scores import MetricValues
from drover.report.uncertainty import ALPHA, sign_test

_COMPOSITE_GROUPS = ("tulu", "shipped")  # groups of benchmarks, not one benchmark's settings


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    csv_rows: list[list[Any]] = field(default_factory=list)  # unformatted values, for --leaderboard
    csv_header: list[str] = field(default_factory=list)


@dataclass
class Cell:
    value: float | None
    values: MetricValues | None
    result: Result


def family(task: str) -> str:
    """The benchmark a task is a setting of (mmlu_0shot -> mmlu), from the registry's groups."""
    for name, members in GROUPS.items():
        if name not in _COMPOSITE_GROUPS and task in members:
            return name
    return task


def order_key(task: str) -> tuple[int, str]:
    """Tülu Table 8 column order, then every other task alphabetically."""
    order = list(GROUPS["tulu"]) + [t for t in GROUPS.get("superni", ()) if t not in GROUPS["tulu"]]
    return (order.index(task) if task in order else len(order), task)


def num(value: float | None, percent: bool = False) -> str:
    """One decimal for percentages (as the papers' tables), three significant digits for small ratios."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if percent:
        return f"{value:.1f}"
    return f"{value:.1f}" if abs(value) >= 1 or value == 0 else f"{value:.3f}"


def delta(value: float, percent: bool = False) -> str:
    """A signed difference in the precision of `num` (a 0.82 -> 0.85 change is +0.030, not +0.0)."""
    return "+" + num(value, percent) if value >= 0 else "-" + num(-value, percent)


def value_of(result: Result, metric: str) -> float | None:
    value = result.metrics.get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def failed(result: Result) -> bool:
    """No usable number: the primary metric is missing and items failed (or none were scored)."""
    return value_of(result, result.primary) is None and (result.failures > 0 or not result.record.get("n_examples"))


def failure_text(result: Result) -> str:
    total = result.record.get("n_examples")
    text = f"failed: {result.failures} failed item(s)" + (f", {total} examples" if total else "")
    if result.failure_list:
        first = result.failure_list[0]
        text += f" (e.g. {first.get('id')}: {first.get('reason')})"
    return text


def paired(a: MetricValues, b: MetricValues) -> tuple[float, int, int, int] | None:
    """Sign test on the examples both answered: (p, n_a_better, n_b_better, n_common)."""
    av, bv = a.by_id(), b.by_id()
    common = [i for i in av if i in bv]
    if not common:
        return None
    p, plus, minus = sign_test([av[i] for i in common], [bv[i] for i in common])
    return p, plus, minus, len(common)


def cell_text(cell: Cell, base: Cell | None) -> str:
    result = cell.result
    if failed(result):
        return failure_text(result)
    percent = cell.values is not None and cell.values.scale == 100
    text = num(cell.value, percent)
    if cell.values is not None and cell.value is not None:
        ci = cell.values.interval()
        text += f" [{num(ci.low, percent)}, {num(ci.high, percent)}]"
    if base is not None and base is not cell and cell.value is not None and base.value is not None:
        mark = ""
        if cell.values is not None and base.values is not None:
            test = paired(cell.values, base.values)
            if test is not None and test[0] < ALPHA:
                mark = "*"
        text += f" ({delta(cell.value - base.value, percent)}{mark})"
    if result.failures:
        text += f" (partial: {result.failures} failed)"
    return text


def _csv_cells(cell: Cell | None, base: Cell | None) -> list[Any]:
    """value, interval low, interval high, sign-test p against the baseline (None where not defined)."""
    if cell is None or cell.value is None:
        return [None, None, None, None]
    ci = cell.values.interval() if cell.values is not None else None
    test = None
    if base is not None and base is not cell and cell.values is not None and base.values is not None:
        test = paired(cell.values, base.values)
    return [cell.value, ci.low if ci else None, ci.high if ci else None, test[0] if test else None]


def _cell(result: Result, metric: str) -> Cell:
    return Cell(value_of(result, metric), result.values(metric), result)


def _interval_methods(cells: list[Cell]) -> str:
    methods = sorted({c.values.interval().method for c in cells if c.values is not None})
    missing = sum(1 for c in cells if c.values is None and c.value is not None)
    text = "95% intervals: " + (", ".join(methods) if methods else "none")
    if missing:
        text += f"; {missing} value(s) without an interval (no per-example values reproduce them)"
    return text


def rows_in_order(results: list[Result]) -> list[str]:
    rows: list[str] = []
    for r in results:
        if r.row not in rows:
            rows.append(r.row)
    return rows


def _baseline(rows: list[str], baseline: str | None) -> str | None:
    if baseline is None:
        return rows[0] if rows else None
    for row in rows:
        if row == baseline:
            return row
    for row in rows:
        if row.split(" (")[0] == baseline:
            return row
    return None


def task_table(title: str, results: list[Result], baseline: str | None, tasks: list[str] | None = None,
               metric_of: dict[str, str] | None = None) -> Table:
    """Rows = models, one column per task (its primary metric unless `metric_of` says otherwise)."""
    tasks = tasks or sorted({r.task for r in results}, key=order_key)
    rows = rows_in_order(results)
    base_row = _baseline(rows, baseline)
    by = {(r.row, r.task): r for r in results}
    metric_of = metric_of or {}
    header, csv_header, cells_by_task = ["model"], ["model"], {}
    for task in tasks:
        sample = next(r for r in results if r.task == task)
        metric = metric_of.get(task, sample.primary)
        arrow = "" if sample.higher_is_better else " ↓"
        header.append(f"{sample.title} ({metric}){arrow}")
        csv_header += [f"{task}:{metric}", f"{task}:{metric}:low", f"{task}:{metric}:high", f"{task}:p_vs_baseline"]
        cells_by_task[task] = {row: _cell(by[(row, task)], metric) for row in rows if (row, task) in by}
    table_rows, csv_rows = [], []
    for row in rows:
        line, csv_line = [row + (" (baseline)" if row == base_row else "")], [row]
        for task in tasks:
            cell = cells_by_task[task].get(row)
            base = cells_by_task[task].get(base_row) if base_row else None
            line.append(cell_text(cell, base) if cell else "–")
            csv_line += _csv_cells(cell, base)
        table_rows.append(line)
        csv_rows.append(csv_line)
    all_cells = [c for t in tasks for c in cells_by_task[t].values()]
    notes = [_interval_methods(all_cells)]
    if base_row and len(rows) > 1:
        notes.append(f"(±x) = difference from the baseline {base_row}; * = p < {ALPHA} in a two-sided exact sign "
                     f"test on the examples both models answered")
    return Table(title, header, table_rows, notes, csv_rows, csv_header)


def summary_table(results: list[Result], baseline: str | None) -> Table:
    """Table 8: every benchmark setting's primary metric, and the per-benchmark average."""
    benchmarks = [r for r in results if r.kind == "benchmark"]
    tasks = sorted({r.task for r in benchmarks}, key=order_key)
    table = task_table("Benchmarks (Tülu Table 8 order)", benchmarks, baseline, tasks)
    higher = {t: next(r for r in benchmarks if r.task == t).higher_is_better for t in tasks}
    rows = rows_in_order(benchmarks)
    by = {(r.row, r.task): value_of(r, r.primary) for r in benchmarks}
    # Only settings every row has a number for: a row with MMLU 0- and 5-shot must not be
    # averaged against a row with 0-shot alone (two different task sets, one column).
    common_tasks = [t for t in tasks if higher[t] and all(by.get((row, t)) is not None for row in rows)]
    common = list(dict.fromkeys(family(t) for t in common_tasks))
    left_out = [t for t in tasks if higher[t] and t not in common_tasks]
    table.header.append("average")
    table.csv_header.append("average")
    for line, csv_line, row in zip(table.rows, table.csv_rows, rows):
        per_family = [[by[(row, t)] for t in common_tasks if family(t) == fam] for fam in common]
        avg = sum(sum(v) / len(v) for v in per_family) / len(per_family) if per_family else None  # type: ignore[arg-type]
        line.append(num(avg))
        csv_line.append(avg)
    table.notes.append("average: mean over benchmarks (" + (", ".join(common) or "none") + ") of the mean over "
                       "each benchmark's settings, as Tülu Table 8"
                       + ("; not averaged: " + ", ".join(t for t in tasks if not higher[t]) + " (lower is better)"
                          if not all(higher.values()) else "")
                       + ("; left out (not run for every model): " + ", ".join(left_out) if left_out else ""))
    return table


def family_tables(results: list[Result], baseline: str | None) -> list[Table]:
    """Per benchmark, one table with every metric of each of its settings."""
    benchmarks = [r for r in results if r.kind == "benchmark"]
    tasks = sorted({r.task for r in benchmarks}, key=order_key)
    out = []
    for fam in dict.fromkeys(family(t) for t in tasks):
        members = [r for r in benchmarks if family(r.task) == fam]
        for task in [t for t in tasks if family(t) == fam]:
            of_task = [r for r in members if r.task == task]
            metrics = list(dict.fromkeys(m for r in of_task for m in r.metrics))
            columns = [(task, m) for m in metrics]
            table = _metric_columns(f"{of_task[0].title} ({task})", of_task, baseline, columns)
            out.append(table)
    return out


def _metric_columns(title: str, results: list[Result], baseline: str | None, columns: list[tuple[str, str]]) -> Table:
    rows = rows_in_order(results)
    base_row = _baseline(rows, baseline)
    by = {r.row: r for r in results}
    header = ["model"] + [metric for _, metric in columns] + ["examples", "failures"]
    table_rows = []
    cells_all = []
    for row in rows:
        r = by[row]
        line = [row + (" (baseline)" if row == base_row else "")]
        for _, metric in columns:
            cell = _cell(r, metric)
            base = _cell(by[base_row], metric) if base_row and base_row != row else None
            cells_all.append(cell)
            line.append(cell_text(cell, base) if cell.value is not None or failed(r) else "–")
        line += [str(r.record.get("n_examples", "–")), str(r.failures)]
        table_rows.append(line)
    return Table(title, header, table_rows, [_interval_methods(cells_all)])


def judge_tables(results: list[Result], baseline: str | None) -> list[Table]:
    """Per judge protocol (AlpacaEval, Vicuna-80, ...): models side by side on its primary metric."""
    judges = [r for r in results if r.judged]
    out = []
    for task in sorted({r.task for r in judges}):
        of_task = [r for r in judges if r.task == task]
        table = task_table(f"Judge: {task}", of_task, baseline, [task])
        refs = sorted({str((r.record.get("settings") or {}).get("reference", "")) for r in of_task} - {""})
        if refs:
            table.notes.append("against: " + ", ".join(refs))
        out.append(table)
    return out


def pairwise_tables(results: list[Result]) -> list[Table]:
    """Per task with two or more models: the sign test between every two models."""
    out = []
    for task in sorted({r.task for r in results}, key=order_key):
        of_task = [r for r in results if r.task == task and not failed(r)]
        if len(of_task) < 2:
            continue
        metric = of_task[0].primary
        values = {r.row: r.values(metric) for r in of_task}
        rows = [r.row for r in of_task]
        lines = []
        for a in rows:
            line = [a]
            for b in rows:
                test = paired(values[a], values[b]) if a != b and values[a] and values[b] else None
                line.append("–" if test is None else f"p={test[0]:.3g} ({test[1]}:{test[2]} of {test[3]})"
                            + ("*" if test[0] < ALPHA else ""))
            lines.append(line)
        if all(c == "–" for line in lines for c in line[1:]):
            continue  # no per-example values to pair
        out.append(Table(f"{task} ({metric}): paired sign test", ["model"] + rows, lines,
                         ["cell = p (examples where the row model scored higher : where the column model did, of "
                          f"those both answered); * = p < {ALPHA}"]))
    return out
