"""Records -> tokenized training examples, checked before any training starts.

A Conversation becomes one sequence (labels on every assistant turn). A Ranked record with
K responses becomes K sequences prompt + response_k (rank k, its score), plus the record's
`reference` answer as one more sequence with rank -1 when the objective asks for it
(`ObjectiveSpec.needs_reference_text`; `wants_reference_text`: only when the record has one),
plus, for `needs_mismatched` (KTO's KL estimate), the record's prompt followed by each
response of the previous usable record (rank -2; the first record takes the last one's:
TRL's rotation of completions, over the whole data set). Sequences of one record always
travel together.

Records an objective cannot use (too few responses, all scores tied, no reference, no
assistant turn) are collected with their ids and either dropped or reported as one
`DataError`, by the user's choice (`on_bad_records: drop|error`).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from drover.errors import DataError
from drover.records import Conversation, Ranked, Record
from drover.templates import alpaca_fields
from drover.tokenization import EncodedExample, encode_conversation, encode_prompt_response
from drover.train.objective import MISMATCHED_RANK, REFERENCE_RANK, ObjectiveSpec

MAX_IDS_SHOWN = 10


@dataclass
class Example:
    """One record's sequences (rank order; then the reference, rank -1; then mismatched, rank -2)."""

    index: int                       # position in the training set: the key of cached reference log-probs
    record_id: str
    sequences: list[EncodedExample]
    rank: list[int]
    scores: list[float]

    @property
    def num_tokens(self) -> int:
        return sum(len(s) for s in self.sequences)

    @property
    def num_targets(self) -> int:
        return sum(s.num_trained for s in self.sequences)


@dataclass
class DataReport:
    """What happened to the records on their way to training."""

    records: int = 0
    examples: int = 0
    truncated: int = 0                                   # sequences cut at max_length
    dropped: dict[str, list[str]] = field(default_factory=dict)   # problem -> record ids

    def summary(self) -> str:
        parts = [f"{self.examples}/{self.records} records used", f"{self.truncated} sequences truncated"]
        parts += [f"{len(ids)} dropped ({problem})" for problem, ids in self.dropped.items()]
        return ", ".join(parts)


def _problems(record: Record, spec: ObjectiveSpec) -> str | None:
    """Why `record` cannot be used by `spec` (None if it can)."""
    if spec.data == "conversation":
        if isinstance(record, Ranked):
            return "a Ranked record where the objective trains on Conversation records"
        if record.last_assistant is None:
            return "no assistant turn to train on"
        return None
    if isinstance(record, Conversation):
        return "a Conversation record where the objective ranks responses (Ranked records)"
    if len(record.responses) < spec.min_responses:
        return f"fewer than {spec.min_responses} responses"
    if spec.needs_scores and not record.pairs():
        return "all response scores tied (no preference to learn)"
    if spec.needs_reference_text and not record.reference:
        return "no `reference` response"
    return spec.record_problem(record) if spec.record_problem else None


def _encode(record: Record, spec: ObjectiveSpec, tokenizer: Any, max_length: int, index: int,
            previous: Record | None = None) -> Example:
    if isinstance(record, Conversation):
        messages = alpaca_fields(record.messages, record.meta)  # the alpaca template's with-input prompt
        seq = encode_conversation(tokenizer, messages, max_length, record.id)
        return Example(index, record.id, [seq], [0], [math.nan])
    texts = [(r.content, k, math.nan if r.score is None else r.score) for k, r in enumerate(record.responses)]
    if spec.needs_reference_text or (spec.wants_reference_text and record.reference):
        texts.append((record.reference or "", REFERENCE_RANK, math.nan))
    if spec.needs_mismatched and isinstance(previous, Ranked):
        texts += [(r.content, MISMATCHED_RANK, math.nan) for r in previous.responses]
    seqs = [encode_prompt_response(tokenizer, record.messages, text, max_length, record.id) for text, _, _ in texts]
    return Example(index, record.id, seqs, [k for _, k, _ in texts], [s for _, _, s in texts])


def _report_bad(bad: dict[str, list[str]], total: int) -> str:
    lines = []
    for problem, ids in bad.items():
        shown = ", ".join(repr(i) for i in ids[:MAX_IDS_SHOWN]) + (", ..." if len(ids) > MAX_IDS_SHOWN else "")
        lines.append(f"  {len(ids)} record(s): {problem}: {shown}")
    return f"{sum(len(v) for v in bad.values())} of {total} records cannot be used:\n" + "\n".join(lines)


def build_examples(records: list[Record], spec: ObjectiveSpec, tokenizer: Any, max_length: int,
                   on_bad_records: str = "error") -> tuple[list[Example], DataReport]:
    """Check and tokenize every record for `spec`; raise DataError before training if unusable."""
    report = DataReport(records=len(records))
    bad: dict[str, list[str]] = defaultdict(list)
    usable = []
    for record in records:
        problem = _problems(record, spec)
        if problem:
            bad[problem].append(record.id)
        else:
            usable.append(record)
    if bad and on_bad_records == "error":
        raise DataError(_report_bad(bad, len(records)) + "\n(set on_bad_records=drop to train without them)")
    examples: list[Example] = []
    cut = f"no target token left within max_length={max_length}"
    for position, record in enumerate(usable):
        example = _encode(record, spec, tokenizer, max_length, len(examples), usable[position - 1])
        report.truncated += sum(s.truncated for s in example.sequences)
        if any(s.num_trained == 0 for s in example.sequences):
            bad[cut].append(record.id)  # cut away, as open-instruct drops them: a notice, not an error
            continue
        examples.append(example)
    report.dropped = dict(bad)
    report.examples = len(examples)
    if not examples:
        hint = (f"; max_length={max_length} may be shorter than the chat template's header"
                if cut in bad else "")
        raise DataError(f"no trainable tokens in the training data ({report.summary()}){hint}")
    if bad:
        print(f"drover: data: {_report_bad(bad, len(records))}", file=sys.stderr)
    return examples, report


def split_eval(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out a seeded `fraction` of the examples (re-indexed, so reference caches stay aligned)."""
    if fraction <= 0:
        return examples, []
    order = list(range(len(examples)))
    random.Random(f"{seed}:eval").shuffle(order)
    n_eval = max(1, round(fraction * len(examples)))
    held = set(order[:n_eval])
    train = [e for i, e in enumerate(examples) if i not in held]
    evals = [e for i, e in enumerate(examples) if i in held]
    for i, e in enumerate(train):
        e.index = i
    for i, e in enumerate(evals):
        e.index = i
    return train, evals


def examples_hash(examples: list[Example]) -> str:
    """A fingerprint of the tokenized data: resumes and reference caches check it.

    Response scores are part of it where a record has any (they decide the derived pairs,
    ties giving none, the reward model's margins and KTO's labels); an example without
    scores hashes as it did before scores were keyed, so its checkpoints still resume."""
    h = hashlib.sha256()
    for e in examples:
        fields: list[Any] = [e.record_id, e.rank, [s.input_ids for s in e.sequences], [s.labels for s in e.sequences]]
        if any(not math.isnan(score) for score in e.scores):
            fields.append([None if math.isnan(score) else score for score in e.scores])
        h.update(json.dumps(fields).encode())
    return h.hexdigest()[:16]
