"""Render collected runs as one self-contained HTML page (Jinja2 template
`resources/report/report.html.j2`, PNG figures embedded as base64) and as Markdown
(figures written to `report-files/` beside it, every link relative to the report).

Both outputs come from one context (`build_context`), so they show the same tables,
figures, failures, provenance and links; Markdown text is HTML-escaped (a model or
generator name cannot inject markup) and `|` is escaped inside table cells.
"""

from __future__ import annotations

import base64
import html
import os
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from drover.report import figures as figs
from drover.report import tables
from drover.report.collect import Result, RunContents
from drover.report.config import ReportConfig
from drover.report.scores import judge_preference, pair_id

SECTIONS = [("summary", "Benchmarks"), ("judges", "LLM judges"), ("figures", "Figures"),
            ("details", "Benchmark details"), ("samples", "Sample outputs"), ("training", "Training"),
            ("data", "Data statistics"), ("provenance", "Results and provenance"), ("config", "Configuration"),
            ("costs", "Tokens and cost"), ("outputs", "Per-example outputs")]
SAMPLES_PER_JUDGE = 5


def _rel(path: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()


def _short(value: Any) -> str:
    text = str(value)
    return text.removeprefix("sha256:")[:12] if text.startswith("sha256:") else text


def _fmt(value: Any) -> str:
    if isinstance(value, str) and value.startswith("sha256:"):
        return _short(value)
    if isinstance(value, float):
        return tables.num(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def _verdict_text(example: dict[str, Any]) -> str:
    pref = judge_preference(example)
    if pref is None:
        verdict = example.get("verdict") or {}
        return "failed: " + str(example.get("error") or verdict.get("reason") or "no verdict")
    return "model preferred" if pref > 1.5 else "reference preferred" if pref < 1.5 else "tie"


def _samples(results: list[Result]) -> list[dict[str, Any]]:
    """Per judge protocol: a few prompts with every model's output, the verdict and the judge's rationale."""
    out = []
    for task in sorted({r.task for r in results if r.judged}):
        of_task = [r for r in results if r.task == task]
        by_model: dict[str, dict[str, dict[str, Any]]] = {}
        for r in of_task:
            for e in r.examples():  # the first judgment of each prompt (Vicuna judges two orders)
                by_model.setdefault(r.row, {}).setdefault(pair_id(e, "judge"), e)
        ids = list(dict.fromkeys(i for rows in by_model.values() for i in rows))[:SAMPLES_PER_JUDGE]
        items = []
        for i in ids:
            entries = []
            prompt = ""
            for row, rows in by_model.items():
                e = rows.get(i)
                if e is None:
                    continue
                prompt = prompt or str(e.get("instruction") or (e.get("meta") or {}).get("instruction") or "")
                entries.append({"model": row, "output": figs.model_output(e) or "(output not in the judge record)",
                                "verdict": _verdict_text(e), "rationale": str(e.get("raw") or "")[:1500]})
            items.append({"id": i, "prompt": prompt or f"(prompt {i})", "entries": entries})
        if items:
            out.append({"task": task, "items": items})
    return out


def _provenance(results: list[Result], out_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        model = r.model
        prov = r.record.get("provenance")
        rows.append({"cells": [r.row, r.name, r.kind, model.get("spec", ""), _short(model.get("fingerprint") or "-"),
                               _short(r.record.get("key") or "-"), _fmt(prov) if prov else "–"],
                     "json": _rel(r.path, out_dir),
                     "examples": _rel(r.examples_path, out_dir) if r.examples_path and r.examples_path.exists() else None})
    return rows


def _failures(results: list[Result]) -> list[str]:
    out = []
    for r in results:
        if tables.failed(r):
            out.append(f"{r.row} — {r.name}: {tables.failure_text(r)}")
        elif r.failures:
            out.append(f"{r.row} — {r.name}: partial, {r.failures} failed"
                       + (f" (e.g. {r.failure_list[0].get('id')}: {r.failure_list[0].get('reason')})"
                          if r.failure_list else ""))
    return out


def _all_metrics(results: list[Result]) -> list[list[str]]:
    return [[r.row, r.name, str(r.record.get("n_examples", "–")), str(r.failures),
             ", ".join(f"{k}={_fmt(v) if v is not None else 'null'}" for k, v in r.metrics.items())]
            for r in results]


def build_context(runs: list[RunContents], out_dir: Path, baseline: str | None) -> dict[str, Any]:
    results = [r for run in runs for r in run.results]
    benchmarks = [r for r in results if r.kind == "benchmark"]
    figures = figs.judge_bars(results) + figs.rouge_by_length(results)
    bias, bias_note = figs.length_bias(results)
    figures += bias
    training = figs.training(runs)
    notes = [bias_note] if bias_note else []
    stages = []
    for run in runs:
        for s in run.stages:
            finished = s.get("finished")
            stages.append([run.root.name, s.get("stage", "?"), _fmt((s.get("summary") or {}).get("seconds", "")),
                           datetime.fromtimestamp(finished, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
                           if isinstance(finished, (int, float)) else ""])
    data = []
    for run in runs:
        for stat in run.stats:
            flat = [[k, _fmt(v)] for k, v in stat["summary"].items() if isinstance(v, (int, float, str))]
            data.append({"name": f"{run.root.name}/{stat['name']}", "rows": flat,
                         "images": [(Path(p).name, Path(p).read_bytes(), _rel(Path(p), out_dir))
                                    for p in stat["images"]]})
    costs = []
    for run in runs:
        for u in run.llm_usage:
            costs.append([f"{run.root.name}/{u.get('cache')}", _fmt(u.get("error", u.get("entries", ""))),
                          _fmt(u.get("prompt_tokens", "")), _fmt(u.get("completion_tokens", "")), _fmt(u.get("cost", ""))])
    for r in results:
        usage = r.record.get("usage") or {}
        if usage:
            costs.append([f"{r.row} — {r.name}", "", _fmt(usage.get("prompt_tokens", "")),
                          _fmt(usage.get("completion_tokens", "")), _fmt(usage.get("cost", ""))])
    outputs = []
    for r in results:
        if r.examples_path is not None and r.examples_path.exists():
            outputs.append((_rel(r.examples_path, out_dir), f"{r.row} — {r.name}"))
    for run in runs:
        for path in sorted((run.root / "data").glob("*.jsonl")):
            outputs.append((_rel(path, out_dir), f"{run.root.name} data"))
    return {
        "title": "drover report — " + ", ".join(run.root.name for run in runs),
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "runs": [str(run.root) for run in runs],
        "sections": SECTIONS,
        "summary": tables.summary_table(results, baseline) if benchmarks else None,
        "details": tables.family_tables(results, baseline),
        "pairwise": tables.pairwise_tables(results),
        "judges": tables.judge_tables(results, baseline),
        "failures": _failures(results),
        "all_metrics": _all_metrics(results),
        "figures": figures,
        "figure_notes": notes,
        "training": training,
        "curve_summaries": [(f"{run.root.name}/{c.name}", [[k, _fmt(v)] for k, v in c.summary.items()
                                                            if isinstance(v, (int, float, str))])
                            for run in runs for c in run.curves if c.summary],
        "samples": _samples(results),
        "data": data,
        "provenance": _provenance(results, out_dir),
        "stages": stages,
        "configs": [(f"{run.root.name}/{name}", text) for run in runs for name, text in run.configs.items()],
        "costs": costs,
        "outputs": outputs,
    }


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def render_html(context: dict[str, Any]) -> str:
    import jinja2

    source = resources.files("drover").joinpath("resources", "report", "report.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["data_uri"] = _data_uri
    return env.from_string(source).render(**context)


def md_escape(text: Any) -> str:
    """Text safe in Markdown: HTML escaped (no raw tags), table pipes escaped."""
    return html.escape(str(text), quote=False).replace("|", "\\|")


def _md_table(table: tables.Table) -> list[str]:
    lines = [f"### {md_escape(table.title)}", "", "| " + " | ".join(md_escape(h) for h in table.header) + " |",
             "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in table.rows]
    return lines + [""] + [f"_{md_escape(n)}_  " for n in table.notes] + [""]


def render_markdown(context: dict[str, Any], image_dir: str = "report-files") -> str:
    md = [f"# {md_escape(context['title'])}", "", f"generated {context['generated']}", ""]
    md += ["## Benchmarks", ""]
    md += _md_table(context["summary"]) if context["summary"] else ["no benchmark results", ""]
    md += ["## LLM judges", ""]
    for table in context["judges"]:
        md += _md_table(table)
    if context["failures"]:
        md += ["### Failed and partial results", ""] + [f"- {md_escape(f)}" for f in context["failures"]] + [""]
    md += ["## Figures", ""]
    for fig in context["figures"] + context["training"]:
        md += [f"### {md_escape(fig.title)}", "", f"![{md_escape(fig.title)}]({image_dir}/{fig.name})", "",
               md_escape(fig.caption), ""]
    md += [md_escape(n) for n in context["figure_notes"]] + [""]
    md += ["## Benchmark details", ""]
    for table in context["details"] + context["pairwise"]:
        md += _md_table(table)
    md += ["### All metrics", "", "| model | result | examples | failures | metrics |", "|---|---|---|---|---|"]
    md += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in context["all_metrics"]] + [""]
    md += ["## Sample outputs", ""]
    for group in context["samples"]:
        md += [f"### {md_escape(group['task'])}", ""]
        for item in group["items"]:
            md += [f"**prompt {md_escape(item['id'])}**: {md_escape(item['prompt'][:500])}", ""]
            md += [f"- **{md_escape(e['model'])}** ({md_escape(e['verdict'])}): {md_escape(e['output'][:500])}"
                   for e in item["entries"]] + [""]
    md += ["## Data statistics", ""]
    for stat in context["data"]:
        md += [f"### {md_escape(stat['name'])}", ""] + [f"- {md_escape(k)}: {md_escape(v)}" for k, v in stat["rows"]]
        md += [f"![{md_escape(name)}]({rel})" for name, _, rel in stat["images"]] + [""]
    md += ["## Results and provenance", "", "| model | result | kind | spec | fingerprint | key | provenance | files |",
           "|---|---|---|---|---|---|---|---|"]
    for row in context["provenance"]:
        links = f"[json]({row['json']})" + (f" [examples]({row['examples']})" if row["examples"] else "")
        md.append("| " + " | ".join(md_escape(c) for c in row["cells"]) + f" | {links} |")
    md += ["", "## Configuration", "", "| run | stage | seconds | finished (UTC) |", "|---|---|---|---|"]
    md += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in context["stages"]] + [""]
    for name, text in context["configs"]:
        md += [f"### {md_escape(name)}", "", "```", text.replace("```", "ˋˋˋ"), "```", ""]
    md += ["## Tokens and cost", "", "| source | cached calls | prompt tokens | completion tokens | cost (USD) |",
           "|---|---|---|---|---|"]
    md += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in context["costs"]] + [""]
    md += ["## Per-example outputs", ""] + [f"- [{md_escape(label)}: {md_escape(rel)}]({rel})"
                                            for rel, label in context["outputs"]] + [""]
    return "\n".join(md) + "\n"


def write_report(config: ReportConfig) -> list[Path]:
    """Write report.html, report.md (+ report-files/), report.json and, with `config.leaderboard`,
    leaderboard.csv and leaderboard.md into `config.out_dir`."""
    import csv
    import io
    import json

    from drover.atomic import atomic_open, write_text
    from drover.errors import ConfigError
    from drover.report.collect import collect
    from drover.results import strict

    runs = collect(config.runs)
    out, baseline = config.out_dir, config.baseline
    out.mkdir(parents=True, exist_ok=True)
    results = [r for run in runs for r in run.results]
    if baseline is not None and baseline not in {r.row for r in results} | {r.label for r in results}:
        raise ConfigError(f"--baseline {baseline!r}: no such model (models: "
                          f"{', '.join(sorted({r.row for r in results})) or 'none'})")
    context = build_context(runs, out, baseline)
    written = [out / "report.html", out / "report.md", out / "report.json"]
    write_text(out / "report.html", render_html(context))
    write_text(out / "report.md", render_markdown(context))
    for fig in context["figures"] + context["training"]:
        with atomic_open(out / "report-files" / fig.name, "wb") as handle:
            handle.write(fig.png)
    summary = context["summary"]
    headline = {"header": summary.csv_header if summary else [], "rows": summary.csv_rows if summary else [],
                "results": [{"model": r.row, "name": r.name, "kind": r.kind, "metrics": r.metrics,
                             "failures": r.failures} for r in results]}
    write_text(out / "report.json", json.dumps(strict(headline), indent=2, allow_nan=False, default=str))
    if config.leaderboard:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(summary.csv_header if summary else ["model"])
        for row in summary.csv_rows if summary else []:
            writer.writerow(["" if v is None else v for v in row])
        write_text(out / "leaderboard.csv", buf.getvalue())
        write_text(out / "leaderboard.md", "\n".join(_md_table(summary) if summary else ["no benchmark results"]) + "\n")
        written += [out / "leaderboard.csv", out / "leaderboard.md"]
    return written
