"""Client throughput across three local replicas vs one, at the same total concurrency.

Each replica is a fake OpenAI-compatible server in its own process that serves at most
`--capacity` requests at once, each taking `--delay` seconds (a model server's batch
slots: one replica's ceiling is capacity / delay requests/s). The client sends `--requests`
requests with `--concurrency` in flight, first to one replica, then to the three as one
replica set (`base_url: [...]`, least-outstanding routing). Ideal ratio: 3.0 (while the
client's own CPU is not the bottleneck).

    .venv/bin/python benchmarks/replicas.py [--requests 600] [--concurrency 48] [--capacity 8] [--delay 0.05]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from drover.llm.client import LLM
from drover.llm.config import LLMConfig
from drover.completions import Request

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_client import free_port, wait_for  # noqa: E402  (the same helpers as the client benchmark)

SERVER = ("from drover.llm.testing import FakeOpenAIServer; "
          "FakeOpenAIServer(delay={delay}, port={port}, capacity={capacity}).serve_forever()")


def rate(urls: list[str], n: int, concurrency: int, tag: str, cache: Path) -> tuple[float, dict[str, int]]:
    config = LLMConfig.from_spec(",".join(urls) + "#fake", concurrency=concurrency, timeout=60)
    requests = [Request.chat([{"role": "user", "content": f"{tag}-{i}"}], max_tokens=16) for i in range(n)]
    with LLM(config, cache, progress=False) as llm:
        list(llm.run([Request.chat([("user", f"warm-{tag}-{i}")]) for i in range(concurrency)]))  # connections
        start = time.perf_counter()
        out = list(llm.run(requests))
        wall = time.perf_counter() - start
        spread = {r["url"]: r["answered"] for r in llm._backend.replicas.summary()}
    assert all(c.ok for c in out), [c.error for c in out if not c.ok][:3]
    return n / wall, spread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=48, help="total requests in flight (both runs)")
    parser.add_argument("--capacity", type=int, default=8, help="requests one replica serves at once")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per request on a replica")
    args = parser.parse_args()
    ports = [free_port() for _ in range(3)]
    servers = [subprocess.Popen([sys.executable, "-c", SERVER.format(delay=args.delay, port=p, capacity=args.capacity)])
               for p in ports]
    try:
        for port in ports:
            wait_for(port)
        urls = [f"http://127.0.0.1:{p}/v1" for p in ports]
        with tempfile.TemporaryDirectory() as tmp:
            one, _ = rate(urls[:1], args.requests, args.concurrency, "one", Path(tmp) / "one.sqlite")
            three, spread = rate(urls, args.requests, args.concurrency, "three", Path(tmp) / "three.sqlite")
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
    ceiling = args.capacity / args.delay
    print(f"replicas: {args.requests} requests, {args.concurrency} in flight; one replica serves "
          f"{args.capacity} at a time x {args.delay * 1000:.0f} ms (ceiling {ceiling:.0f} req/s each)")
    print(f"| replicas | req/s | of ideal |\n|---|---|---|\n| 1 | {one:.0f} | {one / ceiling:.0%} |\n"
          f"| 3 | {three:.0f} | {three / (3 * ceiling):.0%} |")
    print(f"answered per replica (3): {sorted(spread.values())}")
    print(f"ratio 3 replicas / 1: {three / one:.2f}x (ideal 3.00x)")


if __name__ == "__main__":
    main()
