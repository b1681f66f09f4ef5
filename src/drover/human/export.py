"""Human preferences as `Ranked` records, so they train reward models and DPO directly.

One record per item with at least one unflagged answer to the export question (the
form's `export_question`: Tülu's preference, HHH's helpfulness, or another one given).
Each response's score is the mean five-level preference of the raters from its own side
(+2 much better ... -2), so the winner has a positive score and comes first; an item
whose raters balance out (mean 0) is a tie and yields no pair, and is left out.
The individual votes are kept in `meta`.
"""

from __future__ import annotations

import json
from collections import defaultdict

from drover.errors import ConfigError
from drover.human.store import Answer, Study
from drover.records import Message, Ranked, Response


def ranked_records(study: Study, question: str = "") -> list[Ranked]:
    q = study.form.question(question or study.form.export_question)
    if q.kind != "preference":
        raise ConfigError(f"--question {q.name}: not a preference question; choose one of "
                          + ", ".join(p.name for p in study.form.preference_questions))
    votes: dict[str, list[Answer]] = defaultdict(list)
    for answer in study.all_answers():
        if not answer.flags and q.name in answer.answers:
            votes[answer.item_id].append(answer)
    out: list[Ranked] = []
    for item in study.items():
        answers = votes.get(item.id)
        if not answers:
            continue
        score_a = sum(a.answers[q.name] for a in answers) / len(answers)
        if score_a == 0:
            continue
        a = Response(item.output_a, score_a, study.name_a)
        b = Response(item.output_b, -score_a, study.name_b)
        prompt = [Message(m["role"], m["content"]) for m in item.prompt]
        out.append(Ranked(item.id, prompt, [a, b] if score_a > 0 else [b, a], meta={
            "source": "human", "form": study.form.name, "question": q.name,
            "votes": [{"rater": v.rater, "score_a": v.answers[q.name]} for v in answers]}))
    return out


def ranked_lines(study: Study, question: str = "") -> str:
    return "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in ranked_records(study, question))
