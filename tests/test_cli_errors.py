"""Bad input never gives a traceback: each command answers a user's mistake with one line,
`drover <cmd>: error: ...` naming the file, field or option, and exit code 2.

Driven through `drover.cli.main` in-process (no subprocess start-up, no model loading), the
way a newcomer would type the commands.
"""

from __future__ import annotations

import socket

import pytest

from drover.cli import main

ALPACA = '[{"instruction": "Say hi.", "input": "", "output": "Hi."}]'
CONVERSATION = '{"id": "a", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
CLOSED = "http://127.0.0.1:1/v1#m"  # port 1: nothing listens, the connection is refused


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "alpaca.json").write_text(ALPACA)
    (tmp_path / "conv.jsonl").write_text(CONVERSATION)
    (tmp_path / "badjson.jsonl").write_text('{"id": "a"}\n{bad\n')
    (tmp_path / "binary.jsonl").write_bytes(b"\x00\x01garbage\xff\n")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.yaml").write_text("a: [1\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "cache-run").mkdir()
    (tmp_path / "cache-run" / "llm-cache.sqlite").write_bytes(b"this is not a database" * 100)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _fails(argv: list[str], expected: str, capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1] if err else ""
    assert code == 2, f"exit {code} for {argv}: {err}"
    assert "Traceback" not in err
    assert last.startswith(f"drover {argv[0]}: error: "), err
    assert expected in last, last
    return last


