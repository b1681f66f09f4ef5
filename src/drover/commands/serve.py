"""Serve a local model over an OpenAI-compatible HTTP API.

    drover serve runs/tiny --port 8000 --model-name tiny
    # then, from any pipeline:  llm: {backend: openai, base_url: http://127.0.0.1:8000/v1, model: tiny}
    # or on a command line:     --teacher http://127.0.0.1:8000/v1#tiny

Endpoints: /v1/models, /v1/chat/completions (n, temperature, top_p, max_tokens, stop,
seed, logprobs/top_logprobs) and /v1/completions (echo + logprobs + max_tokens=0 scores
a given text). Concurrent requests are batched onto the model (--max-batch-size).

On a GPU machine with vLLM installed, `vllm serve MODEL_PATH --served-model-name NAME
--port 8000` exposes the same API much faster (paged attention, continuous batching);
drover's client needs nothing else to talk to it.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_path", help="local model directory (save_pretrained output)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--model-name", default=None,
                        help="the name clients pass as `model` (default: the model path)")
    parser.add_argument("--chat-template", default=None,
                        help="chat template for a tokenizer without one: tulu, chatml (default: the tokenizer's own)")
    parser.add_argument("--max-batch-size", type=int, default=8, help="sequences per model call (default 8)")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16 (default auto)")
    parser.add_argument("--device", default="auto",
                        help="torch device, e.g. cpu or cuda:0 (default auto: the first GPU if any, else cpu)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="max prompt+completion tokens; longer prompts lose their oldest tokens")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from drover.infer.server import load_app

    _check_options(args)
    name = args.model_name or args.model_path
    app = load_app(args.model_path, model_name=name, chat_template=args.chat_template,
                   max_batch_size=args.max_batch_size, dtype=args.dtype, device=args.device,
                   max_length=args.max_length)
    print(f"drover serve: {args.model_path} as {name!r} at http://{args.host}:{args.port}/v1 (Ctrl-C stops)",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _check_options(args: argparse.Namespace) -> None:
    """Fail on bad options and a busy port before spending time on loading the model."""
    from drover.errors import ConfigError
    from drover.listen import check_listen
    from drover.templates import MODEL_TEMPLATE, chat_template_text

    if args.max_batch_size < 1:
        raise ConfigError(f"--max-batch-size must be at least 1 (got {args.max_batch_size})")
    if args.max_length is not None and args.max_length < 1:
        raise ConfigError(f"--max-length must be at least 1 (got {args.max_length})")
    if args.chat_template not in (None, MODEL_TEMPLATE):
        chat_template_text(args.chat_template)
    check_listen(args.host, args.port)
