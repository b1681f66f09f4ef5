"""Render a collected run as one self-contained HTML page (PNG figures embedded as
base64) and as Markdown (figures written beside it)."""

from __future__ import annotations

import base64
import html
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from drover.report import plots
from drover.report.collect import RunContents

# Tülu Table 8 column order; other tasks follow alphabetically.
TASK_ORDER = ["mmlu", "mmlu-0shot", "mmlu-5shot", "gsm", "gsm-cot", "gsm-direct", "bbh", "bbh-cot", "bbh-direct",
              "tydiqa", "tydiqa-goldp", "tydiqa-closedbook", "codex-eval", "humaneval", "toxigen", "truthfulqa",
              "truthfulqa-mc", "truthfulqa-gen", "superni", "unnatural"]

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #3465a4}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f0f4fa}td:first-child,th:first-child{text-align:left}
pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px;max-height:420px}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.muted{color:#777}nav a{margin-right:1em}
"""

SECTIONS = [("config", "Configuration"), ("data", "Data statistics"), ("training", "Training"),
            ("benchmarks", "Benchmarks"), ("judges", "LLM judges"), ("costs", "Tokens and cost"),
            ("outputs", "Per-example outputs")]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return html.escape(str(value))


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _task_key(name: str) -> tuple[int, str]:
    return (TASK_ORDER.index(name) if name in TASK_ORDER else len(TASK_ORDER), name)


def benchmark_table(results: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Rows = models, columns = tasks (primary metric), plus the average (Tülu Table 8)."""
    tasks = sorted({r["task"] for r in results}, key=_task_key)
    by_model: dict[str, dict[str, float]] = {}
    for r in results:
        metric = r.get("primary_metric") or next(iter(r["metrics"]), None)
        value = r["metrics"].get(metric) if metric else None
        by_model.setdefault(str(r.get("model", "?")), {})[r["task"]] = value
    header = ["model"] + [f"{t} ({_primary(results, t)})" for t in tasks] + ["average"]
    rows = []
    for model, values in by_model.items():
        nums = [values.get(t) for t in tasks]
        present = [v for v in nums if isinstance(v, (int, float))]
        rows.append([model] + [v if v is not None else float("nan") for v in nums]
                    + [sum(present) / len(present) if present else float("nan")])
    return header, rows


def _primary(results: list[dict[str, Any]], task: str) -> str:
    for r in results:
        if r["task"] == task:
            return str(r.get("primary_metric", ""))
    return ""


def _judge_section(judges: list[dict[str, Any]], images: list[tuple[str, bytes]]) -> str:
    parts = []
    relative = []
    winrates = []
    for j in judges:
        # drover.results records: model is {"label", ...} and a metric without verdicts is null
        metrics = {k: float("nan") if v is None else v for k, v in j.get("metrics", {}).items()}
        model = j["model"].get("label", "?") if isinstance(j.get("model"), dict) else j.get("model", "?")
        j = {**j, "model": model}
        name = f"{j.get('task')} — {j.get('model', '?')}"
        parts.append(f"<h3>{html.escape(name)}</h3><p class=muted>judge: {html.escape(str(j.get('judge', '?')))}; "
                      f"{j.get('n_examples', '?')} examples; <a href='{html.escape(j['_file'])}'>result JSON</a></p>")
        parts.append(_table(["metric", "value"], [[k, v] for k, v in metrics.items()]))
        if "relative_score" in metrics:
            reference = str(j.get("settings", {}).get("reference", "reference"))
            relative.append((f"{j.get('model', '?')} vs {reference}", float(metrics["relative_score"])))
        if "win_rate" in metrics:
            winrates.append((str(j.get("model", "?")), float(metrics["win_rate"]),
                             float(metrics.get("standard_error", 0.0) or 0.0)))
    if relative:
        png = plots.relative_scores(relative)
        images.append(("relative-scores.png", png))
        parts.insert(0, _img(png, "relative scores"))
    if winrates:
        png = plots.win_rates(winrates)
        images.append(("win-rates.png", png))
        parts.insert(0, _img(png, "win rates"))
    return "".join(parts)


def render(run: RunContents) -> tuple[str, str, list[tuple[str, bytes]]]:
    """Returns (html, markdown, [(image name, png bytes)])."""
    images: list[tuple[str, bytes]] = []
    body: dict[str, str] = {}
    md: list[str] = [f"# drover report — {run.root.name}", ""]

    # Configuration
    stage_rows = [[s.get("stage", "?"), s.get("summary", {}).get("seconds", ""),
                   datetime.fromtimestamp(s.get("finished", 0), timezone.utc).strftime("%Y-%m-%d %H:%M:%S")]
                  for s in run.stages]
    cfg_html = _table(["stage", "seconds", "finished (UTC)"], stage_rows) if stage_rows else ""
    for name, text in run.configs.items():
        cfg_html += f"<h3>{html.escape(name)}</h3><pre>{html.escape(text)}</pre>"
    body["config"] = cfg_html or "<p class=muted>no configuration recorded</p>"
    md += ["## Configuration", ""] + [f"- stage `{r[0]}`: {r[1]} s" for r in stage_rows] + [""]

    # Data statistics
    data_html = ""
    for stat in run.stats:
        flat = {k: v for k, v in stat["summary"].items() if isinstance(v, (int, float, str))}
        data_html += f"<h3>{html.escape(stat['name'])}</h3>" + _table(["statistic", "value"], [[k, v] for k, v in flat.items()])
        for image in stat["images"]:
            data_html += _img(Path(image).read_bytes(), Path(image).name)
        md += [f"### {stat['name']}", ""] + [f"- {k}: {v}" for k, v in flat.items()] + [""]
    body["data"] = data_html or "<p class=muted>no data statistics (run <code>drover stats</code>)</p>"

    # Training
    train_html = ""
    for curve in run.curves:
        png = plots.training_curves(curve)
        fname = f"training-{curve.name.replace('/', '-')}.png"
        images.append((fname, png))
        last = curve.loss[-1] if curve.loss else float("nan")
        train_html += (f"<h3>{html.escape(curve.name)}</h3><p>{len(curve.steps)} logged steps; "
                       f"first loss {_fmt(curve.loss[0])}, last loss {_fmt(last)}</p>{_img(png, 'training curves')}")
        if curve.summary:
            train_html += _table(["summary", "value"], [[k, v] for k, v in curve.summary.items()
                                                         if isinstance(v, (int, float, str))])
        md += [f"## Training: {curve.name}", "", f"![training curves]({fname})", ""]
    body["training"] = train_html or "<p class=muted>no training logs</p>"

    # Benchmarks
    if run.benchmarks:
        header, rows = benchmark_table(run.benchmarks)
        bench_html = _table(header, rows)
        detail = [[r["task"], r.get("model", "?"), r.get("n_examples", ""), r.get("time_s", ""),
                   ", ".join(f"{k}={_fmt(v)}" for k, v in list(r["metrics"].items())[:6])] for r in run.benchmarks]
        bench_html += "<h3>All metrics</h3>" + _table(["task", "model", "examples", "seconds", "metrics"], detail)
        md += ["## Benchmarks", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows] + [""]
    else:
        bench_html = "<p class=muted>no benchmark results</p>"
    body["benchmarks"] = bench_html

    # Judges
    body["judges"] = _judge_section(run.judges, images) if run.judges else "<p class=muted>no judge results</p>"
    for j in run.judges:
        md += [f"## Judge {j.get('task')} — {j.get('model', '?')}", ""] + \
              [f"- {k}: {_fmt(v)}" for k, v in j.get("metrics", {}).items()] + [""]

    # Costs
    cost_rows = []
    for u in run.llm_usage:
        cost_rows.append([u.get("cache"), u.get("error", u.get("entries", "")), u.get("prompt_tokens", ""),
                          u.get("completion_tokens", ""), u.get("cost", "")])
    for r in run.benchmarks + run.judges:
        usage = r.get("usage") or {}
        if usage:
            cost_rows.append([r["_file"], "", usage.get("prompt_tokens", ""), usage.get("completion_tokens", ""),
                              usage.get("cost", "")])
    body["costs"] = (_table(["source", "cached calls", "prompt tokens", "completion tokens", "cost (USD)"], cost_rows)
                     if cost_rows else "<p class=muted>no LLM usage recorded</p>")

    # Outputs
    links = []
    for r in run.benchmarks + run.judges:
        if r.get("examples_file"):
            links.append(f"<li><a href='{html.escape(r['examples_file'])}'>{html.escape(r['examples_file'])}</a> "
                         f"({html.escape(str(r['task']))})</li>")
    for path in sorted((run.root / "data").glob("*.jsonl")):
        rel = str(path.relative_to(run.root))
        links.append(f"<li><a href='{html.escape(rel)}'>{html.escape(rel)}</a></li>")
    body["outputs"] = f"<ul>{''.join(links)}</ul>" if links else "<p class=muted>no per-example outputs</p>"
    md += ["## Per-example outputs", ""] + [f"- {link}" for link in
                                            [r.get("examples_file") for r in run.benchmarks + run.judges] if link] + [""]

    nav = "".join(f"<a href='#{key}'>{title}</a>" for key, title in SECTIONS)
    sections = "".join(f"<section id='{key}'><h2>{title}</h2>{body[key]}</section>" for key, title in SECTIONS)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>drover report — {html.escape(run.root.name)}"
            f"</title><style>{CSS}</style></head><body><h1>drover report — {html.escape(run.root.name)}</h1>"
            f"<p class=muted>generated {generated} from <code>{html.escape(str(run.root))}</code></p>"
            f"<nav>{nav}</nav>{sections}</body></html>")
    return page, "\n".join(md) + "\n", images


def write_report(root: str | Path) -> tuple[Path, Path]:
    from drover.atomic import atomic_open, strict_dumps, write_text
    from drover.report.collect import collect

    run = collect(root)
    page, markdown, images = render(run)
    root = Path(root)
    write_text(root / "report.html", page)
    write_text(root / "report.md", markdown)
    for name, png in images:
        with atomic_open(root / "report-files" / name, "wb") as handle:
            handle.write(png)
    json_summary = {"benchmarks": [{k: v for k, v in r.items() if k in ("task", "model", "metrics")} for r in run.benchmarks],
                    "judges": [{k: v for k, v in r.items() if k in ("task", "model", "metrics")} for r in run.judges]}
    write_text(root / "report.json", strict_dumps(json_summary, indent=2, default=str))
    return root / "report.html", root / "report.md"
