"""Issue #12 examples about files: the appender keeps complete records and never rewrites a
file that is not its JSONL; every JSON is strict; files get the process umask."""

from __future__ import annotations

import json
import math
import os

import pytest

from drover.atomic import write_json
from drover.errors import InputError
from drover.records import JsonlAppender


def _strict_load(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_appender_keeps_a_complete_last_record_without_newline(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}')  # written by another tool: no final newline
    with JsonlAppender(path) as out:
        assert out.done_ids == {"a", "b"}
        out.write({"id": "c"})
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["a", "b", "c"]


def test_appender_drops_only_a_torn_tail(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "mess')  # killed mid-write
    with JsonlAppender(path) as out:
        assert out.done_ids == {"a"}
    assert path.read_text() == '{"id": "a"}\n'


@pytest.mark.parametrize("content", [
    '[{"id": "a"}, {"id": "b"}]',            # a minified JSON array given as --output
    '[{"id": "a"}, {"id": "b"}]\n',
    '[\n  {"id": "a"}\n]\n',                 # a pretty-printed one
    'just some notes',
    '{"id": "a"}\nnot json\n{"id": "b"}\n',  # a corrupt middle line
])
def test_appender_never_rewrites_a_file_that_is_not_its_jsonl(tmp_path, content):
    path = tmp_path / "user.json"
    path.write_text(content)
    with pytest.raises(InputError, match="JSONL file of records"):
        JsonlAppender(path)
    assert path.read_text() == content


def test_json_is_strict_everywhere(tmp_path):
    from drover.results import read_result, write_result
    from drover.runs import RunDir

    write_json(tmp_path / "a.json", {"x": math.nan, "y": [math.inf, -math.inf, 1.5]})
    assert _strict_load((tmp_path / "a.json").read_text()) == {"x": None, "y": [None, None, 1.5]}
    record = {"kind": "benchmark", "name": "t", "model": {"label": "base", "spec": "m", "fingerprint": None},
              "key": "k", "metrics": {"acc": math.nan}}
    path = write_result(tmp_path, record, [{"id": 1, "score": -math.inf}])
    assert _strict_load(path.read_text())["metrics"] == {"acc": None}
    assert read_result(path)["metrics"]["acc"] is None
    examples = (tmp_path / "eval" / "base" / "t.examples.jsonl").read_text().splitlines()
    assert _strict_load(examples[0]) == {"id": 1, "score": None}
    run = RunDir(tmp_path / "run")
    run.log("train", step=1, loss=math.nan)
    assert _strict_load(run.log_path.read_text())["loss"] is None


def test_files_are_created_with_the_process_umask(tmp_path):
    from drover.runs import RunDir

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "report.json", {"a": 1})
        RunDir(tmp_path).save_config({"a": 1})
        os.umask(0o077)
        write_json(tmp_path / "private.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "report.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("environ, actual, ok", [
    ({}, 1, True), ({"WORLD_SIZE": "2"}, 2, True), ({"WORLD_SIZE": "2"}, 1, False),
    ({"OMPI_COMM_WORLD_SIZE": "4"}, 1, False), ({"WORLD_SIZE": "1"}, 1, True),
])
def test_a_launch_whose_world_size_accelerate_did_not_set_up_is_an_error(environ, actual, ok):
    from drover.errors import ConfigError
    from drover.train.engine import check_world_size

    if ok:
        check_world_size(actual, environ)
    else:
        with pytest.raises(ConfigError, match="independent copies"):
            check_world_size(actual, environ)
