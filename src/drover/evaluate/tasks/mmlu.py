"""MMLU (Hendrycks et al. 2021), 0-shot and 5-shot, as the official script and Tülu.

Protocol: allenai/open-instruct `eval/mmlu/run_eval.py` (gen_prompt, format_subject,
format_example, eval_hf_model, main) at the Tülu-1-era commit cd06c6fb0 (July 2023), itself
hendrycks/test `evaluate.py`.
- Prompt: "The following are multiple choice questions (with answers) about" + format_subject
  (every word preceded by a space, hence the double space: "about  abstract algebra.") +
  ".\\n\\n", k dev exemplars, the question with "\\nA. ..".."\\nD. .." and "\\nAnswer:".
  With a chat format the whole text is one user turn and the assistant turn starts "The
  answer is:". Shots are dropped one at a time until the raw (unformatted) prompt fits
  `max_prompt_tokens` (2048 in the reference).
- Prediction: the highest-scoring of " A"/" B"/" C"/" D" as the next token. Accuracy per
  subject, per category (hendrycks/test `categories.py`) and overall, averaged over examples.
- `--limit N` is the reference's `--n_instances`: `test_df.sample(N, random_state=42)`
  (pandas: numpy `RandomState(seed).permutation(len)[:N]`), `--seed` the random state.
Deliberate differences: the letters are scored as " A" (a leading space) for every tokenizer;
the reference takes the first token of tokenizer.encode("A"), which is "▁A" for LLaMA's
SentencePiece (the same) but a bare "A" for byte-level BPEs. The CSV text is used as written,
where the reference's pandas `read_csv` turns numeric-looking options into numbers ("1.50" is
shown as "1.5").
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

from drover.errors import InputError
from drover.evaluate.task import EvalContext, Task, TaskResult, resource_path
from drover.metrics.classification import argmax, grouped_mean, mean

CHOICES = ("A", "B", "C", "D")

# Subject -> subcategory, and subcategory -> category, as in hendrycks/test categories.py.
SUBCATEGORY = {
    "abstract_algebra": "math", "anatomy": "health", "astronomy": "physics", "business_ethics": "business",
    "clinical_knowledge": "health", "college_biology": "biology", "college_chemistry": "chemistry",
    "college_computer_science": "computer science", "college_mathematics": "math", "college_medicine": "health",
    "college_physics": "physics", "computer_security": "computer science", "conceptual_physics": "physics",
    "econometrics": "economics", "electrical_engineering": "engineering", "elementary_mathematics": "math",
    "formal_logic": "philosophy", "global_facts": "other", "high_school_biology": "biology",
    "high_school_chemistry": "chemistry", "high_school_computer_science": "computer science",
    "high_school_european_history": "history", "high_school_geography": "geography",
    "high_school_government_and_politics": "politics", "high_school_macroeconomics": "economics",
    "high_school_mathematics": "math", "high_school_microeconomics": "economics", "high_school_physics": "physics",
    "high_school_psychology": "psychology", "high_school_statistics": "math", "high_school_us_history": "history",
    "high_school_world_history": "history", "human_aging": "health", "human_sexuality": "culture",
    "international_law": "law", "jurisprudence": "law", "logical_fallacies": "philosophy",
    "machine_learning": "computer science", "management": "business", "marketing": "business",
    "medical_genetics": "health", "miscellaneous": "other", "moral_disputes": "philosophy",
    "moral_scenarios": "philosophy", "nutrition": "health", "philosophy": "philosophy", "prehistory": "history",
    "professional_accounting": "other", "professional_law": "law", "professional_medicine": "health",
    "professional_psychology": "psychology", "public_relations": "politics", "security_studies": "politics",
    "sociology": "culture", "us_foreign_policy": "politics", "virology": "health", "world_religions": "philosophy",
}
CATEGORIES = {
    "STEM": ("physics", "chemistry", "biology", "computer science", "math", "engineering"),
    "humanities": ("history", "philosophy", "law"),
    "social sciences": ("politics", "culture", "economics", "geography", "psychology"),
    "other (business, health, misc.)": ("other", "business", "health"),
}
CATEGORY = {sub: cat for cat, subs in CATEGORIES.items() for sub in subs}


def category_of(subject: str) -> str:
    return CATEGORY[SUBCATEGORY[subject]]


@dataclass
class Row:
    question: str
    options: tuple[str, str, str, str]
    answer: str  # "A".."D"


def read_rows(path) -> list[Row]:
    """A shipped MMLU CSV: header `question,choice0..choice3,answer`, answer an integer 0-3."""
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != ["question", "choice0", "choice1", "choice2", "choice3", "answer"]:
            raise InputError(path, 1, None, f"unexpected MMLU header {header!r}")
        for line, record in enumerate(reader, start=2):
            if len(record) != 6 or record[5] not in ("0", "1", "2", "3"):
                raise InputError(path, line, "answer", f"expected 6 columns and an answer 0-3, got {record!r}")
            rows.append(Row(record[0], (record[1], record[2], record[3], record[4]), CHOICES[int(record[5])]))
    return rows


def format_example(row: Row, include_answer: bool) -> str:
    text = row.question
    for letter, option in zip(CHOICES, row.options):
        text += f"\n{letter}. {option}"
    text += "\nAnswer:"
    if include_answer:
        text += f" {row.answer}\n\n"
    return text


def format_subject(subject: str) -> str:
    """The reference's subject text: each word preceded by a space (" abstract algebra")."""
    return "".join(" " + word for word in subject.split("_"))


