"""Retry policy: which failures are worth retrying, and how long to wait.

Retried: 429 (rate limit), 5xx, 408/409, timeouts and connection errors. Not retried:
other 4xx (the request itself is wrong; the error is recorded for that item). Fatal:
401/403/404 (bad key, no access, unknown model or endpoint) fail the whole job once,
instead of recording the same error for every item.

Waits grow exponentially with jitter (so many clients do not retry in lockstep), and a
server's Retry-After (seconds or HTTP date; also retry-after-ms) wins when given.
"""

from __future__ import annotations

import email.utils
import random
import re
import time
from collections.abc import Mapping
from enum import Enum


class Verdict(Enum):
    RETRY = "retry"
    RECORD = "record"  # give up on this item, record the error
    FATAL = "fatal"  # give up on the whole job


def classify_status(status: int) -> Verdict:
    if status == 429 or status >= 500 or status in (408, 409):
        return Verdict.RETRY
    if status in (401, 403, 404):
        return Verdict.FATAL
    return Verdict.RECORD


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Wait before retry number `attempt` (0-based): base·2^attempt, capped, times U(0.5, 1)."""
    rng = rng or random
    return min(cap, base * (2 ** attempt)) * (0.5 + 0.5 * rng.random())


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The server's requested wait, from `retry-after-ms` or `retry-after` (seconds or date)."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_KEY_PATTERNS = [re.compile(r"sk-[A-Za-z0-9_\-*]{6,}"), re.compile(r"(Bearer\s+)[A-Za-z0-9_\-.=]{8,}")]


def redact(text: str, secrets: list[str | None]) -> str:
    """Remove API keys from a message before it is logged, cached or raised."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _KEY_PATTERNS[0].sub("sk-***", text)
    return _KEY_PATTERNS[1].sub(r"\1***", text)
