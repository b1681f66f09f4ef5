"""Build a study from two systems' outputs: match, assign, write the database and invites.

Inputs are `Conversation` JSONL files (the last assistant turn is the output; the turns
before it are the prompt), e.g. two models' answers to the 252 Self-Instruct
user-oriented instructions + Vicuna-80 as in Tülu §4.3. Records are matched by id (and
then must have the same prompt) or, with `match="prompt"`, by prompt text; whatever does
not match is reported, never silently dropped.

Assignment: `overlap` items (drawn with the seed) are rated by `overlap_raters` raters
(default: all), which is what inter-annotator agreement is computed on (Tülu Appendix G
used 2 raters on 119 items); every other item gets `per_item` raters, the least loaded
first. The display order (which system is "A") is drawn per (rater, item) and stored
server-side only.
"""

from __future__ import annotations

import json
import random
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from drover.errors import ConfigError, DataError, InputError
from drover.human import db
from drover.human.forms import load_form
from drover.human.store import STUDY_FILE, sqlite_url
from drover.human.tokens import hash_token
from drover.identity import file_fingerprint
from drover.records import Conversation, iter_json_lines

RATER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
INVITES_FILE = "invites.txt"


@dataclass
class StudyConfig:
    """Everything `drover human create` decides; one typed config, every default here."""

    a: str                                   # Conversation JSONL of system a
    b: str                                   # Conversation JSONL of system b
    out: str                                 # the study directory
    form: str = "tulu"                       # a form in resources/human/forms
    raters: list[str] = field(default_factory=lambda: ["rater1", "rater2"])
    per_item: int = 1                        # raters per ordinary item
    overlap: int = 0                         # items every overlap rater rates (agreement set)
    overlap_raters: int = 0                  # 0 = all raters
    match: str = "id"                        # "id" or "prompt"
    name_a: str = ""                         # system names (default: the file stems)
    name_b: str = ""
    db: str = ""                             # SQLAlchemy URL; default sqlite in the study directory
    seed: int = 0
    base_url: str = "http://127.0.0.1:8000"  # for the invite links written to invites.txt

    def validate(self) -> None:
        load_form(self.form)
        if self.match not in ("id", "prompt"):
            raise ConfigError(f"--match must be 'id' or 'prompt' (got {self.match!r})")
        if not self.raters:
            raise ConfigError("--raters: give at least one rater name")
        for name in self.raters:
            if not RATER_NAME.match(name) or name == "admin":
                raise ConfigError(f"--raters: {name!r} is not a valid rater name (letters, digits, . _ -; "
                                  f"at most 80; not 'admin')")
        if len(set(self.raters)) != len(self.raters):
            raise ConfigError("--raters: a name is given twice")
        if not 1 <= self.per_item <= len(self.raters):
            raise ConfigError(f"--per-item must be between 1 and the number of raters ({len(self.raters)})")
        if self.overlap < 0:
            raise ConfigError("--overlap must be >= 0")
        k = self.overlap_raters or len(self.raters)
        if self.overlap and not 2 <= k <= len(self.raters):
            raise ConfigError(f"--overlap-raters must be between 2 and the number of raters ({len(self.raters)}); "
                              f"agreement needs two raters on an item")


@dataclass
class Item:
    id: str
    prompt: list[dict[str, str]]
    output_a: str
    output_b: str


@dataclass
class MatchReport:
    matched: int = 0
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    prompt_differs: list[str] = field(default_factory=list)
    name_a: str = "A"
    name_b: str = "B"

    def lines(self) -> list[str]:
        name_a, name_b = self.name_a, self.name_b
        def few(ids: list[str]) -> str:
            return ", ".join(ids[:5]) + (f", ... ({len(ids)} in all)" if len(ids) > 5 else "")
        out = [f"matched {self.matched} prompts"]
        if self.only_a:
            out.append(f"only in {name_a}: {len(self.only_a)} ({few(self.only_a)})")
        if self.only_b:
            out.append(f"only in {name_b}: {len(self.only_b)} ({few(self.only_b)})")
        if self.prompt_differs:
            out.append(f"same id, different prompt (left out): {len(self.prompt_differs)} "
                       f"({few(self.prompt_differs)})")
        return out


def read_outputs(path: str) -> dict[str, tuple[Conversation, int]]:
    """id -> (record, line) of a Conversation file; every record needs a final assistant turn."""
    out: dict[str, tuple[Conversation, int]] = {}
    for line, obj in iter_json_lines(path):
        conv = Conversation.from_dict(obj, (str(path), line), require_assistant=True)
        if conv.messages[-1].role != "assistant":
            raise InputError(path, line, f"messages[{len(conv.messages) - 1}].role",
                             "the last turn must be the system's output (role assistant)")
        if len(conv.messages) < 2 or conv.messages[-2].role != "user":
            raise InputError(path, line, "messages", "the output must answer a user turn (no prompt before it)")
        if conv.id in out:
            raise InputError(path, line, "id", f"duplicate id {conv.id!r} (first on line {out[conv.id][1]})")
        out[conv.id] = (conv, line)
    return out


def _prompt_key(conv: Conversation) -> str:
    return json.dumps([m.to_dict() for m in conv.prompt_messages], ensure_ascii=False)


