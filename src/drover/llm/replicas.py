"""Several endpoints serving one model, used as one: least-outstanding-load routing.

A user with eight vLLM replicas gives drover all eight URLs (`base_url: [...]`) instead of
putting a load balancer in front. Each request goes to the healthy replica with the
fewest requests in flight (ties: the one picked least recently), which keeps a slow
replica from piling up work the way round-robin does. A replica whose request fails at
the connection level, times out or answers 5xx is taken out for `cooldown` seconds; the
request is retried on another replica at once (no backoff while a healthy one is left),
and after the cooldown the replica gets traffic again (one failure sends it back out).
When every replica is out, the one due back first is tried and the normal retry backoff
applies.

Runs on the client's event-loop thread only: no locks.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Replica:
    url: str
    clients: asyncio.Queue[Any]  # free HTTP clients bound to this URL (one per allowed request)
    outstanding: int = 0
    down_until: float = 0.0
    answered: int = 0
    failures: int = 0
    last_pick: int = 0  # order of the most recent pick (ties go to the least recent)
    errors: list[str] = field(default_factory=list)  # the latest failures (for the summary)


class ReplicaSet:
    def __init__(self, replicas: list[Replica], cooldown: float, clock: Any = time.monotonic):
        if not replicas:
            raise ValueError("a ReplicaSet needs at least one replica")
        self.replicas = replicas
        self.cooldown = cooldown
        self._clock = clock
        self._picks = itertools.count(1)

    def __len__(self) -> int:
        return len(self.replicas)

    def healthy(self) -> list[Replica]:
        now = self._clock()
        return [r for r in self.replicas if r.down_until <= now]

    def pick(self) -> Replica:
        """The healthy replica with the fewest requests in flight (else the first due back)."""
        candidates = self.healthy()
        if not candidates:
            return min(self.replicas, key=lambda r: r.down_until)
        return min(candidates, key=lambda r: (r.outstanding, r.last_pick))

    def acquire(self) -> tuple[Replica, Any]:
        replica = self.pick()
        replica.outstanding += 1
        replica.last_pick = next(self._picks)
        return replica, replica.clients.get_nowait()

    def release(self, replica: Replica, client: Any, failure: str | None = None) -> None:
        """Give the client back; `failure` (a replica-level error) takes the replica out."""
        replica.outstanding -= 1
        replica.clients.put_nowait(client)
        if failure is None:
            replica.answered += 1
            return
        replica.failures += 1
        replica.down_until = self._clock() + self.cooldown
        replica.errors = (replica.errors + [failure])[-3:]

    def another_healthy(self, replica: Replica) -> bool:
        """Is a replica other than this one available now (retry there without waiting)?"""
        return any(r is not replica for r in self.healthy())

    def summary(self) -> list[dict[str, Any]]:
        now = self._clock()
        return [{"url": r.url, "answered": r.answered, "failures": r.failures, "up": r.down_until <= now}
                for r in self.replicas]
