"""Token buckets for requests-per-minute and tokens-per-minute limits (asyncio).

Hosted APIs enforce both limits; staying under them avoids a storm of 429s. Token use is
*estimated* before a call (prompt characters / 4 + max completion tokens × n) and
corrected once the response reports its usage, so the bucket can run a small debt.
A bucket holds at most 10 seconds of budget, so a fresh start does not fire a whole
minute's worth of requests in one burst. A 429 with Retry-After pauses every caller
(`pause(seconds)`), not only the one that saw it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """`rate_per_minute` units refilled continuously; capacity = 10 s of refill (>= 1 unit)."""

    def __init__(self, rate_per_minute: float, clock: Callable[[], float] = time.monotonic,
                 burst_seconds: float = 10.0):
        self.rate = rate_per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = self.capacity
        self.clock = clock
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_time(self, amount: float) -> float:
        """Seconds until `amount` units are available (0 if now). Amounts above capacity
        only need a full bucket, so one huge request cannot block forever."""
        self._refill()
        need = min(amount, self.capacity)
        if self.level >= need:
            return 0.0
        return (need - self.level) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def give_back(self, amount: float) -> None:
        """Correct an estimate: positive gives units back, negative records extra use."""
        self._refill()
        self.level = min(self.capacity, self.level + amount)


class RateLimiter:
    """RPM and TPM buckets plus a shared pause after a server-side rate limit."""

    def __init__(self, rpm: float | None, tpm: float | None, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.requests = TokenBucket(rpm, clock) if rpm else None
        self.tokens = TokenBucket(tpm, clock) if tpm else None
        self.paused_until = 0.0
        self._lock: asyncio.Lock | None = None

    def wait_time(self, tokens: float) -> float:
        waits = [self.paused_until - self.clock()]
        if self.requests:
            waits.append(self.requests.wait_time(1))
        if self.tokens:
            waits.append(self.tokens.wait_time(tokens))
        return max(0.0, *waits)

    async def acquire(self, tokens: float) -> None:
        """Wait until one request of about `tokens` tokens fits, then take it (FIFO-ish)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            while True:
                delay = self.wait_time(tokens)
                if delay <= 0:
                    break
                await asyncio.sleep(delay)
            if self.requests:
                self.requests.take(1)
            if self.tokens:
                self.tokens.take(tokens)

    def correct(self, estimated: float, actual: float) -> None:
        if self.tokens:
            self.tokens.give_back(estimated - actual)

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, self.clock() + seconds)


def estimate_tokens(prompt_chars: int, max_tokens: int, n: int) -> float:
    """A rough pre-call token estimate: ~4 characters per token, plus the completion budget."""
    return prompt_chars / 4.0 + max_tokens * n
