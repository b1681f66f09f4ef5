"""A study's results as a drover result record (kind "human"), for `drover report`.

Written through `drover.results.write_result` like benchmarks and judges: under system
a's model folder, named after the form and system b, keyed by the content of the inputs
and of every answer, so a record always says which answers it summarises.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from drover.human.store import Study
from drover.human.summary import headline_metrics
from drover.identity import digest
from drover.results import model_slug, write_result


def write_human_result(study: Study, summary: dict[str, Any], run_root: str | Path) -> Path:
    answers = [asdict(a) for a in study.all_answers()]
    record = {
        "kind": "human",
        "name": f"human-{study.form.name}-vs-{model_slug(study.name_b)}",
        "model": {"label": study.name_a, "spec": f"human study {study.directory}", "fingerprint": None},
        "key": digest({"settings": study.settings,
                       "answers": [{k: v for k, v in a.items() if k != "saved"} for a in answers]}),
        "metrics": headline_metrics(summary),
        "settings": {"form": study.form.name, "opponent": study.name_b, **study.settings},
        "n_examples": len(answers),
        "failures": 0,
        "summary": summary,
    }
    return write_result(run_root, record, answers)
