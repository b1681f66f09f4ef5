"""The evaluation and seed datasets that ship inside drover, and where to find them.

Files live under `drover/resources/data/<source folder>/`, copied byte-for-byte from their
public repositories (see `resources/DATA_LICENSES.md` for origin, commit and license).
Code that needs one asks `data_path("gsm8k", "test.jsonl")` instead of building paths, so
a missing file is a clear `DroverError`, and `DATASETS` is the catalogue that
`drover data list` prints.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from drover.errors import DroverError, did_you_mean

_DATA_DIR = Path(__file__).parent / "resources" / "data"


def data_dir() -> Path:
    """The root of the shipped data."""
    return _DATA_DIR


def data_path(*parts: str) -> Path:
    """A shipped file or folder; raises DroverError when it is not there."""
    path = _DATA_DIR.joinpath(*parts)
    if not path.exists():
        raise DroverError(f"shipped data file {'/'.join(parts)!r} not found under {_DATA_DIR} "
                          "(reinstall drover, or check the name with `drover data list`)")
    return path


# --- record counters (one per file layout) -------------------------------------------

def _text(path: Path) -> str:
    raw = path.read_bytes()
    return (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8-sig")


def count_lines(paths: list[Path]) -> int:
    """Non-blank lines: JSONL records, one-per-line prompts and task lists."""
    return sum(sum(1 for line in _text(p).splitlines() if line.strip()) for p in paths)


def count_json_list(paths: list[Path]) -> int:
    """Elements of top-level JSON arrays."""
    return sum(len(json.loads(_text(p))) for p in paths)


def count_csv_rows(paths: list[Path]) -> int:
    """CSV rows after the header (quoted fields may span lines)."""
    return sum(sum(1 for _ in csv.reader(io.StringIO(_text(p)))) - 1 for p in paths)


def count_bbh(paths: list[Path]) -> int:
    """BIG-Bench Hard task files: `{examples: [...]}`."""
    return sum(len(json.loads(_text(p))["examples"]) for p in paths)


def count_files(paths: list[Path]) -> int:
    return len(paths)


@dataclass(frozen=True)
class Dataset:
    """One catalogue entry: glob patterns under `data_dir()` and how to count records."""

    name: str
    patterns: tuple[str, ...]
    description: str
    license: str
    count: Callable[[list[Path]], int] = count_lines
    unit: str = "records"

    def files(self) -> list[Path]:
        found: list[Path] = []
        for pattern in self.patterns:
            matches = sorted(p for p in _DATA_DIR.glob(pattern) if p.is_file())
            if not matches:
                raise DroverError(f"shipped dataset {self.name!r}: no file matches {pattern!r} under {_DATA_DIR}")
            found += matches
        return found

    def records(self) -> int:
        return self.count(self.files())

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files())

    def path(self) -> Path:
        """The single file, or the deepest folder holding all the files."""
        files = self.files()
        if len(files) == 1:
            return files[0]
        common: list[str] = []
        for parts in zip(*(f.parent.parts for f in files)):
            if len(set(parts)) != 1:
                break
            common.append(parts[0])
        return Path(*common)


_APACHE = "Apache-2.0"
_NC = "CC BY-NC 4.0 (non-commercial)"

DATASETS: tuple[Dataset, ...] = (
    Dataset("self_instruct_seed", ("self_instruct/seed_tasks.jsonl",),
            "Self-Instruct's 175 human-written seed tasks", _APACHE),
    Dataset("self_instruct_user_oriented", ("self_instruct/user_oriented_instructions.jsonl",),
            "252 user-oriented evaluation instructions (do not train on them)", _APACHE),
    Dataset("alpaca_seed", ("alpaca/seed_tasks.jsonl",), "Stanford Alpaca seed tasks (same as Self-Instruct's)", _NC),
    Dataset("alpaca_prompt", ("alpaca/prompt.txt",), "Stanford Alpaca generation prompt (20 tasks per call)", _NC,
            count_files, "files"),
    Dataset("codealpaca_2k", ("codealpaca/code_alpaca_2k.json",), "Code Alpaca 2k sample release", _NC,
            count_json_list),
    Dataset("codealpaca_seed", ("codealpaca/seed_tasks.jsonl",), "Code Alpaca seed tasks", _NC),
    Dataset("codealpaca_prompt", ("codealpaca/prompt.txt",), "Code Alpaca generation prompt", _NC,
            count_files, "files"),
    Dataset("vicuna80_questions", ("vicuna80/question.jsonl",), "Vicuna 80 questions (fastchat/eval)", _APACHE),
    Dataset("vicuna80_answers", ("vicuna80/answer/*.jsonl",), "7 baseline answer sets x 80", _APACHE),
    Dataset("vicuna80_reviews", ("vicuna80/review/**/*.jsonl",), "13 GPT-4 review files x 80", _APACHE),
    Dataset("vicuna80_tables", ("vicuna80/prompt.jsonl", "vicuna80/reviewer.jsonl", "vicuna80/model.jsonl"),
            "Vicuna eval prompts (3), reviewers (3) and models (7)", _APACHE),
    Dataset("vicuna_bench_questions", ("vicuna80/llm_judge_vicuna_bench/question.jsonl",),
            "the llm_judge copy of the Vicuna 80 questions", _APACHE),
    Dataset("vicuna_bench_reference", ("vicuna80/llm_judge_vicuna_bench/reference_answer/gpt-4.jsonl",),
            "GPT-4 reference answers for Vicuna bench", _APACHE),
    Dataset("mt_bench_questions", ("mt_bench/question.jsonl",), "MT-bench 80 two-turn questions", _APACHE),
    Dataset("mt_bench_reference", ("mt_bench/reference_answer/gpt-4.jsonl",), "MT-bench GPT-4 reference answers",
            _APACHE),
    Dataset("mt_bench_judge_prompts", ("mt_bench/judge_prompts.jsonl",), "MT-bench judge prompts", _APACHE),
    Dataset("alpaca_eval_text_davinci_003", ("alpaca_eval/results/text_davinci_003/model_outputs.json",),
            "AlpacaEval 805 instructions + text-davinci-003 (AE1 baseline) outputs", _NC, count_json_list),
    Dataset("alpaca_eval_gpt4_1106_preview", ("alpaca_eval/results/gpt4_1106_preview/model_outputs.json",),
            "AlpacaEval 805 instructions + gpt4_1106_preview (AE2 baseline) outputs", _NC, count_json_list),
    Dataset("alpaca_eval_annotators", ("alpaca_eval/evaluators_configs/*/*",),
            "AlpacaEval annotator prompt templates and configs", _APACHE, count_files, "files"),
    Dataset("llmbar_natural", ("llmbar/LLMBar/Natural/dataset.json",), "LLMBar Natural pairs", "MIT",
            count_json_list),
    Dataset("llmbar_adversarial", ("llmbar/LLMBar/Adversarial/*/dataset.json",),
            "LLMBar Adversarial pairs (Neighbor, GPTInst, GPTOut, Manual)", "MIT", count_json_list),
    Dataset("llmbar_casestudy", ("llmbar/CaseStudy/*/dataset.json",), "LLMBar case-study sets (5)", "MIT",
            count_json_list),
    Dataset("llmbar_processed", ("llmbar/Processed/*/dataset.json",),
            "FairEval, LLMEval2 and MT-Bench pairs as processed by LLMBar", "MIT", count_json_list),
    Dataset("llmbar_gpt4_statistics", ("llmbar/LLMBar/**/statistics.json",),
            "GPT-4 Vanilla reference statistics for the LLMBar sets", "MIT", count_files, "files"),
    Dataset("gsm8k_test", ("gsm8k/test.jsonl",), "GSM8K test problems", "MIT"),
    Dataset("gsm8k_train", ("gsm8k/train.jsonl",), "GSM8K train (few-shot exemplars)", "MIT"),
    Dataset("bbh", ("bbh/bbh/*.json",), "BIG-Bench Hard, 27 tasks (canary: do not train)", "MIT", count_bbh),
    Dataset("bbh_cot_prompts", ("bbh/cot-prompts/*.txt",), "BBH 3-shot chain-of-thought prompts", "MIT",
            count_files, "files"),
    Dataset("humaneval", ("humaneval/HumanEval.jsonl.gz",), "HumanEval Python problems", "MIT"),
    Dataset("truthfulqa_v1", ("truthfulqa/data/v1/TruthfulQA.csv",), "TruthfulQA classic 817 questions",
            _APACHE, count_csv_rows),
    Dataset("truthfulqa_v1_mc", ("truthfulqa/data/v1/mc_task.json",), "TruthfulQA classic MC targets", _APACHE,
            count_json_list),
    Dataset("truthfulqa", ("truthfulqa/TruthfulQA.csv",), "TruthfulQA Jan-2025 revision", _APACHE, count_csv_rows),
    Dataset("truthfulqa_mc", ("truthfulqa/data/mc_task.json",), "TruthfulQA Jan-2025 MC targets", _APACHE,
            count_json_list),
    Dataset("toxigen_prompts", ("toxigen/prompts/*.txt",), "ToxiGen prompts, 31 groups x 1,000 (research use)",
            "MIT", count_lines),
    Dataset("mmlu_test", ("mmlu/test/*.csv",), "MMLU test, 57 subjects", "MIT", count_csv_rows),
    Dataset("mmlu_dev", ("mmlu/dev/*.csv",), "MMLU dev (5-shot exemplars)", "MIT", count_csv_rows),
    Dataset("hh_rlhf_harmless_test", ("hh_rlhf/harmless-base/test.jsonl.gz",),
            "Anthropic HH-RLHF harmless-base test pairs", "MIT"),
    Dataset("superni_test_tasks", ("superni/splits/default/test_tasks.txt",),
            "Super-NI default test split task names (task files not shipped)", "unverified (see DATA_LICENSES.md)"),
    Dataset("tulu_human_eval", ("tulu_human_eval/eval_instances_tulu_1.jsonl",),
            "Tülu 1 human-evaluation pairwise instances", _APACHE),
)


def get_dataset(name: str) -> Dataset:
    for dataset in DATASETS:
        if dataset.name == name:
            return dataset
    names = [d.name for d in DATASETS]
    raise DroverError(f"unknown shipped dataset {name!r}{did_you_mean(name, names)}; see `drover data list`")