CASES = [
    # convert
    (["convert", "--from", "alpaca", "nope.json", "out.jsonl"], "nope.json: file not found"),
    (["convert", "--from", "alpaca", "adir", "out.jsonl"], "adir: directory has no data files"),
    (["convert", "--from", "alpaca", "badjson.jsonl", "out.jsonl"], "badjson.jsonl:1: instruction: missing field"),
    (["convert", "--from", "alpaca", "binary.jsonl", "out.jsonl"], "binary.jsonl:1: binary data"),
    (["convert", "--from", "alpaca", "empty.jsonl", "out.jsonl"], "empty.jsonl: empty file"),
    (["convert", "--from", "sharegpt", "alpaca.json", "out.jsonl"], "alpaca.json:1: [0].conversations: missing field"),
    (["convert", "--from", "alpacca", "alpaca.json", "out.jsonl"], "unknown format 'alpacca'"),
    (["convert", "--from", "alpaca", "alpaca.json", "adir"], "adir: is a directory"),
    (["convert", "--from", "alpaca", "alpaca.json", "alpaca.json/out.jsonl"], "alpaca.json is a file, not a directory"),
    (["convert", "--from", "sharegpt", "--max-tokens", "-5", "alpaca.json", "out.jsonl"], "--max-tokens"),
    # data
    (["data", "path", "nosuch"], "unknown shipped dataset 'nosuch'"),
    # inspect-tokens: the record is read and the tokenizer resolved before any model work
    (["inspect-tokens", "nope.jsonl", "--model", "nope"], "nope.jsonl: file not found"),
    (["inspect-tokens", "badjson.jsonl", "--model", "nope"], "badjson.jsonl:1"),
    (["inspect-tokens", "conv.jsonl", "--model", "meta-llama/Llama-2-7b-hf"], "does not download implicitly"),
    (["inspect-tokens", "conv.jsonl", "--model", "alpaca.json"], "alpaca.json: no such tokenizer directory"),
    # init-tiny: checked before anything is built
    (["init-tiny", "alpaca.json"], "alpaca.json: exists and is not a directory"),
    (["init-tiny", "t", "--layers", "0"], "layers (0) must be at least 1"),
    (["init-tiny", "t", "--hidden", "63"], "must be a multiple of heads"),
    # stats
    (["stats", "nope.jsonl"], "nope.jsonl: file not found"),
    (["stats", "adir"], "adir: is a directory"),
    (["stats", "binary.jsonl"], "binary.jsonl:1: binary data"),
    (["stats", "conv.jsonl", "--top", "-1"], "--top must be at least 1"),
    (["stats", "conv.jsonl", "--out", "alpaca.json"], "--out alpaca.json: exists and is not a directory"),
    # serve: options and the port are checked before the model is loaded
    (["serve", "adir", "--port", "99999"], "--port must be between 1 and 65535"),
    (["serve", "adir", "--max-batch-size", "0"], "--max-batch-size must be at least 1"),
    (["serve", "adir", "--chat-template", "bogus"], "unknown chat template 'bogus'"),
    (["serve", "meta-llama/Llama-2-7b-hf", "--port", "18999"], "does not download implicitly"),
    # cache
    (["cache", "stats", "nope"], "no LLM cache here"),
    (["cache", "stats", "cache-run"], "LLM cache is corrupt"),
    # generate
    (["generate", "answers", "--input", "nope.json", "--output", "o/a.jsonl", "--teacher", CLOSED],
     "nope.json: file not found"),
    (["generate", "answers", "--input", "alpaca.json", "--output", "o/a.jsonl", "--teacher", "bogus"],
     "llm spec 'bogus'"),
    (["generate", "answers", "--input", "alpaca.json", "--output", "o/a.jsonl", "--teacher", "http://127.0.0.1:1/v1"],
     "name the model after '#'"),
    (["generate", "answers", "--input", "alpaca.json", "--output", "o/a.jsonl", "--teacher", CLOSED, "bogus_key=3"],
     "unknown key 'bogus_key'"),
    (["generate", "answers", "--input", "alpaca.json", "--output", "o/a.jsonl", "--teacher", CLOSED, "limit=-3"],
     "limit: must be >= 0"),
    (["generate", "answers", "--input", "alpaca.json", "--output", "o/a.jsonl", "--teacher", CLOSED,
      "max_tokens=0"], "max_tokens: must be >= 1"),
    (["generate", "answers", "--input", "alpaca.json", "--output", "o/a.jsonl", "--teacher", CLOSED,
      "--config", "bad.yaml"], "bad.yaml:2: invalid YAML"),
    (["generate", "answers", "--input", "alpaca.json", "--output", "cache-run/data/a.jsonl", "--teacher", CLOSED],
     "LLM cache is corrupt"),
    (["generate", "translate", "--input", "alpaca.json", "--output", "o/t.jsonl", "--translator", CLOSED],
     "to: required"),
    (["generate", "self-instruct", "--output", "o/s.jsonl", "--teacher", CLOSED, "num_instructions=-1"],
     "num_instructions: must be >= 1"),
    (["generate", "feedback", "--input", "conv.jsonl", "--responses", "a=nope.jsonl", "--output", "o/f.jsonl",
      "--judge", CLOSED], "nope.jsonl: file not found"),
    (["generate", "rank", "--method", "probabilistic", "--input", "alpaca.json", "--output", "o/r.jsonl",
      "--teacher", CLOSED, "n=1"], "n: must be >= 2"),
    (["generate", "rank", "--method", "contextual", "--input", "alpaca.json", "--output", "o/r.jsonl",
      "--policy", CLOSED, "--judge", CLOSED, "temperature=-1"], "temperature: must be >= 0"),
    # judge
    (["judge", "vicuna", "--judge", CLOSED, "--model-outputs", "nope.jsonl"], "nope.jsonl: file not found"),
    (["judge", "vicuna", "--judge", CLOSED, "--model-outputs", "badjson.jsonl"], "badjson.jsonl:1: expected {question_id, text}"),
    (["judge", "mt-bench", "--judge", CLOSED, "--model-outputs", "conv.jsonl"], "two assistant turns"),
    (["judge", "rank", "--judge", CLOSED, "--model-outputs", "conv.jsonl"], "at least two --model-outputs"),
    (["judge", "meta", "--judge", CLOSED, "--strategy", "bogus"], "unknown LLMBar strategy 'bogus'"),
    (["judge", "meta", "--judge", CLOSED, "--limit", "-1"], "--limit must be at least 1"),
    (["judge", "meta", "--judge", CLOSED, "--concurrency", "0"], "--concurrency must be at least 1"),
    (["judge", "meta", "--judge", CLOSED, "--run-dir", "cache-run", "--limit", "1"], "LLM cache is corrupt"),
    (["judge", "meta", "--judge", CLOSED, "--run-dir", "alpaca.json"], "run directory alpaca.json: a file is in the way"),
    (["judge", "bias", "--annotations", "alpaca.json"], "expected an alpaca_eval annotations list"),
    # human
    (["human", "create", "--a", "nope.jsonl", "--b", "conv.jsonl", "--out", "st"], "nope.jsonl: file not found"),
    (["human", "create", "--a", "badjson.jsonl", "--b", "conv.jsonl", "--out", "st"],
     "badjson.jsonl:1: messages: expected a non-empty list"),
    (["human", "results", "adir"], "adir: not a study"),
    (["human", "serve", "adir", "--port", "0"], "--port must be between 1 and 65535"),
    # run
    (["run", "nope"], "recipe 'nope' not found"),
    (["run", "bad.yaml"], "bad.yaml:2: invalid YAML"),
    (["run", "quickstart", "bogus=1"], "unknown key 'bogus'"),
    (["run", "quickstart", "--only", "sf"], "no stage 'sf' (did you mean 'sft'?)"),
    # report
    (["report", "nope"], "nope: run directory not found"),
]


