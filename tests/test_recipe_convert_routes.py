"""Every `drover convert` route a shipped recipe documents (comment lines
`drover convert --from FORMAT IN OUT [flags]`) or runs (a `convert` stage) works: each
documented route runs through the real CLI on a file of that format's real shape."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from drover.cli import main
from drover.records import read_records
from drover.recipes import RECIPES_DIR
from drover.shipped import data_dir, data_path

SAMPLES = Path(__file__).parent / "data" / "formats"
ROUTE = re.compile(r"drover convert (--from .+)$")

# The 82K generated Self-Instruct instances (yizhongw/self-instruct, batch_221203): flat lines, no id.
SELF_INSTRUCT_82K = [
    {"instruction": "Generate a list of three fruits.", "input": "", "output": "Apple, banana, cherry."},
    {"instruction": "Classify the sentiment of the sentence.", "input": "I love this movie.", "output": "Positive"},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
]


def documented_routes() -> list[tuple[str, list[str]]]:
    routes = []
    for path in sorted(RECIPES_DIR.rglob("*.yaml")):
        for line in path.read_text(encoding="utf-8").splitlines():
            found = ROUTE.search(line.lstrip("# ").strip())
            if line.lstrip().startswith("#") and found:
                routes.append((path.name, shlex.split(found.group(1))))
    return routes


def _fixture(fmt: str, name: str, tmp: Path) -> Path:
    """A real-shaped input for a documented route's IN (file, or directory when IN ends in "/")."""
    one = {"flan": SAMPLES / "flan.jsonl", "dolly": SAMPLES / "dolly.jsonl",
           "oasst": SAMPLES / "oasst_ready.trees.jsonl", "alpaca": data_path("codealpaca", "code_alpaca_2k.json"),
           "sharegpt": SAMPLES / "sharegpt.json", "baize": SAMPLES / "baize.json",
           "unnatural": SAMPLES / "unnatural_full.jsonl", "superni": SAMPLES / "task999_movie_review_sentiment.json",
           "gsm8k": data_path("gsm8k", "test.jsonl")}
    if fmt == "self-instruct":
        source = tmp / "sample" / "all_instances_82K.jsonl"
        source.parent.mkdir()
        source.write_text("".join(json.dumps(x) + "\n" for x in SELF_INSTRUCT_82K), encoding="utf-8")
    elif fmt in one:
        source = one[fmt]
    else:
        raise AssertionError(f"a recipe documents `--from {fmt}` but this test has no {fmt} sample: add one")
    if not name.endswith("/"):
        target = tmp / Path(name).name
        shutil.copy(source, target)
        return target
    folder = tmp / name.rstrip("/").replace("/", "_")
    folder.mkdir()
    shutil.copy(source, folder / source.name)
    return folder


ROUTES = documented_routes()


def test_recipes_document_the_tulu_routes():
    formats = {args[1] for _, args in ROUTES}
    assert {"flan", "dolly", "oasst", "alpaca", "sharegpt", "self-instruct"} <= formats
    assert len(ROUTES) >= 15


@pytest.mark.parametrize("recipe,args", ROUTES, ids=[f"{r}:{a[1]}:{a[2]}" for r, a in ROUTES])
def test_documented_route_converts(recipe, args, tmp_path, tiny_model_dir):
    fmt, name, out = args[1], args[2], args[3]
    flags = args[4:]
    source = _fixture(fmt, name, tmp_path)
    resolved = []
    for flag in flags:
        if flag == "BASE":
            resolved.append(str(tiny_model_dir))
        elif flag.startswith("splits/"):  # Super-NI's task list: the sample task only
            listing = tmp_path / "tasks.txt"
            listing.write_text("".join(p.stem + "\n" for p in source.iterdir()))
            resolved.append(str(listing))
        else:
            resolved.append(flag)
    target = tmp_path / "out" / Path(out).name
    assert main(["convert", "--from", fmt, str(source), str(target), *resolved]) == 0
    records = list(read_records(target))
    assert records, f"{recipe}: `drover convert {' '.join(args)}` wrote no records"
    if fmt == "self-instruct":
        assert [r.id for r in records] == ["self_instruct_0", "self_instruct_1", "self_instruct_2"]
        assert records[1].messages[0].content == "Classify the sentiment of the sentence.\n\nI love this movie."
        assert records[1].meta["input"] == "I love this movie."


def _stage_routes() -> list[tuple[str, list[str]]]:
    out = []
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        for stage in yaml.safe_load(path.read_text(encoding="utf-8")).get("stages", []):
            if stage.get("command") == "convert" and "${drover_data}" in " ".join(stage["args"]):
                out.append((f"{path.stem}:{stage['name']}", stage["args"]))
    return out


@pytest.mark.parametrize("stage,args", _stage_routes(), ids=[s for s, _ in _stage_routes()])
def test_recipe_convert_stages_on_shipped_data(stage, args, tmp_path):
    argv = [a.replace("${drover_data}", str(data_dir())) for a in args]
    argv[-1] = str(tmp_path / Path(argv[-1]).name)
    assert main(["convert", *argv]) == 0
    assert list(read_records(argv[-1]))
