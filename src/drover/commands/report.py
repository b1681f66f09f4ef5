"""Write the report of a run directory: report.html (self-contained, figures embedded),
report.md (figures in report-files/) and report.json (headline numbers).

Sections: configuration and stage times, data statistics, training curves, the
benchmark table (Tülu Table 8 layout), LLM-judge results (relative-score bars as
GPT-4-LLM Figure 4, win rates with standard errors), tokens and cost, and links to
every per-example output file.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="the run directory (e.g. runs/quickstart)")


def run(args: argparse.Namespace) -> int:
    from drover.errors import DroverError
    from drover.report.render import write_report

    root = Path(args.run_dir)
    if not root.is_dir():
        raise DroverError(f"{root}: run directory not found")
    html_path, md_path = write_report(root)
    print(f"report: {html_path.resolve()}\nmarkdown: {md_path.resolve()}")
    return 0
