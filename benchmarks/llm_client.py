"""Throughput of the LLM client: concurrency against a fixed-latency server, and cache hits.

1. A fake OpenAI-compatible server (`drover.llm.testing.FakeOpenAIServer`, in its own
   process so it does not share the client's GIL) answers every request after `--delay`
   seconds. With c requests in flight the ideal rate is c / delay; the table shows the
   measured rate of `LLM.run` (cache writes included) as a fraction of it. Above some
   rate the client's own CPU per request is the ceiling (`client ms/req`: the `openai`
   package's request building dominates; drover's lean transport for http:// endpoints,
   `drover.llm.transport`, took it from ~4 to ~1.3 ms on a 2-core machine). Responses
   to one wave of requests arrive together, so each wave costs that CPU once per request.
2. Cache hits: a fully cached re-run of `--hits` requests through `LLM.run`, against a
   baseline measured in the same run: one SQLite SELECT per request.

Targets: >= 90% of ideal at concurrency 64, >= 5,000 cache hits/s.

    .venv/bin/python benchmarks/llm_client.py [--delay 1.0] [--rounds 4] [--hits 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from drover.llm.client import LLM
from drover.llm.config import LLMConfig
from drover.completions import Request

SERVER = "from drover.llm.testing import FakeOpenAIServer; FakeOpenAIServer(delay={delay}, port={port}).serve_forever()"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the fake server did not start")


def process_cpu(pid: int) -> float:
    """CPU seconds used so far by another process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def requests(n: int, tag: str) -> list[Request]:
    return [Request.chat([{"role": "user", "content": f"{tag}-{i}"}], key=str(i), max_tokens=16) for i in range(n)]


def concurrency_table(base_url: str, delay: float, levels: list[int], rounds: int, tmp: Path,
                      server_pid: int) -> list[dict]:
    rows = []
    for c in levels:
        n = rounds * c
        config = LLMConfig.from_spec(f"{base_url}#fake", concurrency=c, timeout=60)
        with LLM(config, tmp / f"c{c}.sqlite", progress=False) as llm:
            list(llm.run(requests(c, f"warm{c}")))  # one wave first: connections are opened once per job
            start, cpu, server_cpu = time.perf_counter(), time.process_time(), process_cpu(server_pid)
            out = list(llm.run(requests(n, f"c{c}")))
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            server_cpu = process_cpu(server_pid) - server_cpu
        assert all(o.ok for o in out), [o.error for o in out if not o.ok][:3]
        rate, ideal = n / wall, c / delay
        rows.append({"concurrency": c, "requests": n, "seconds": wall, "req_per_s": rate, "ideal": ideal,
                     "fraction": rate / ideal, "client_ms_per_req": 1000 * cpu / n,
                     "server_ms_per_req": 1000 * server_cpu / n})
    return rows


def cache_hits(n: int, tmp: Path) -> dict:
    path = tmp / "hits.sqlite"
    config = LLMConfig(backend="openai", model="fake", base_url="http://127.0.0.1:9/v1")  # never contacted
    reqs = requests(n, "hit")
    with LLM(config, path, progress=False) as llm:
        fps = [llm.fingerprint(r) for r in reqs]
        response = {"choices": [{"text": "a cached answer of moderate length " * 4, "finish_reason": "stop",
                                 "logprobs": None}], "usage": {"prompt_tokens": 12, "completion_tokens": 30},
                    "model": "fake", "cached": False, "latency": 1.0, "error": None, "key": None}
        llm.cache.put_many((fp, "completion", "openai", "fake", response, 12, 30, 0.0, 1.0) for fp in fps)
        start = time.perf_counter()
        cached = sum(1 for o in llm.run(reqs) if o.cached)  # streamed, as a job writing JSONL consumes it
        client = time.perf_counter() - start
        assert cached == n and llm.stats.hits == n
        start = time.perf_counter()
        kept = list(llm.run(reqs))  # all results kept in memory: Python's GC then costs extra
        kept_rate = n / (time.perf_counter() - start)
        assert len(kept) == n
    db = sqlite3.connect(str(path))
    start = time.perf_counter()
    for fp in fps:
        json.loads(db.execute("SELECT response FROM entries WHERE key = ?", (fp,)).fetchone()[0])
    baseline = time.perf_counter() - start
    db.close()
    return {"hits": n, "client_per_s": n / client, "list_per_s": kept_rate, "baseline_per_s": n / baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=1.0, help="server latency in seconds (default 1.0)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--rounds", type=int, default=4, help="requests per level = rounds x concurrency")
    parser.add_argument("--hits", type=int, default=20000)
    args = parser.parse_args()

    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER.format(delay=args.delay, port=port)])
    try:
        wait_for(port)
        with tempfile.TemporaryDirectory() as tmp:
            rows = concurrency_table(f"http://127.0.0.1:{port}/v1", args.delay, args.levels, args.rounds, Path(tmp),
                                     server.pid)
            hits = cache_hits(args.hits, Path(tmp))
    finally:
        server.terminate()
        server.wait()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{os.cpu_count()} CPUs, load average {load:.1f} (other processes share these cores)")
    print(f"LLM.run against a server answering after {args.delay:g} s (ideal = concurrency / delay)")
    print(f"{'concurrency':>11} {'requests':>8} {'seconds':>8} {'req/s':>8} {'ideal':>8} {'of ideal':>9} {'client ms/req':>14} {'server ms/req':>14}")
    for r in rows:
        print(f"{r['concurrency']:>11} {r['requests']:>8} {r['seconds']:>8.2f} {r['req_per_s']:>8.1f} "
              f"{r['ideal']:>8.1f} {100 * r['fraction']:>8.1f}% {r['client_ms_per_req']:>14.2f} {r['server_ms_per_req']:>14.2f}")
    print(f"\ncache hits through LLM.run: {hits['client_per_s']:,.0f}/s over {hits['hits']:,} requests "
          f"(baseline, one SELECT per request: {hits['baseline_per_s']:,.0f}/s; "
          f"ratio {hits['client_per_s'] / hits['baseline_per_s']:.2f}); "
          f"{hits['list_per_s']:,.0f}/s when the caller keeps every result (list(llm.run(...)))")
    at64 = next((r["fraction"] for r in rows if r["concurrency"] == 64), None)
    if at64 is not None:
        print(f"target >= 90% of ideal at 64: {'met' if at64 >= 0.9 else 'NOT met'} ({100 * at64:.1f}%)")
    print(f"target >= 5,000 hits/s: {'met' if hits['client_per_s'] >= 5000 else 'NOT met'}")


if __name__ == "__main__":
    main()
