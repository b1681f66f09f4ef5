"""Serve the pairwise human-evaluation website (Tülu §4.3): raters see a prompt and two
model completions in random order, mark each acceptable or not and give a 5-point
preference. Ratings are appended to --out as they come (stop and restart at will).
`--summary RATINGS.jsonl` prints acceptance rates and win/tie/loss instead."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--instances", metavar="FILE.jsonl",
                        help="instances {id, prompt, completions: [{model, completion}] x2} "
                             "(default: the shipped Tülu 1 set, 996 pairs)")
    parser.add_argument("--out", metavar="RATINGS.jsonl", help="ratings file (appended; resumable)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; "
                        "use 0.0.0.0 to let other machines' raters in)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-instance A/B order (default 0)")
    parser.add_argument("--summary", metavar="RATINGS.jsonl",
                        help="print acceptance rates and win/tie/loss of a ratings file and exit")


def run(args: argparse.Namespace) -> int:
    from drover.errors import ConfigError

    if args.summary:
        from drover.human.ratings import format_summary, summarize_ratings

        print(format_summary(summarize_ratings(args.summary)))
        return 0
    if not args.out:
        raise ConfigError("give --out RATINGS.jsonl (where ratings are appended), or --summary RATINGS.jsonl")
    from pathlib import Path

    from drover.human.app import create_app
    from drover.listen import check_listen
    from drover.shipped import data_path

    if Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out}: is a directory; give the ratings file (RATINGS.jsonl)")
    check_listen(args.host, args.port)

    instances = args.instances or data_path("tulu_human_eval", "eval_instances_tulu_1.jsonl")
    app = create_app(instances, args.out, seed=args.seed)
    state = app.state.human_eval
    print(f"human evaluation: {len(state.instances)} instances from {instances}; ratings -> {args.out}\n"
          f"open http://{args.host}:{args.port}/ (Ctrl-C to stop; restart to resume)")
    import uvicorn

    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        state.store.close()
    return 0
