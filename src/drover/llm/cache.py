"""The persistent LLM cache: one SQLite file (WAL) per run directory.

Every answered request is committed as soon as it arrives, keyed by
`request_fingerprint(...)` (or `score_fingerprint` for scoring), so a crashed,
interrupted or repeated job never pays twice for the same call. Errors are *not*
cached: a re-run retries them. Reads are batched (`get_many`: one query for a whole
chunk of requests) so a fully cached re-run streams thousands of hits per second.

Hit/miss/error counters accumulate in a `counters` table so `drover cache stats RUN_DIR`
can show them after the fact. Any SQLite failure (corrupt file, lock held too long)
becomes a `CacheError` that names the file and what to do.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from drover.errors import CacheError

SCHEMA_VERSION = 1
_MAX_PARAMS = 500  # SQLite's host-parameter limit is 999 on old builds

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,              -- 'completion' | 'score'
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    response TEXT NOT NULL,          -- JSON: Completion.to_dict() / Score.to_dict() (log-probs included)
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    latency REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class LLMCache:
    """A thread-safe SQLite cache of LLM responses (one connection, one lock)."""

    def __init__(self, path: str | Path, timeout: float = 30.0):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._pending = {"hits": 0, "misses": 0, "errors": 0}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), timeout=timeout, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # durable against a killed process
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
            if row is None:
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise CacheError(f"{self.path}: cache schema version {row[0]} is newer than this drover "
                                 f"({SCHEMA_VERSION}); upgrade drover or use another cache file")
        except sqlite3.Error as exc:
            raise self._error(exc, "open") from None

    # --- errors ---------------------------------------------------------------------------
    def _error(self, exc: sqlite3.Error, action: str) -> CacheError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return CacheError(f"{self.path}: LLM cache is locked by another process ({action} failed: {text}); "
                              "wait for the other job to finish or give this run its own cache file")
        if isinstance(exc, sqlite3.DatabaseError) and ("not a database" in text or "malformed" in text
                                                        or "corrupt" in text or "disk image" in text):
            return CacheError(f"{self.path}: LLM cache is corrupt ({text}); move the file away to start "
                              "a fresh cache (answers stored in it would be requested again)")
        return CacheError(f"{self.path}: LLM cache {action} failed: {text}")

    # --- reads ----------------------------------------------------------------------------
    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The stored responses (as dicts) for those of `keys` that are cached."""
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(keys))
        try:
            with self._lock:
                for start in range(0, len(unique), _MAX_PARAMS):
                    part = unique[start:start + _MAX_PARAMS]
                    marks = ",".join("?" * len(part))
                    rows = self._db.execute(f"SELECT key, response FROM entries WHERE key IN ({marks})",
                                            part).fetchall()
                    for key, response in rows:
                        found[key] = json.loads(response)
        except sqlite3.Error as exc:
            raise self._error(exc, "read") from None
        except ValueError as exc:
            raise CacheError(f"{self.path}: LLM cache holds an unreadable entry ({exc}); "
                             "move the file away to start a fresh cache") from None
        return found

    def get(self, key: str) -> dict[str, Any] | None:
        return self.get_many([key]).get(key)

    # --- writes ---------------------------------------------------------------------------
    def put(self, key: str, kind: str, backend: str, model: str, response: dict[str, Any],
            prompt_tokens: int = 0, completion_tokens: int = 0, cost: float = 0.0,
            latency: float = 0.0) -> None:
        """Store one response and commit at once (a kill right after loses nothing)."""
        self.put_many([(key, kind, backend, model, response, prompt_tokens, completion_tokens, cost, latency)])

    def put_many(self, rows: Iterable[tuple[str, str, str, str, dict[str, Any], int, int, float, float]]) -> None:
        now = time.time()
        data = [(k, kind, b, m, json.dumps(resp, ensure_ascii=False), pt, ct, cost, lat, now)
                for k, kind, b, m, resp, pt, ct, cost, lat in rows]
        if not data:
            return
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany("INSERT OR REPLACE INTO entries VALUES (?,?,?,?,?,?,?,?,?,?)", data)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise self._error(exc, "write") from None

    def merge(self, other: str | Path) -> int:
        """Import another cache file's entries (a shard's part); existing keys win. Returns rows added."""
        try:
            with self._lock:
                before = self._db.total_changes
                self._db.execute("ATTACH DATABASE ? AS part", (str(other),))
                try:
                    self._db.execute("INSERT OR IGNORE INTO entries SELECT * FROM part.entries")
                finally:
                    self._db.execute("DETACH DATABASE part")
                return self._db.total_changes - before
        except sqlite3.Error as exc:
            raise self._error(exc, f"merge of {other}") from None

    # --- counters -------------------------------------------------------------------------
    def count(self, hits: int = 0, misses: int = 0, errors: int = 0) -> None:
        """Accumulate hit/miss/error counts in memory; `flush_counters` persists them."""
        with self._lock:
            self._pending["hits"] += hits
            self._pending["misses"] += misses
            self._pending["errors"] += errors

    def flush_counters(self) -> None:
        with self._lock:
            pending = {k: v for k, v in self._pending.items() if v}
            self._pending = {"hits": 0, "misses": 0, "errors": 0}
            if not pending:
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for name, value in pending.items():
                    self._db.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) "
                                     "DO UPDATE SET value = value + excluded.value", (name, value))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise self._error(exc, "write") from None

    def stats(self) -> dict[str, Any]:
        """Totals over the file: entries, tokens, cost, and the accumulated counters, per model."""
        self.flush_counters()
        try:
            with self._lock:
                counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
                rows = self._db.execute(
                    "SELECT backend, model, kind, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), "
                    "SUM(cost), AVG(latency) FROM entries GROUP BY backend, model, kind ORDER BY backend, model, kind"
                ).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc, "read") from None
        models = [{"backend": b, "model": m, "kind": k, "entries": n, "prompt_tokens": int(pt or 0),
                   "completion_tokens": int(ct or 0), "cost": float(c or 0.0), "mean_latency": float(lat or 0.0)}
                  for b, m, k, n, pt, ct, c, lat in rows]
        return {
            "path": str(self.path),
            "entries": sum(r["entries"] for r in models),
            "hits": int(counters.get("hits", 0)),
            "misses": int(counters.get("misses", 0)),
            "errors": int(counters.get("errors", 0)),
            "prompt_tokens": sum(r["prompt_tokens"] for r in models),
            "completion_tokens": sum(r["completion_tokens"] for r in models),
            "cost": sum(r["cost"] for r in models),
            "models": models,
        }

    def close(self) -> None:
        try:
            self.flush_counters()
        finally:
            with self._lock:
                self._db.close()

    def __enter__(self) -> "LLMCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
