"""An open study: the one place that reads and writes its database.

A save is one transaction: the rater's current answer row is locked (`FOR UPDATE` on
PostgreSQL; SQLite transactions are BEGIN IMMEDIATE), its version compared with the
version the rater's page was built from, then the answer is written and a history row
appended. A second submission is therefore always an explicit edit of a known version;
a stale page (another tab, a double click) gets `SaveConflict`, never a silent drop.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import DatabaseError, IntegrityError

from drover.errors import ConfigError
from drover.human import db
from drover.human.forms import Form, load_form
from drover.human.tokens import hash_token

STUDY_FILE = "study.json"


class SaveConflict(Exception):
    """The answer changed since the page was shown (its version is `current`)."""

    def __init__(self, current: int):
        super().__init__(f"this answer was saved meanwhile (now version {current})")
        self.current = current


class StudyClosed(Exception):
    """The study is closed: answers are read-only."""


@dataclass(frozen=True)
class Rater:
    name: str
    role: str            # "rater" | "admin"


@dataclass(frozen=True)
class Assignment:
    item_id: str
    position: int        # in this rater's list
    swapped: bool
    item_position: int   # the item's place in the study: its URL, /item/<item_position>


@dataclass(frozen=True)
class Item:
    id: str
    position: int
    prompt: list[dict[str, str]]
    output_a: str
    output_b: str


@dataclass(frozen=True)
class Answer:
    rater: str
    item_id: str
    version: int
    answers: dict[str, Any]
    comment: str
    flags: list[str]
    saved: str


def sqlite_url(directory: str | Path) -> str:
    return f"sqlite:///{(Path(directory) / 'study.sqlite').resolve()}"


def _answer(row: Any) -> Answer:
    return Answer(row.rater, row.item_id, row.version, json.loads(row.answers), row.comment, json.loads(row.flags),
                  row.saved)


SESSION_DAYS = 90  # a sign-in lasts this long (the session cookie's max-age too)


def _utc_stamp(seconds: float | None = None) -> str:
    """A moment (now by default) as the fixed-format UTC text the database keeps: compares as text."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _session_cutoff() -> str:
    """The `created` stamp before which a session has expired."""
    return _utc_stamp(time.time() - SESSION_DAYS * 86400)


