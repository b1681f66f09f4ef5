"""Layout detection (JSON array / JSONL / single document / gzip) and malformed input
through the CLI: exit code 2, one stderr line with file:line, no output file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from drover.cli import main
from drover.formats.source import read_rows
from drover.records import read_conversations

SAMPLES = Path(__file__).parent / "data" / "formats"

ALPACA = [{"instruction": f"Say {i}.", "input": "", "output": f"{i}"} for i in range(4)]


def test_layouts_are_detected_from_content(tmp_path):
    as_array = tmp_path / "data.txt"
    as_array.write_text(json.dumps(ALPACA, indent=2))
    as_jsonl = tmp_path / "data.json"  # the name says JSON; the content is JSONL
    as_jsonl.write_text("\n".join(json.dumps(x) for x in ALPACA) + "\n\n")
    as_gzip = tmp_path / "data.bin"
    as_gzip.write_bytes(gzip.compress(as_jsonl.read_bytes()))
    for path in (as_array, as_jsonl, as_gzip):
        rows = list(read_rows(path))
        assert [r.obj for r in rows] == ALPACA
    # array rows carry their index and the line they start on (indent=2: 5 lines per item)
    assert [(r.index, r.line) for r in read_rows(as_array)] == [(0, 2), (1, 7), (2, 12), (3, 17)]
    assert [(r.index, r.line) for r in read_rows(as_jsonl)] == [(None, 1), (None, 2), (None, 3), (None, 4)]
    doc = list(read_rows(SAMPLES / "task999_movie_review_sentiment.json"))
    assert len(doc) == 1 and doc[0].line == 1 and "Instances" in doc[0].obj


def test_convert_cli_writes_records_that_read_back(tmp_path, capsys):
    src = tmp_path / "a.json"
    src.write_text(json.dumps(ALPACA))
    out = tmp_path / "out" / "a.jsonl"
    assert main(["convert", "--from", "alpaca", "--source", "toy", str(src), str(out)]) == 0
    records = list(read_conversations(out, require_assistant=True))
    assert [r.id for r in records] == ["toy_0", "toy_1", "toy_2", "toy_3"]
    assert "wrote 4 records" in capsys.readouterr().err


MALFORMED_BYTES = {
    "bad_json_line": ("alpaca", b'{"instruction": "a", "output": "b"}\n{"instruction": "a",, }\n', ":2: invalid JSON"),
    "empty": ("alpaca", b"", ": empty file"),
    "blank": ("alpaca", b"  \n\n \n", ": empty file"),
    "empty_array": ("alpaca", b"[\n]\n", ":1: empty JSON array"),
    "binary": ("alpaca", bytes(range(256)) * 4, ":1: binary data"),
    "not_utf8": ("alpaca", b'{"instruction": "a", "output": "b"}\n{"output": "\xff\xfe"}\n', ":2: not valid UTF-8"),
    "binary_after_first_line": ("alpaca", b'{"instruction": "a", "output": "b"}\n\x00\x01\x02garbage\n',
                                ":2: binary data"),
    "gzip_bad_json": ("alpaca", gzip.compress(b'{"instruction": "a", "output": "b"}\n\n{oops\n'), ":3: invalid JSON"),
    "truncated_gzip": ("hh-rlhf", gzip.compress(b'{"chosen": "x"}\n' * 100)[:-30], ": corrupt gzip data"),
    "not_json": ("alpaca", b"instruction,input,output\na,b,c\n", ":1: expected JSON or JSONL"),
    "truncated_array": ("alpaca", b'[\n  {"instruction": "a", "input": "", "output": "b"},\n  {"instr', ":3: invalid JSON"),
    "bad_gzip": ("hh-rlhf", b"\x1f\x8b\x08\x00garbage", ": corrupt gzip data"),
    "not_object": ("alpaca", b"[1, 2]", ":1: [0]: expected a JSON object"),
    "wrong_type": ("alpaca", b'{"instruction": "a", "input": "", "output": 5}\n', ":1: output: expected a string, got number"),
    "missing_field": ("dolly", b'{"instruction": "a", "context": ""}\n', ":1: response: missing field"),
    "pretty_doc": ("superni", b'{\n  "Definition": ["x"],\n  "Instances": [\n    {"id": 1,\n    }\n  ]\n}\n', ":5: invalid JSON"),
    "hh_no_human": ("hh-rlhf", json.dumps({"chosen": "Hi\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"}).encode(),
                    ":1: chosen: transcript must start"),
    "llmbar_label": ("llmbar", json.dumps([{"input": "q", "output_1": "a", "output_2": "b", "label": 3}]).encode(),
                     ":1: [0].label: expected 1 or 2"),
    "v2_scores": ("gpt4llm-comparison", json.dumps({"user_input": "q", "responses_and_scores": [["a", "high"]]}).encode(),
                  ":1: responses_and_scores[0]: expected [text, score]"),
    "superni_output": ("superni", json.dumps({"Definition": ["d"], "Positive Examples": [], "Instances": [
        {"id": "t-1", "input": "x", "output": "y"}]}).encode(), ":1: Instances[0].output: expected an array"),
    "self_instruct_dup": ("self-instruct", b'{"id": "t", "instruction": "a", "instances": [{"input": "", "output": "b"}]}\n'
                          b'{"id": "t", "instruction": "c", "instances": [{"input": "", "output": "d"}]}\n',
                          ":2: duplicate id 't' (first produced from line 1)"),
    "questions_turns": ("mt-bench-questions", b'{"question_id": 1, "category": "x", "turns": ["ok", 3]}\n',
                        ":1: turns[1]: expected a non-empty string"),
    "alpaca_eval_missing": ("alpaca-eval", b'[{"instruction": "a", "output": "b"}]', ":1: [0].generator: missing field"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_BYTES))
def test_malformed_input_is_one_line_exit_2(tmp_path, capsys, case):
    fmt, data, expected = MALFORMED_BYTES[case]
    path = tmp_path / f"{case}.json"
    path.write_bytes(data)
    out = tmp_path / "out.jsonl"
    assert main(["convert", "--from", fmt, str(path), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("drover convert: error: ")
    assert f"{path}{expected}" in err, err
    assert "Traceback" not in err and not out.exists()


def test_malformed_array_element_reports_its_line(tmp_path, capsys):
    items = ALPACA[:2] + [{"instruction": "x", "input": ""}] + ALPACA[2:]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(items, indent=2))
    starts = [i + 1 for i, text in enumerate(path.read_text().splitlines()) if text == "  {"]
    assert main(["convert", "--from", "alpaca", str(path), str(tmp_path / "o.jsonl")]) == 2
    assert f"{path}:{starts[2]}: [2].output: missing field" in capsys.readouterr().err


def test_missing_file_directory_and_unknown_format(tmp_path, capsys):
    out = str(tmp_path / "o.jsonl")
    assert main(["convert", "--from", "alpaca", str(tmp_path / "nope.json"), out]) == 2
    assert "nope.json: file not found" in capsys.readouterr().err
    assert main(["convert", "--from", "alpaca", str(tmp_path), out]) == 2
    assert "directory has no data files" in capsys.readouterr().err
    assert main(["convert", "--from", "sharegtp", str(SAMPLES / "sharegpt.json"), out]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'sharegpt'" in err and len(err.strip().splitlines()) == 1


def test_directory_of_task_files_with_a_name_list(tmp_path, capsys):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    sample = json.loads((SAMPLES / "task999_movie_review_sentiment.json").read_text())
    for n in (1, 2, 3):
        task = dict(sample, Instances=[dict(i, id=i["id"].replace("task999", f"task00{n}")) for i in sample["Instances"]])
        (tasks / f"task00{n}_sentiment.json").write_text(json.dumps(task, indent=1))
    (tasks / "README.md").write_text("not data")
    out = tmp_path / "all.jsonl"
    assert main(["convert", "--from", "superni", "--max-instances", "2", str(tasks), str(out)]) == 0
    records = list(read_conversations(out))
    assert [r.meta["task"] for r in records] == ["task001_sentiment"] * 2 + ["task002_sentiment"] * 2 + [
        "task003_sentiment"] * 2
    names = tmp_path / "test_tasks.txt"
    names.write_text("task003_sentiment\n\ntask001_sentiment\n")
    assert main(["convert", "--from", "superni", "--only", str(names), str(tasks), str(out)]) == 0
    assert [r.meta["task"] for r in read_conversations(out)] == ["task003_sentiment"] * 3 + ["task001_sentiment"] * 3
    names.write_text("task004_missing\n")
    assert main(["convert", "--from", "superni", "--only", str(names), str(tasks), str(out)]) == 2
    assert "listed file(s) not in this directory, e.g. 'task004_missing'" in capsys.readouterr().err
    # the same ids from two files: the error names both places
    (tasks / "task009_copy.json").write_text((tasks / "task001_sentiment.json").read_text())
    assert main(["convert", "--from", "superni", str(tasks), str(out)]) == 2
    err = capsys.readouterr().err
    assert "task009_copy.json:1: duplicate id" in err and "task001_sentiment.json:1" in err