def match_outputs(a: dict[str, tuple[Conversation, int]], b: dict[str, tuple[Conversation, int]],
                  by: str, path_b: str) -> tuple[list[Item], MatchReport]:
    """Pair the two systems' records (in file A's order) and say what did not pair."""
    report = MatchReport()
    items: list[Item] = []
    if by == "prompt":
        b_by_prompt: dict[str, Conversation] = {}
        for conv, line in b.values():
            key = _prompt_key(conv)
            if key in b_by_prompt:
                raise InputError(path_b, line, "messages", f"same prompt as record {b_by_prompt[key].id!r}: "
                                 "matching by prompt needs distinct prompts")
            b_by_prompt[key] = conv
        used: set[str] = set()
        for conv, _ in a.values():
            other = b_by_prompt.get(_prompt_key(conv))
            if other is None:
                report.only_a.append(conv.id)
                continue
            used.add(other.id)
            items.append(Item(conv.id, [m.to_dict() for m in conv.prompt_messages], conv.messages[-1].content,
                              other.messages[-1].content))
        report.only_b = [conv.id for conv, _ in b.values() if conv.id not in used]
    else:
        for rid, (conv, _) in a.items():
            if rid not in b:
                report.only_a.append(rid)
                continue
            other = b[rid][0]
            if _prompt_key(conv) != _prompt_key(other):
                report.prompt_differs.append(rid)
                continue
            items.append(Item(rid, [m.to_dict() for m in conv.prompt_messages], conv.messages[-1].content,
                              other.messages[-1].content))
        report.only_b = [rid for rid in b if rid not in a]
    report.matched = len(items)
    return items, report


def assign(n_items: int, cfg: StudyConfig) -> list[tuple[str, int, bool]]:
    """(rater, item index, swapped) for every assignment; deterministic in cfg.seed."""
    rng = random.Random(cfg.seed)
    order = list(range(n_items))
    rng.shuffle(order)
    overlap = set(order[:min(cfg.overlap, n_items)])
    load = {r: 0 for r in cfg.raters}
    rank = {r: i for i, r in enumerate(rng.sample(cfg.raters, len(cfg.raters)))}
    out: list[tuple[str, int, bool]] = []
    for index in range(n_items):
        k = (cfg.overlap_raters or len(cfg.raters)) if index in overlap else cfg.per_item
        chosen = sorted(cfg.raters, key=lambda r: (load[r], rank[r]))[:k]
        for rater in chosen:
            load[rater] += 1
            out.append((rater, index, rng.random() < 0.5))
        rank = {r: (rank[r] + 1) % len(cfg.raters) for r in cfg.raters}  # rotate ties
    return out


def create_study(cfg: StudyConfig) -> tuple[Path, MatchReport, dict[str, str]]:
    """Write the study; returns (directory, match report, {name: invite token})."""
    cfg.validate()
    out = Path(cfg.out)
    if (out / STUDY_FILE).exists():
        raise ConfigError(f"{out}: a study exists there already; choose another --out")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: a file is in the way; give a directory for the study")
    name_a = cfg.name_a or Path(cfg.a).stem
    name_b = cfg.name_b or Path(cfg.b).stem
    if name_a == name_b:
        raise ConfigError(f"both systems are called {name_a!r}: give --name-a and --name-b")
    items, report = match_outputs(read_outputs(cfg.a), read_outputs(cfg.b), cfg.match, cfg.b)
    report.name_a, report.name_b = name_a, name_b
    if not items:
        raise DataError("no prompt is in both files: " + "; ".join(report.lines()[1:]))
    out.mkdir(parents=True, exist_ok=True)
    url = cfg.db or sqlite_url(out)
    engine = db.make_engine(url)
    db.migrate(engine)
    tokens = {name: secrets.token_urlsafe(24) for name in [*cfg.raters, "admin"]}
    plan = assign(len(items), cfg)
    settings = {"form": cfg.form, "name_a": name_a, "name_b": name_b, "seed": cfg.seed, "per_item": cfg.per_item,
                "overlap": cfg.overlap, "overlap_raters": cfg.overlap_raters or len(cfg.raters),
                "match": cfg.match, "inputs": [file_fingerprint(cfg.a), file_fingerprint(cfg.b)]}
    with engine.begin() as conn:
        if conn.execute(select(func.count()).select_from(db.items)).scalar():
            raise ConfigError(f"database {db.redact(url)} already holds a study; give an empty database")
        conn.execute(insert(db.meta), [
            {"key": "settings", "value": json.dumps(settings, ensure_ascii=False)},
            {"key": "secret", "value": secrets.token_hex(32)},
            {"key": "closed", "value": "0"},
        ])
        conn.execute(insert(db.items), [
            {"id": it.id, "position": i, "prompt": json.dumps(it.prompt, ensure_ascii=False),
             "output_a": it.output_a, "output_b": it.output_b} for i, it in enumerate(items)])
        conn.execute(insert(db.raters), [
            {"name": name, "token_hash": hash_token(tok), "role": "admin" if name == "admin" else "rater"}
            for name, tok in tokens.items()])
        positions: dict[str, int] = {}
        rows: list[dict[str, Any]] = []
        for rater, index, swapped in plan:
            rows.append({"rater": rater, "item_id": items[index].id, "position": positions.get(rater, 0),
                         "swapped": swapped})
            positions[rater] = positions.get(rater, 0) + 1
        conn.execute(insert(db.assignments), rows)
    engine.dispose()
    (out / STUDY_FILE).write_text(json.dumps({"db": cfg.db, "form": cfg.form}, indent=2) + "\n", encoding="utf-8")
    invites = out / INVITES_FILE
    invites.write_text("".join(f"{name}\t{tok}\t{cfg.base_url.rstrip('/')}/login?token={tok}\n"
                               for name, tok in tokens.items()), encoding="utf-8")
    invites.chmod(0o600)
    (out / STUDY_FILE).chmod(0o600)
    return out, report, tokens
