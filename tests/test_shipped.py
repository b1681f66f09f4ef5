"""Shipped data: every catalogue entry exists, counts match MANIFEST.md, bytes match SHA256SUMS."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from drover.cli import main
from drover.errors import DroverError
from drover.shipped import DATASETS, data_dir, data_path, get_dataset

TESTS_DATA = Path(__file__).parent / "data"

# Record counts as stated in tests/data/MANIFEST.md (the copy of shared/data/MANIFEST.md).
MANIFEST_COUNTS = {
    "self_instruct_seed": 175, "self_instruct_user_oriented": 252, "alpaca_seed": 175, "alpaca_prompt": 1,
    "codealpaca_2k": 2017, "codealpaca_seed": 21, "codealpaca_prompt": 1,
    "vicuna80_questions": 80, "vicuna80_answers": 7 * 80, "vicuna80_reviews": 13 * 80, "vicuna80_tables": 3 + 3 + 7,
    "vicuna_bench_questions": 80, "vicuna_bench_reference": 10,
    "mt_bench_questions": 80, "mt_bench_reference": 30, "mt_bench_judge_prompts": 8,
    "alpaca_eval_text_davinci_003": 805, "alpaca_eval_gpt4_1106_preview": 805, "alpaca_eval_annotators": 5 + 4,
    "llmbar_natural": 100, "llmbar_adversarial": 134 + 92 + 47 + 46, "llmbar_casestudy": 54 + 54 + 89 + 59 + 59,
    "llmbar_processed": 66 + 200 + 200, "llmbar_gpt4_statistics": 5,
    "gsm8k_test": 1319, "gsm8k_train": 7473, "bbh": 6511, "bbh_cot_prompts": 27, "humaneval": 164,
    "truthfulqa_v1": 817, "truthfulqa_v1_mc": 817, "truthfulqa": 790, "truthfulqa_mc": 790,
    "toxigen_prompts": 31 * 1000, "mmlu_test": 14042, "mmlu_dev": 285, "hh_rlhf_harmless_test": 2312,
    "superni_test_tasks": 119, "tulu_human_eval": 996,
}


def test_catalogue_names_are_unique_and_all_checked():
    names = [d.name for d in DATASETS]
    assert len(names) == len(set(names))
    assert set(names) == set(MANIFEST_COUNTS)


@pytest.mark.parametrize("dataset", DATASETS, ids=lambda d: d.name)
def test_catalogue_entry_exists_and_count_matches_manifest(dataset):
    files = dataset.files()
    assert files and all(f.is_file() and data_dir() in f.parents for f in files)
    assert dataset.records() == MANIFEST_COUNTS[dataset.name]
    assert dataset.size() == sum(f.stat().st_size for f in files) > 0
    assert dataset.license


def test_shipped_files_are_byte_for_byte_copies():
    """Every packaged data file is listed in SHA256SUMS with the same hash."""
    sums = {}
    for line in (TESTS_DATA / "SHA256SUMS").read_text().splitlines():
        digest, _, rel = line.partition("  ")
        sums[rel] = digest
    shipped = [p for p in data_dir().rglob("*") if p.is_file()]
    assert len(shipped) > 250
    for path in shipped:
        rel = path.relative_to(data_dir()).as_posix()
        assert rel in sums, f"{rel} is not a file of the upstream collection"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sums[rel], rel


def test_every_shipped_file_is_in_the_catalogue():
    covered = {f for d in DATASETS for f in d.files()}
    shipped = {p for p in data_dir().rglob("*") if p.is_file()}
    assert shipped == covered


def test_data_path_and_errors():
    assert data_path("gsm8k", "test.jsonl").name == "test.jsonl"
    with pytest.raises(DroverError, match="not found"):
        data_path("gsm8k", "nope.jsonl")
    with pytest.raises(DroverError, match="did you mean 'gsm8k_test'"):
        get_dataset("gsm8k_tset")


def test_licenses_file_names_every_source_folder():
    text = (data_dir().parent / "DATA_LICENSES.md").read_text()
    for folder in sorted({p.relative_to(data_dir()).parts[0] for p in data_dir().rglob("*") if p.is_file()}):
        assert f"`{folder}/`" in text
    assert "CC BY-NC 4.0" in text and "canary" in text.lower()


def test_data_command_list_and_path(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "mmlu_test" in out and "14,042" in out and "MIT" in out
    assert main(["data", "path", "humaneval"]) == 0
    assert capsys.readouterr().out.strip().endswith("HumanEval.jsonl.gz")
    assert main(["data", "path", "humaneva"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "humaneval" in err
