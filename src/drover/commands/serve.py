"""Serve a local model over an OpenAI-compatible HTTP API.

    drover serve runs/tiny --port 8000 --model-name tiny
    # then, from any pipeline:  llm: {backend: openai, base_url: http://127.0.0.1:8000/v1, model: tiny}
    # or on a command line:     --teacher http://127.0.0.1:8000/v1#tiny

Endpoints: /health, /v1/models, /v1/chat/completions and /v1/completions (strings,
token ids, lists of either; echo + logprobs + max_tokens=0 scores a given text), with
n, best_of (completions), temperature, top_p, max_tokens, stop, seed, logprobs,
streaming (server-sent events) and constrained decoding (guided_choice, guided_regex,
guided_json, response_format json_object / json_schema). Invalid values get HTTP 400,
bodies over --max-body-bytes 413; the --max-* options bound what one request may ask.
Concurrent requests share one running batch (--max-batch-size sequences): they join and
leave it between decoding steps.

On a GPU machine with vLLM installed, `vllm serve MODEL_PATH --served-model-name NAME
--port 8000` exposes the same API much faster (paged attention, continuous batching);
drover's client needs nothing else to talk to it.
"""

from __future__ import annotations

import argparse

from drover.infer.serve_requests import ServeLimits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_path", help="local model directory (save_pretrained output)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--model-name", default=None,
                        help="the name clients pass as `model` (default: the model path)")
    parser.add_argument("--chat-template", default=None,
                        help="chat template for a tokenizer without one: tulu, chatml (default: the tokenizer's own)")
    parser.add_argument("--max-batch-size", type=int, default=8, help="sequences decoded together (default 8)")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16 (default auto)")
    parser.add_argument("--device", default="auto",
                        help="torch device, e.g. cpu or cuda:0 (default auto: the first GPU if any, else cpu)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="the context: max prompt+completion tokens (default: the model's); longer requests get 400")
    limits = ServeLimits()
    parser.add_argument("--max-body-bytes", type=int, default=limits.max_body_bytes,
                        help=f"largest request body; larger ones get 413 (default {limits.max_body_bytes})")
    parser.add_argument("--max-n", type=int, default=limits.max_n,
                        help=f"largest n and best_of (default {limits.max_n})")
    parser.add_argument("--max-logprobs", type=int, default=limits.max_logprobs,
                        help=f"largest top_logprobs / logprobs (default {limits.max_logprobs})")
    parser.add_argument("--max-prompts", type=int, default=limits.max_prompts,
                        help=f"most prompts in one /v1/completions request (default {limits.max_prompts})")
    parser.add_argument("--default-max-tokens", type=int, default=limits.default_max_tokens,
                        help=f"completion budget when a request gives none (default {limits.default_max_tokens})")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from drover.infer.server import load_app

    _check_options(args)
    name = args.model_name or args.model_path
    app = load_app(args.model_path, model_name=name, chat_template=args.chat_template,
                   max_batch_size=args.max_batch_size, dtype=args.dtype, device=args.device,
                   max_length=args.max_length, limits=_limits(args))
    print(f"drover serve: {args.model_path} as {name!r} at http://{args.host}:{args.port}/v1 (Ctrl-C stops)",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _limits(args: argparse.Namespace) -> ServeLimits:
    return ServeLimits(max_body_bytes=args.max_body_bytes, max_n=args.max_n, max_logprobs=args.max_logprobs,
                       max_prompts=args.max_prompts, default_max_tokens=args.default_max_tokens)


def _check_options(args: argparse.Namespace) -> None:
    """Fail on bad options and a busy port before spending time on loading the model."""
    from drover.errors import ConfigError
    from drover.listen import check_listen
    from drover.templates import MODEL_TEMPLATE, chat_template_text

    if args.max_batch_size < 1:
        raise ConfigError(f"--max-batch-size must be at least 1 (got {args.max_batch_size})")
    if args.max_length is not None and args.max_length < 1:
        raise ConfigError(f"--max-length must be at least 1 (got {args.max_length})")
    for name in ("max_body_bytes", "max_n", "max_logprobs", "max_prompts", "default_max_tokens"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
    if args.chat_template not in (None, MODEL_TEMPLATE):
        chat_template_text(args.chat_template)
    check_listen(args.host, args.port)