class Study:
    """A study directory (study.json + its database) opened for the app or the results."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        spec_path = self.directory / STUDY_FILE
        if not spec_path.is_file():
            raise ConfigError(f"{self.directory}: not a study (no {STUDY_FILE}); create one with "
                              f"`drover human create`")
        try:
            spec = json.loads(spec_path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:  # UnicodeDecodeError is a ValueError
            raise ConfigError(f"{spec_path}: not valid JSON ({exc})") from None
        if not isinstance(spec, dict) or not isinstance(spec.get("db") or "", str):
            raise ConfigError(f"{spec_path}: expected a JSON object with an optional string field \"db\"")
        self.url = spec.get("db") or sqlite_url(self.directory)
        self.engine = db.make_engine(self.url)
        db.migrate(self.engine)
        try:
            with self.engine.begin() as conn:
                values = dict(conn.execute(select(db.meta.c.key, db.meta.c.value)).all())
            self.settings: dict[str, Any] = json.loads(values["settings"])
            self.secret: str = values["secret"]
            self.name_a: str = self.settings["name_a"]
            self.name_b: str = self.settings["name_b"]
            form = self.settings["form"]
        except (DatabaseError, KeyError, TypeError, ValueError) as exc:
            detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ConfigError(f"{self.directory}: the study database {db.redact(self.url)} holds no readable "
                              f"study ({type(exc).__name__}{': ' + detail if detail else ''})") from None
        self.form: Form = load_form(form)

    def close_engine(self) -> None:
        self.engine.dispose()

    # ---- identities -------------------------------------------------------------------------------------------
    def rater_for_token(self, token: str) -> Rater | None:
        if not token:
            return None
        with self.engine.begin() as conn:
            row = conn.execute(select(db.raters.c.name, db.raters.c.role)
                               .where(db.raters.c.token_hash == hash_token(token))).first()
        return Rater(row.name, row.role) if row else None

    def open_session(self, rater: str) -> str:
        """A new session token for a rater who just signed in (only its hash is stored);
        sessions past SESSION_DAYS are deleted on the way, so the table does not grow forever."""
        import secrets

        token = secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(delete(db.sessions).where(db.sessions.c.created < _session_cutoff()))
            conn.execute(insert(db.sessions).values(token_hash=hash_token(token), rater=rater,
                                                    created=_utc_stamp()))
        return token

    def rater_for_session(self, token: str) -> Rater | None:
        """The rater of a live session: signed in within the last SESSION_DAYS (the cookie's
        own lifetime, so a copied cookie does not outlive it) and not signed out."""
        if not token:
            return None
        oldest = _session_cutoff()
        with self.engine.begin() as conn:
            row = conn.execute(select(db.raters.c.name, db.raters.c.role)
                               .join(db.sessions, db.sessions.c.rater == db.raters.c.name)
                               .where(db.sessions.c.token_hash == hash_token(token), db.sessions.c.created >= oldest)
                               ).first()
        return Rater(row.name, row.role) if row else None

    def close_session(self, token: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(db.sessions).where(db.sessions.c.token_hash == hash_token(token)))

    def raters(self) -> list[str]:
        with self.engine.begin() as conn:
            return list(conn.execute(select(db.raters.c.name).where(db.raters.c.role == "rater")
                                     .order_by(db.raters.c.name)).scalars())

    # ---- items and assignments --------------------------------------------------------------------------------
    def assignments(self, rater: str) -> list[Assignment]:
        with self.engine.begin() as conn:
            rows = conn.execute(select(db.assignments, db.items.c.position.label("item_position"))
                                .join(db.items, db.items.c.id == db.assignments.c.item_id)
                                .where(db.assignments.c.rater == rater).order_by(db.assignments.c.position)).all()
        return [Assignment(r.item_id, r.position, bool(r.swapped), r.item_position) for r in rows]

    def item(self, item_id: str) -> Item:
        with self.engine.begin() as conn:
            r = conn.execute(select(db.items).where(db.items.c.id == item_id)).one()
        return Item(r.id, r.position, json.loads(r.prompt), r.output_a, r.output_b)

    def items(self) -> list[Item]:
        with self.engine.begin() as conn:
            rows = conn.execute(select(db.items).order_by(db.items.c.position)).all()
        return [Item(r.id, r.position, json.loads(r.prompt), r.output_a, r.output_b) for r in rows]

    # ---- answers ----------------------------------------------------------------------------------------------
    def answer(self, rater: str, item_id: str) -> Answer | None:
        with self.engine.begin() as conn:
            row = conn.execute(select(db.answers).where(db.answers.c.rater == rater,
                                                        db.answers.c.item_id == item_id)).first()
        return _answer(row) if row else None

    def answered(self, rater: str) -> set[str]:
        with self.engine.begin() as conn:
            return set(conn.execute(select(db.answers.c.item_id).where(db.answers.c.rater == rater)).scalars())

    def all_answers(self) -> list[Answer]:
        with self.engine.begin() as conn:
            rows = conn.execute(select(db.answers).order_by(db.answers.c.item_id, db.answers.c.rater)).all()
        return [_answer(r) for r in rows]

    def history(self, rater: str, item_id: str) -> list[Answer]:
        with self.engine.begin() as conn:
            rows = conn.execute(select(db.answer_history).where(db.answer_history.c.rater == rater,
                                                                db.answer_history.c.item_id == item_id)
                                .order_by(db.answer_history.c.version)).all()
        return [_answer(r) for r in rows]

    def history_count(self) -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(select(func.count()).select_from(db.answer_history)).scalar() or 0)

    def save(self, rater: str, item_id: str, expected_version: int, answers: dict[str, Any], comment: str,
             flags: list[str]) -> int:
        """Store an answer made from version `expected_version` (0: a first answer); returns the new version."""
        saved = _utc_stamp()
        values = {"answers": json.dumps(answers, sort_keys=True), "comment": comment,
                  "flags": json.dumps(sorted(flags)), "saved": saved}
        try:
            with self.engine.begin() as conn:
                if self._closed(conn):
                    raise StudyClosed()
                current = conn.execute(select(db.answers.c.version).where(
                    db.answers.c.rater == rater, db.answers.c.item_id == item_id).with_for_update()).scalar()
                if (current or 0) != expected_version:
                    raise SaveConflict(current or 0)
                version = expected_version + 1
                if current is None:
                    conn.execute(insert(db.answers).values(rater=rater, item_id=item_id, version=version, **values))
                else:
                    conn.execute(update(db.answers).where(db.answers.c.rater == rater, db.answers.c.item_id == item_id)
                                 .values(version=version, **values))
                conn.execute(insert(db.answer_history).values(rater=rater, item_id=item_id, version=version,
                                                              **values))
        except IntegrityError:  # a concurrent first answer won the insert
            raise SaveConflict(expected_version + 1) from None
        return version

    # ---- study state ------------------------------------------------------------------------------------------
    @staticmethod
    def _closed(conn: Any) -> bool:
        return conn.execute(select(db.meta.c.value).where(db.meta.c.key == "closed")).scalar() == "1"

    def is_closed(self) -> bool:
        with self.engine.begin() as conn:
            return self._closed(conn)

    def set_closed(self, closed: bool) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(db.meta).where(db.meta.c.key == "closed").values(value="1" if closed else "0"))

    def progress(self) -> dict[str, dict[str, int]]:
        """Per rater: assigned and answered counts."""
        with self.engine.begin() as conn:
            assigned = dict(conn.execute(select(db.assignments.c.rater, func.count())
                                         .group_by(db.assignments.c.rater)).all())
            done = dict(conn.execute(select(db.answers.c.rater, func.count()).group_by(db.answers.c.rater)).all())
        return {r: {"assigned": int(assigned.get(r, 0)), "answered": int(done.get(r, 0))} for r in self.raters()}