def sample_rows(rows: list[Row], limit: int | None, seed: int) -> list[tuple[int, Row]]:
    """pandas `DataFrame.sample(limit, random_state=seed)` as indexed rows, in its order."""
    if limit is None or limit >= len(rows):
        return list(enumerate(rows))
    import numpy as np

    order = np.random.RandomState(seed).permutation(len(rows))[:limit]
    return [(int(i), rows[int(i)]) for i in order]


def format_prompt(subject: str, shots: list[Row], row: Row) -> str:
    header = f"The following are multiple choice questions (with answers) about {format_subject(subject)}.\n\n"
    return header + "".join(format_example(s, True) for s in shots) + format_example(row, False)


@dataclass
class MMLUSettings:
    shots: int = 0
    limit: int | None = None  # examples per subject, sampled with --seed (the reference's --n_instances)
    max_prompt_tokens: int = 2048
    subjects: list[str] | None = None  # None = all 57


class MMLU(Task):
    primary_metric = "accuracy"
    Settings = MMLUSettings
    shipped = ("data/mmlu",)

    def __init__(self, name: str, title: str, shots: int):
        self.name, self.title, self.shots = name, title, shots

    def default_settings(self) -> MMLUSettings:
        return MMLUSettings(shots=self.shots)

    def run(self, ctx: EvalContext, settings: MMLUSettings) -> TaskResult:
        root = resource_path("data", "mmlu")
        subjects = settings.subjects or sorted(SUBCATEGORY)
        items, requests, dropped = [], [], 0
        for subject in subjects:
            if subject not in SUBCATEGORY:
                from drover.errors import ConfigError, did_you_mean

                raise ConfigError(f"mmlu: unknown subject {subject!r}{did_you_mean(subject, SUBCATEGORY)}")
            dev = read_rows(root / "dev" / f"{subject}_dev.csv")[: settings.shots]
            test = sample_rows(read_rows(root / "test" / f"{subject}_test.csv"), settings.limit, ctx.options.seed)
            for i, row in test:
                k = len(dev)
                while k > 0 and ctx.fmt.count_tokens(format_prompt(subject, dev[:k], row)) > settings.max_prompt_tokens:
                    k -= 1
                prompt = ctx.fmt.render(format_prompt(subject, dev[:k], row), chat_cue="The answer is:")
                dropped += len(dev) - k
                items.append((f"{subject}/{i}", subject, row, prompt, k))
                requests += [ctx.fmt.score_request(prompt, " " + letter, key=f"{subject}/{i}") for letter in CHOICES]
        scores = ctx.score(requests, desc=self.name)
        examples, correct = [], []
        for j, (eid, subject, row, prompt, k) in enumerate(items):
            totals = [s.total for s in scores[4 * j: 4 * j + 4]]
            prediction = CHOICES[argmax(totals)]
            ok = prediction == row.answer
            correct.append((subject, ok))
            examples.append({"id": eid, "subject": subject, "prompt": prompt, "prediction": prediction,
                             "reference": row.answer, "correct": ok, "shots": k,
                             "choice_logprobs": dict(zip(CHOICES, totals))})
        per_subject = {s: 100 * v for s, v in grouped_mean(correct).items()}
        per_category = {c: 100 * v for c, v in grouped_mean((category_of(s), ok) for s, ok in correct).items()}
        metrics = {"accuracy": 100 * mean(ok for _, ok in correct)}
        metrics.update({f"accuracy/{c}": v for c, v in per_category.items()})
        return TaskResult(metrics, examples, {"subject": per_subject, "category": per_category},
                          {"shots_dropped": dropped} if dropped else {})


ZERO_SHOT = MMLU("mmlu_0shot", "MMLU 0-shot", 0)
FIVE_SHOT = MMLU("mmlu_5shot", "MMLU 5-shot", 5)
