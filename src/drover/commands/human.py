"""Human evaluation as the papers ran it: GPT-4-LLM's HHH form or Tülu's acceptability +
preference form, over two systems' outputs on the same prompts.

  drover human create --a A.jsonl --b B.jsonl --form tulu --raters alice,bob --overlap 20 --out STUDY
  drover human serve STUDY [--host 127.0.0.1 --port 8000]   raters open their invite links (STUDY/invites.txt)
  drover human results STUDY [--format json|csv --out FILE --run RUN]
  drover human export STUDY --out prefs.jsonl               Ranked records for reward models and DPO

The study lives in a SQLite file inside STUDY, or in PostgreSQL (`--db postgresql+psycopg://...`).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="{create,serve,results,export}")
    create = sub.add_parser("create", help="build a study from two systems' Conversation outputs")
    create.add_argument("--a", required=True, metavar="A.jsonl", help="system a's outputs (Conversation records)")
    create.add_argument("--b", required=True, metavar="B.jsonl", help="system b's outputs (Conversation records)")
    create.add_argument("--form", default="tulu", help="rating form: tulu (default) or hhh")
    create.add_argument("--out", required=True, metavar="STUDY", help="the study directory to create")
    create.add_argument("--raters", default="rater1,rater2", help="comma-separated rater names (default rater1,rater2)")
    create.add_argument("--per-item", type=int, default=1, help="raters per ordinary item (default 1)")
    create.add_argument("--overlap", type=int, default=0,
                        help="items rated by several raters, for agreement (default 0)")
    create.add_argument("--overlap-raters", type=int, default=0, help="raters per overlap item (default: all)")
    create.add_argument("--match", default="id", choices=["id", "prompt"], help="pair records by id (default) or prompt")
    create.add_argument("--name-a", default="", help="system a's name (default: A's file name)")
    create.add_argument("--name-b", default="", help="system b's name (default: B's file name)")
    create.add_argument("--db", default="", help="SQLAlchemy URL of an empty database (default: STUDY/study.sqlite)")
    create.add_argument("--seed", type=int, default=0, help="seed of the assignment and display order (default 0)")
    create.add_argument("--base-url", default="http://127.0.0.1:8000", help="where raters will reach the server "
                        "(for the invite links in STUDY/invites.txt)")

    serve = sub.add_parser("serve", help="serve the rating website of a study")
    serve.add_argument("study", metavar="STUDY")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; 0.0.0.0 lets other machines in)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")

    results = sub.add_parser("results", help="win/tie/loss, acceptance and agreement of a study")
    results.add_argument("study", metavar="STUDY")
    results.add_argument("--format", default="json", choices=["json", "csv"], help="format of --out (default json)")
    results.add_argument("--out", default="", metavar="FILE", help="write the full results here")
    results.add_argument("--run", default="", metavar="RUN",
                         help="also write a result record into RUN/eval/ for `drover report` (default: STUDY)")

    export = sub.add_parser("export", help="the study's preferences as Ranked records (reward models, DPO)")
    export.add_argument("study", metavar="STUDY")
    export.add_argument("--out", required=True, metavar="FILE.jsonl")
    export.add_argument("--question", default="", help="which preference question (default: the form's main one)")


def run(args: argparse.Namespace) -> int:
    return {"create": _create, "serve": _serve, "results": _results, "export": _export}[args.action](args)


def _create(args: argparse.Namespace) -> int:
    from drover.human.create import INVITES_FILE, StudyConfig, create_study

    cfg = StudyConfig(a=args.a, b=args.b, out=args.out, form=args.form,
                      raters=[r.strip() for r in args.raters.split(",") if r.strip()], per_item=args.per_item,
                      overlap=args.overlap, overlap_raters=args.overlap_raters, match=args.match, name_a=args.name_a,
                      name_b=args.name_b, db=args.db, seed=args.seed, base_url=args.base_url)
    out, report, tokens = create_study(cfg)
    for line in report.lines():
        print(line)
    print(f"study ({cfg.form} form) written to {out}; {len(tokens) - 1} rater invites and the admin token are in "
          f"{out / INVITES_FILE} (keep it private)\nnext: drover human serve {out}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from drover.human.app import create_app
    from drover.human.store import Study
    from drover.listen import check_listen

    check_listen(args.host, args.port)
    study = Study(args.study)
    app = create_app(study)
    progress = study.progress()
    done = sum(p["answered"] for p in progress.values())
    total = sum(p["assigned"] for p in progress.values())
    print(f"human evaluation ({study.form.name} form): {len(progress)} raters, {done} / {total} answers so far\n"
          f"open http://{args.host}:{args.port}/login (invite links: {args.study}/invites.txt); Ctrl-C to stop, "
          f"restart to resume")
    import uvicorn

    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        study.close_engine()
    return 0


def _results(args: argparse.Namespace) -> int:
    from drover.human.record import write_human_result
    from drover.human.store import Study
    from drover.human.summary import format_text, summarize, to_csv, to_json

    study = Study(args.study)
    summary = summarize(study)
    print(format_text(summary))
    if args.out:
        from drover.atomic import atomic_open

        with atomic_open(args.out) as handle:
            handle.write(to_json(summary) if args.format == "json" else to_csv(summary))
        print(f"results ({args.format}) -> {args.out}")
    path = write_human_result(study, summary, args.run or args.study)
    print(f"result record -> {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from drover.human.export import ranked_records
    from drover.human.store import Study
    from drover.records import write_jsonl

    records = ranked_records(Study(args.study), args.question)
    count = write_jsonl(args.out, records)
    print(f"{count} Ranked records (ties and flagged items left out) -> {args.out}")
    return 0