@pytest.mark.parametrize("argv,expected", CASES, ids=[" ".join(argv[:3]) + f" #{i}" for i, (argv, _) in
                                                     enumerate(CASES)])
def test_bad_input_is_one_line_error(workdir, capsys, argv, expected):
    _fails(argv, expected, capsys)


def test_busy_port_is_reported_before_loading(workdir, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        _fails(["serve", "adir", "--port", port], "Address already in use", capsys)
        _fails(["human", "serve", "adir", "--port", port], "Address already in use", capsys)


def test_refused_connection_fails_the_job_once(workdir, capsys):
    """A teacher nobody answers for is one clear error after the retries, not N item errors and exit 0."""
    last = _fails(["generate", "answers", "--input", "alpaca.json", "--output", "o/a.jsonl", "--teacher", CLOSED,
                   "teacher_options.max_retries=1", "teacher_options.backoff_base=0.01"], "cannot reach", capsys)
    assert "gave up after 2 attempts" in last


def test_keyboard_interrupt_says_how_to_resume(workdir, capsys, monkeypatch):
    import drover.commands.stats as stats

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(stats, "run", interrupted)
    assert main(["stats", "conv.jsonl"]) == 130
    assert "interrupted; re-run the same command to resume" in capsys.readouterr().err


# ---------------------------------------------------------------- the malformed-input matrix (issue #13)
# Every command that reads a user's file, fed each kind of broken file: one line, exit 2, naming
# the file; never a traceback, never a silent success.

BAD_INPUTS = {
    "empty": b"",
    "binary": b"\x00\x01\x02garbage\xff\n",
    "truncated-json": b'{"id": "a", "messages": [{"role": "user", "content": "hi"',
    "wrong-types": b'{"id": 5, "messages": "hi", "instruction": 3, "output": [], "question_id": 1, "text": 7}\n',
    "non-utf8": b'{"id": "caf\xe9", "messages": []}\n',
    "50mb-line": b'{"id": "' + b"x" * (50 * 1024 * 1024),
    "junk-array": b'[1, "x", null, [2], {"role": 3}]\n',
    "directory": None,
    "missing": None,
}
# wrong types for a whole-file JSON or YAML document
WRONG_TYPES_DOCUMENT = {"json": b'{"instruction": 1, "output": 2}\n', "yaml": b"- 1\n- {a: 2}\n"}

FILE_COMMANDS = {
    "convert": (["convert", "--from", "alpaca", "{f}", "out.jsonl"], "json"),
    "convert-jsonl": (["convert", "--from", "sharegpt", "{f}", "out.jsonl"], "jsonl"),
    "stats": (["stats", "{f}"], "jsonl"),
    "inspect-tokens": (["inspect-tokens", "{f}", "--model", "nope"], "jsonl"),
    "generate-answers": (["generate", "answers", "--input", "{f}", "--output", "o/a.jsonl", "--teacher", CLOSED],
                         "jsonl"),
    "generate-feedback": (["generate", "feedback", "--input", "conv.jsonl", "--responses", "a={f}", "--output",
                           "o/f.jsonl", "--judge", CLOSED], "jsonl"),
    "generate-config": (["generate", "answers", "--input", "alpaca.json", "--output", "o/a.jsonl", "--teacher",
                         CLOSED, "--config", "{f}"], "yaml"),
    "judge-vicuna": (["judge", "vicuna", "--judge", CLOSED, "--model-outputs", "{f}"], "jsonl"),
    "judge-mt-bench": (["judge", "mt-bench", "--judge", CLOSED, "--model-outputs", "{f}"], "jsonl"),
    "judge-alpaca-eval-json": (["judge", "alpaca-eval", "--judge", CLOSED, "--model-outputs", "{f}"], "json"),
    "judge-alpaca-eval-jsonl": (["judge", "alpaca-eval", "--judge", CLOSED, "--model-outputs", "{f}"], "jsonl"),
    "judge-rank": (["judge", "rank", "--judge", CLOSED, "--model-outputs", "conv.jsonl", "{f}"],
                   "jsonl"),
    "judge-bias": (["judge", "bias", "--annotations", "{f}"], "json"),
    "human-create": (["human", "create", "--a", "{f}", "--b", "conv.jsonl", "--out", "study"], "jsonl"),
    "run": (["run", "{f}"], "yaml"),
    # the inputs are read before any model loads (so "nope" is never looked at)
    "rerank-prompts": (["rerank", "--reward-model", "nope", "--policy", "nope", "--prompts", "{f}"], "jsonl"),
    "rerank-input": (["rerank", "--reward-model", "nope", "--input", "{f}"], "jsonl"),
    "expert-iterate": (["expert-iterate", "--policy", "nope", "--reward-model", "nope", "--prompts", "{f}",
                        "--run-dir", "ei"], "jsonl"),
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    for case, content in BAD_INPUTS.items():
        for ext in ("json", "jsonl", "yaml"):
            path = root / f"{case}.{ext}"
            if case == "directory":
                path.mkdir()
            elif case == "wrong-types" and ext in WRONG_TYPES_DOCUMENT:
                path.write_bytes(WRONG_TYPES_DOCUMENT[ext])
            elif content is not None:
                path.write_bytes(content)
    return root


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("command", list(FILE_COMMANDS))
def test_malformed_input_matrix(workdir, bad_files, capsys, command, case):
    template, ext = FILE_COMMANDS[command]
    path = bad_files / f"{case}.{ext}"
    argv = [part.replace("{f}", str(path)) for part in template]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert code == 2, f"exit {code} for {argv}: {err[-2000:]}"
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith(f"drover {argv[0]}: error: "), err[-2000:]
    assert path.name in lines[0], lines[0]


# ---- damaged study directories and result records: named, exit 2, never a traceback
DAMAGED_STUDY = {
    "study.json is a list": ("study.json", b"[]", "study.json: expected a JSON object"),
    "study.json is a string": ("study.json", b'"x"', "study.json: expected a JSON object"),
    "db is not a string": ("study.json", b'{"db": 5}', "study.json: expected a JSON object"),
    "study.json not UTF-8": ("study.json", b"\xff\xfe{}", "study.json: not valid JSON"),
    "the database is garbage": ("study.sqlite", b"not a database" * 500, "file is not a database"),
    "the database is empty": ("study.sqlite", b"", "holds no readable study"),
}


@pytest.mark.parametrize("case", list(DAMAGED_STUDY))
@pytest.mark.parametrize("action", ["results", "export", "serve"])
def test_a_damaged_study_is_one_line_error(tmp_path, monkeypatch, capsys, case, action):
    from human_helpers import free_port, make_study

    directory, _ = make_study(tmp_path, "tulu", n=2)
    name, content, expected = DAMAGED_STUDY[case]
    (directory / name).write_bytes(content)
    for sidecar in ("study.sqlite-wal", "study.sqlite-shm"):
        (directory / sidecar).unlink(missing_ok=True)
    monkeypatch.chdir(tmp_path)
    extra = {"export": ["--out", "x.jsonl"], "serve": ["--port", str(free_port())]}.get(action, [])
    argv = ["human", action, str(directory)] + extra
    err = _fails(argv, expected, capsys)
    assert str(directory) in err


DAMAGED_RESULTS = {
    "metrics not an object": ('{"name": "x", "metrics": "x"}', "metrics: expected an object"),
    "a metric that is text": ('{"metrics": {"acc": "0.9"}}', "metrics.acc: expected a number"),
    "a metric that is a bool": ('{"metrics": {"acc": true}}', "metrics.acc: expected a number"),
    "breakdown a list": ('{"metrics": {"acc": 0.5}, "breakdown": [1]}', "breakdown: expected an object"),
    "model label a list": ('{"metrics": {"acc": 0.5}, "model": {"label": ["x"]}}', "model.label: expected a string"),
    "name a number": ('{"metrics": {"acc": 0.5}, "name": 5}', "name: expected a string"),
}


@pytest.mark.parametrize("case", list(DAMAGED_RESULTS))
def test_report_names_a_result_with_wrong_types(tmp_path, capsys, case):
    text, expected = DAMAGED_RESULTS[case]
    (tmp_path / "eval" / "m").mkdir(parents=True)
    (tmp_path / "eval" / "m" / "x.json").write_text(text)
    assert "x.json" in _fails(["report", str(tmp_path)], expected, capsys)


def test_a_run_refused_for_a_bad_input_does_not_block_the_fixed_run(workdir, capsys):
    """The stage claimed its output before reading the prompts: the corrected command was then
    refused as "written under other settings" although nothing had been written."""
    from drover.generate.stage import claim_output

    _fails(["rerank", "--reward-model", "nope", "--policy", "nope", "--prompts", "empty.jsonl"], "empty file", capsys)
    assert not (workdir / "runs" / "rerank" / "data" / "ranked.stage.json").exists()

    import dataclasses

    @dataclasses.dataclass
    class Cfg:  # a stage whose first attempt claimed its output, then failed before writing
        output: str
        seed: int = 0

    out = workdir / "out.jsonl"
    out.write_text("")
    claim_output(Cfg(str(out)))
    claim_output(Cfg(str(out), seed=1))  # empty: nothing to mix
    out.write_text('{"id": "a"}\n')
    with pytest.raises(Exception, match="written under other settings"):
        claim_output(Cfg(str(out), seed=2))
    # an empty output whose items were all recorded as rejected or failed is not empty: those
    # ids are done, and resuming under other settings would keep them
    for name in ("rejected", "failures"):
        out.write_text("")
        claim_output(Cfg(str(out), seed=3))
        (workdir / f"out.{name}.jsonl").write_text('{"id": "a", "reason": "empty answer"}\n')
        with pytest.raises(Exception, match="written under other settings"):
            claim_output(Cfg(str(out), seed=4))
        (workdir / f"out.{name}.jsonl").unlink()
