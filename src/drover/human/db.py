"""The study database: schema, versioned migrations and the engine.

SQLite (one file inside the study directory, WAL) by default; PostgreSQL for teams
through a SQLAlchemy URL (`postgresql+psycopg://user:pw@host/db`). Every statement is
SQLAlchemy Core with bound parameters: no SQL is built from strings a user typed.

Migrations are a numbered list applied in order and recorded in `schema_version`, so a
study created by an older drover is upgraded when it is opened, and a study written by a
newer drover is refused instead of half-read.

Tables (answers are stored from system a's side, see `forms.py`):
    meta(key, value)                          form, system names, seed, secret, closed
    items(id, position, prompt, output_a, output_b)
    raters(name, token_hash, role)            role: "rater" | "admin"; tokens stored hashed
    sessions(token_hash, rater, created)      one per sign-in, deleted at sign-out (hashed too)
    assignments(rater, item_id, position, swapped)   swapped: B is system a on the page
    answers(rater, item_id, version, answers, comment, flags, saved)   the latest answer
    answer_history(id, rater, item_id, version, answers, comment, flags, saved)  every save
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (Boolean, Column, ForeignKey, Integer, MetaData, PrimaryKeyConstraint, String, Table, Text,
                        UniqueConstraint, create_engine, event, insert, inspect, select)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, DatabaseError

from drover.errors import ConfigError

metadata = MetaData()

schema_version = Table("schema_version", metadata, Column("version", Integer, primary_key=True))
meta = Table("meta", metadata, Column("key", String(64), primary_key=True), Column("value", Text, nullable=False))
items = Table(
    "items", metadata,
    Column("id", String(200), primary_key=True),
    Column("position", Integer, nullable=False, unique=True),
    Column("prompt", Text, nullable=False),       # JSON list of {role, content}
    Column("output_a", Text, nullable=False),
    Column("output_b", Text, nullable=False),
)
raters = Table(
    "raters", metadata,
    Column("name", String(80), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
)
assignments = Table(
    "assignments", metadata,
    Column("rater", String(80), ForeignKey("raters.name"), nullable=False),
    Column("item_id", String(200), ForeignKey("items.id"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("swapped", Boolean, nullable=False),
    PrimaryKeyConstraint("rater", "item_id"),
    UniqueConstraint("rater", "position"),
)


# A signed-in browser holds a session token, never the invite token: signing out deletes
# the session, so a copied cookie stops working then (the invite token stays the rater's).
sessions = Table(
    "sessions", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("rater", String(80), ForeignKey("raters.name"), nullable=False),
    Column("created", String(32), nullable=False),
)


def _answer_columns() -> list[Column]:
    """The columns an answer and each of its history rows share (fresh objects per table)."""
    return [Column("version", Integer, nullable=False),
            Column("answers", Text, nullable=False),   # JSON: canonical answers
            Column("comment", Text, nullable=False),
            Column("flags", Text, nullable=False),     # JSON list
            Column("saved", String(32), nullable=False)]


answers = Table(
    "answers", metadata,
    Column("rater", String(80), nullable=False),
    Column("item_id", String(200), nullable=False),
    *_answer_columns(),
    PrimaryKeyConstraint("rater", "item_id"),
)
answer_history = Table(
    "answer_history", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rater", String(80), nullable=False),
    Column("item_id", String(200), nullable=False),
    *_answer_columns(),
    UniqueConstraint("rater", "item_id", "version"),
)


def _v1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[meta, items, raters, assignments, answers, answer_history])


def _v2(conn: Connection) -> None:
    metadata.create_all(conn, tables=[sessions])


# The migrations, in order: MIGRATIONS[i] brings a database from version i to i + 1.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2]
SCHEMA_VERSION = len(MIGRATIONS)


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and write-ahead locking
    (every transaction is BEGIN IMMEDIATE, so concurrent writers queue instead of failing
    with "database is locked" half-way through an upgrade from reader to writer)."""
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False},
                                   pool_size=8, max_overflow=56)
            _sqlite_locking(engine)
        else:
            engine = create_engine(url, pool_size=10, max_overflow=40, pool_pre_ping=True)
    except (ArgumentError, ImportError) as exc:  # a malformed URL or a driver that is not installed
        raise ConfigError(f"database URL {redact(url)}: {exc}") from None
    return engine


def _sqlite_locking(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let the "begin" hook below emit BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


_MIGRATE_LOCK = 0x64726F766572  # "drover": the PostgreSQL advisory lock migrations hold, one at a time


def migrate(engine: Engine) -> int:
    """Bring the schema to SCHEMA_VERSION; returns the version found before. Every open of
    a study migrates it, so processes opening an old study together (the server and
    `drover human results`) take turns: the first upgrades it, the others find it upgraded."""
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # SQLite queues on BEGIN IMMEDIATE; PG would race the DDL
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATE_LOCK})")
            if not inspect(conn).has_table("schema_version"):
                metadata.create_all(conn, tables=[schema_version])
            found = conn.execute(select(schema_version.c.version).order_by(schema_version.c.version.desc())
                                 ).scalar() or 0
            if found > SCHEMA_VERSION:
                raise ConfigError(f"the study database has schema version {found}; this drover knows up to "
                                  f"{SCHEMA_VERSION}: upgrade drover")
            for version in range(found, SCHEMA_VERSION):
                MIGRATIONS[version](conn)
                conn.execute(insert(schema_version).values(version=version + 1))
    except DatabaseError as exc:  # OperationalError, or "file is not a database" for a corrupt file
        raise ConfigError(f"cannot open the study database {redact(str(engine.url))}: "
                          f"{str(exc.orig).strip().splitlines()[0]}") from None
    return found


def redact(url: str) -> str:
    """A database URL with its password hidden (for messages)."""
    head, sep, tail = url.rpartition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, cred = head.partition("://")
    user = cred.split(":", 1)[0]
    return f"{scheme}://{user}:***@{tail}" if ":" in cred else url
