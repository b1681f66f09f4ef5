"""Model FLOPs utilisation (MFU) against the matmul rate this process measures itself.

MFU (PaLM, Chowdhery et al. 2022, appendix B) = achieved model FLOP/s / peak FLOP/s,
with training costing 6 FLOPs per parameter per token (2 forward, 4 backward). A data
sheet's peak is never reached on a CPU, and on a shared machine the rate a process gets
changes from one minute to the next: so the peak here is a dense (n x n) @ (n x n)
matmul timed in the same process, dtype and thread count as training, which makes MFU
comparable between trainers run side by side.
"""

from __future__ import annotations

import time
from typing import Any


def matmul_gflops(device: Any = "cpu", dtype: Any = None, size: int = 1024, min_seconds: float = 0.2,
                  clock: Any = time.perf_counter) -> float:
    """Measured GFLOP/s of a square matmul on `device` in `dtype` (default bfloat16); best of the reps.
    `clock=time.process_time` gives GFLOP per CPU-second (steady on a shared CPU, with one thread)."""
    import torch

    dtype = dtype or torch.bfloat16
    device = torch.device(device)
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(2):
        a @ b
    sync()
    best, spent = float("inf"), 0.0
    while spent < min_seconds:
        start = clock()
        a @ b
        sync()
        took = clock() - start
        best, spent = min(best, took), spent + took
    return 2 * size ** 3 / max(best, 1e-9) / 1e9


def mfu(params: int, tokens: float, seconds: float, gflops: float) -> float:
    """6 * params * tokens / seconds / peak: the fraction of the measured matmul rate used."""
    if seconds <= 0 or gflops <= 0:
        return 0.0
    return 6 * params * tokens / seconds / (gflops * 1e9)
