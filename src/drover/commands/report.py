"""Write the report of one or more run directories: report.html (self-contained, figures
embedded), report.md (figures in report-files/) and report.json (headline numbers).

Every model of every run is one row: per benchmark a table in Tülu Table 8 column order
with 95% intervals (exact binomial for accuracies, bootstrap otherwise), differences
from a baseline row and paired sign-test marks; the per-benchmark average (lower-is-
better benchmarks such as ToxiGen shown, not averaged); LLM-judge results side by side;
the papers' figures; sample outputs with the judge's verdict; training curves; data
statistics; provenance and resolved configuration; tokens and cost; links to every
per-example output file. `--leaderboard` also writes the cross-run table as
leaderboard.csv and leaderboard.md.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN", help="run directories (e.g. runs/quickstart)")
    parser.add_argument("--baseline", metavar="LABEL", help="the model row differences are taken against "
                                                            "(default: the first row)")
    parser.add_argument("--out", metavar="DIR", help="where the report goes (default: the first RUN)")
    parser.add_argument("--leaderboard", action="store_true", help="also write leaderboard.csv and leaderboard.md")


def run(args: argparse.Namespace) -> int:
    from drover.report.config import ReportConfig
    from drover.report.render import write_report

    config = ReportConfig(runs=list(args.run_dirs), baseline=args.baseline, out=args.out, leaderboard=args.leaderboard)
    config.validate()
    written = write_report(config)
    for path in written:
        print(f"{path.stem + path.suffix}: {path.resolve()}")
    return 0
