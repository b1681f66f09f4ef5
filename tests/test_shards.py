"""Sharded local generation: `--shard I/N` parsing and launcher detection, request
sharding for `drover eval` (greedy generation and scoring) and seeded sampling, whose
merge must equal an unsharded run, and record sharding with its in-order merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drover.cli import main
from drover.errors import ConfigError
from drover.llm.cache import LLMCache
from drover.llm.client import LLM
from drover.llm.config import LLMConfig
from drover.llm.sharded import ShardedLLM
from drover.completions import Request
from drover.shards import Shard, mark_done, merge_output_parts, output_markers, output_part


def test_shard_spec_and_launcher_environment():
    assert Shard.parse("1/4") == Shard(1, 4) and Shard(1, 4).name == "1-of-4"
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ConfigError, match="--shard"):
            Shard.parse(bad)
    assert Shard.from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3"}) == Shard(3, 8)
    assert Shard.from_env({}) is None and Shard.from_env({"RANK": "0", "WORLD_SIZE": "1"}) is None
    # Every key has exactly one owner.
    keys = [f"{i:064x}" for i in range(0, 10_000, 7)]
    owners = [[s for s in range(3) if Shard(s, 3).owns_key(k)] for k in keys]
    assert all(len(o) == 1 for o in owners) and {o[0] for o in owners} == {0, 1, 2}


def _eval(model: str, run: Path, *extra: str) -> int:
    return main(["eval", "--model", model, "--run-dir", str(run), "--tasks", "gsm_direct,mmlu_0shot",
                 "--limit", "3", "-o", "max_tokens=12", "-o", "gsm_direct.shots=1", *extra])


def _outputs(run: Path, task: str) -> tuple[dict, list[dict]]:
    record = json.loads(next((run / "eval").glob(f"*/{task}.json")).read_text())  # RUN/eval/<model>/
    examples = [json.loads(x) for x in (run / record["examples_file"]).read_text().splitlines()]
    return record, examples


@pytest.mark.slow
def test_sharded_eval_merges_to_the_unsharded_result(tiny_model_dir, tmp_path, capsys):
    model = str(tiny_model_dir)
    assert _eval(model, tmp_path / "whole") == 0
    sharded = tmp_path / "sharded"
    assert _eval(model, sharded, "--shard", "0/2") == 0
    assert not (sharded / "eval").exists() or not list((sharded / "eval").glob("*/*.json"))  # no result yet
    assert _eval(model, sharded, "--shard", "1/2") == 0
    parts = sorted((sharded / "shards" / "eval").glob("llm-cache.*.sqlite"))
    assert [p.name for p in parts] == ["llm-cache.0-of-2.sqlite", "llm-cache.1-of-2.sqlite"]
    sizes = [LLMCache(p).stats()["entries"] for p in parts]
    assert all(s > 0 for s in sizes)  # both shards did real work
    capsys.readouterr()
    assert _eval(model, sharded) == 0  # the merge
    assert "shards: merged 2 part(s)" in capsys.readouterr().out
    merged = LLMCache(sharded / "llm-cache.sqlite").stats()
    assert merged["entries"] == sum(sizes) and merged["misses"] == 0  # nothing generated twice
    for task in ("gsm_direct", "mmlu_0shot"):
        whole, whole_examples = _outputs(tmp_path / "whole", task)
        part, part_examples = _outputs(sharded, task)
        assert part["metrics"] == whole["metrics"] and part["n_examples"] == whole["n_examples"]
        if task == "gsm_direct":  # greedy generation: identical text
            assert part_examples == whole_examples
        else:  # scores: the same predictions; log-probs equal up to float rounding (batch padding)
            for a, b in zip(part_examples, whole_examples):
                assert a["prediction"] == b["prediction"] and a["prompt"] == b["prompt"]
                assert a["choice_logprobs"] == pytest.approx(b["choice_logprobs"], abs=1e-4)


def test_seeded_sampling_sharded_equals_unsharded(tiny_model_dir, tmp_path):
    config = LLMConfig.from_spec(str(tiny_model_dir), batch_size=4)
    requests = [Request.chat([("user", f"tell me about {w}")], n=3, temperature=1.0, seed=7, max_tokens=6)
                for w in ("cats", "dogs", "rain", "maps", "tea", "sand")]
    with LLM(config, tmp_path / "whole.sqlite", progress=False) as llm:
        whole = [[c.text for c in x.choices] for x in llm.run(requests)]
    for i in range(2):
        with LLM(config, tmp_path / f"part{i}.sqlite", progress=False) as llm:
            out = list(ShardedLLM(llm, Shard(i, 2).owns_key).run(requests))
            assert len(out) == len(requests) and all(len(c.choices) == 3 for c in out)
    main_cache = LLMCache(tmp_path / "merged.sqlite")
    assert main_cache.merge(tmp_path / "part0.sqlite") + main_cache.merge(tmp_path / "part1.sqlite") == len(requests)
    assert main_cache.merge(tmp_path / "part1.sqlite") == 0  # idempotent
    main_cache.close()
    with LLM(config, tmp_path / "merged.sqlite", progress=False) as llm:
        merged = list(llm.run(requests))
    assert all(c.cached for c in merged) and [[c.text for c in x.choices] for x in merged] == whole


def test_record_parts_merge_in_input_order_once_all_are_done(tmp_path):
    out = tmp_path / "data" / "ranked.jsonl"
    ids = [f"r{k}" for k in range(7)]
    for index in range(3):
        shard = Shard(index, 3)
        part = output_part(out, shard)
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_text("".join(json.dumps({"id": i, "shard": index}) + "\n"
                                for k, i in enumerate(ids) if shard.owns_index(k)))
        if index < 2:
            mark_done(output_markers(out), shard, {})
    with pytest.raises(ConfigError, match="shard\\(s\\) 2 of 3 not finished"):
        merge_output_parts(out, 3, ids)
    mark_done(output_markers(out), Shard(2, 3), {})
    assert merge_output_parts(out, 3, ids) == 7
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ids


@pytest.mark.slow
def test_eval_under_a_launcher_shards_itself_and_rank0_merges(tiny_model_dir, tmp_path):
    """`accelerate launch --num_processes 2 -m drover eval`: two ranks, each its own shard;
    rank 0 waits for the other and writes the result, the same as one process."""
    import os
    import socket
    import subprocess
    import sys

    model = str(tiny_model_dir)
    args = ["--model", model, "--tasks", "gsm_direct", "--limit", "4", "-o", "max_tokens=8", "-o", "shots=1"]
    assert main(["eval", "--run-dir", str(tmp_path / "whole"), *args]) == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launched = tmp_path / "launched"
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                           "--main_process_port", str(port), "--mixed_precision", "no", "-m", "drover", "eval",
                           "--run-dir", str(launched), *args],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert sorted(p.name for p in (launched / "shards" / "eval").glob("*.done.json")) == \
        ["0-of-2.done.json", "1-of-2.done.json"]
    assert _outputs(launched, "gsm_direct")[1] == _outputs(tmp_path / "whole", "gsm_direct")[1]


@pytest.fixture(scope="module")
def saved_reward_model(tiny_model_dir, tmp_path_factory):
    """The tiny model with a (random, then saved: fixed) scalar head."""
    from drover.models import load_tokenizer
    from drover.local.reward import load_reward_model

    path = tmp_path_factory.mktemp("rm") / "rm"
    load_reward_model(str(tiny_model_dir)).save_pretrained(path)
    load_tokenizer(tiny_model_dir).save_pretrained(path)
    return path


@pytest.mark.slow
def test_sharded_rerank_merges_to_the_unsharded_output(tiny_model_dir, saved_reward_model, tmp_path):
    from drover.records import Conversation, Message, read_ranked, write_jsonl

    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [Conversation(f"p{k}", [Message("user", f"write about {w}")])
                          for k, w in enumerate(("cats", "dogs", "rain", "maps", "tea"))])

    def rerank(run: str, *extra: str) -> int:
        return main(["rerank", "--prompts", str(prompts), "--policy", str(tiny_model_dir), "--reward-model",
                     str(saved_reward_model), "-n", "3", "--max-tokens", "6", "--seed", "3",
                     "--run-dir", str(tmp_path / run), *extra])

    assert rerank("whole") == 0
    assert rerank("sharded", "--shard", "1/2") == 0
    assert rerank("sharded", "--merge-shards", "2") == 2  # shard 0 has not run: refused
    assert rerank("sharded", "--shard", "0/2") == 0
    assert rerank("sharded", "--merge-shards", "2") == 0
    for name in ("ranked.jsonl", "best.jsonl"):
        whole = [json.loads(x) for x in (tmp_path / "whole" / "data" / name).read_text().splitlines()]
        merged = [json.loads(x) for x in (tmp_path / "sharded" / "data" / name).read_text().splitlines()]
        assert [r["id"] for r in merged] == [f"p{k}" for k in range(5)] == [r["id"] for r in whole]
        # The same samples in the same order; rewards equal up to float rounding (batch padding).
        strip = lambda r: json.dumps({**r, "responses": [{**x, "score": None} for x in r.get("responses", [])],  # noqa: E731
                                      "meta": {**r.get("meta", {}), "reward": None}})
        assert [strip(r) for r in merged] == [strip(r) for r in whole]
        scores = lambda rs: [x["score"] for r in rs for x in r.get("responses", [])] + [r["meta"].get("reward", 0) for r in rs]  # noqa: E731
        assert scores(merged) == pytest.approx(scores(whole), abs=1e-5)
    parts = [list(read_ranked(tmp_path / "sharded" / "data" / f"ranked.shard-{i}-of-2.jsonl")) for i in range(2)]
    assert [len(p) for p in parts] == [3, 2]


class _Judge:
    """A deterministic listwise judge: ranks by response length; unreadable for 'cats'."""

    class config:  # noqa: N801 - stands in for an LLMConfig
        model = "judge"

    def __init__(self):
        from drover.llm.client import LLMStats

        self.stats = LLMStats()

    def run(self, requests, desc="", total=None):
        from drover.completions import Choice, Completion

        for request in requests:
            text = request.messages[-1][1]
            reply = "no idea" if "cats" in text else "rank: [2, 0, 1]"
            yield Completion(choices=[Choice(reply, "stop")], key=request.key)

    def close(self):
        pass


@pytest.mark.slow
def test_sharded_contextual_ranking_merges_to_the_unsharded_output(tiny_model_dir, tmp_path, monkeypatch):
    import drover.generate.rank_contextual as rc

    real_open = rc.open_llm
    monkeypatch.setattr(rc, "open_llm", lambda spec, cache, options=None, role="teacher":
                        _Judge() if role == "judge" else real_open(spec, cache, options, role))
    prompts = tmp_path / "alpaca.json"
    prompts.write_text(json.dumps([{"id": f"i{k}", "instruction": f"Write about {w}.", "input": "", "output": "x"}
                                   for k, w in enumerate(("dogs", "cats", "rain", "maps", "tea"))]))

    def config(run: str, **extra) -> rc.RankContextualConfig:
        return rc.RankContextualConfig(input=str(prompts), output=str(tmp_path / run / "data" / "c.jsonl"),
                                       policy=str(tiny_model_dir), judge="j", n=3, max_tokens=6,
                                       rouge_threshold=1.01, **extra)

    rc.run_rank_contextual(config("whole"))
    for index in (0, 1):
        rc.run_rank_contextual(config("sharded", shard=f"{index}/2"))
    rc.run_rank_contextual(config("sharded", merge_shards=2))
    for name in ("c.jsonl", "c.failures.jsonl"):
        whole = (tmp_path / "whole" / "data" / name).read_text()
        merged = (tmp_path / "sharded" / "data" / name).read_text()
        assert merged == whole and whole  # byte for byte (seeded samples, in input order)
    assert len(whole.splitlines()) == 1  # the 'cats' instruction failed, in both
    with pytest.raises(ConfigError, match="not both"):
        config("x", shard="0/2", merge_shards=2).validate()


def test_a_shard_marked_done_by_another_job_is_not_done_for_this_one(tmp_path):
    """Markers name the job (the stage key every shard and the merge share): a part left by a
    run under other settings is not merged into this job's output, and rank 0 does not stop
    waiting for it."""
    from drover.shards import RecordShards, done_shards

    out = tmp_path / "data" / "ranked.jsonl"
    ids = ["a", "b", "c"]
    for index in range(2):
        part = output_part(out, Shard(index, 2))
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_text("".join(json.dumps({"id": i}) + "\n" for k, i in enumerate(ids) if k % 2 == index))
    markers = output_markers(out)
    mark_done(markers, Shard(0, 2), {}, "sha256:new")
    mark_done(markers, Shard(1, 2), {}, "sha256:old")  # this shard's last run was under other settings
    assert [s.index for s in done_shards(markers, "sha256:new")] == [0]
    with pytest.raises(ConfigError, match="shard\\(s\\) 1 of 2 not finished under these settings"):
        RecordShards(merge=2).finish([out], lambda: ids, "sha256:new", log=lambda _: None)
    assert not out.exists()
    mark_done(markers, Shard(1, 2), {}, "sha256:new")
    assert RecordShards(merge=2).finish([out], lambda: ids, "sha256:new", log=lambda _: None)
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ids


def test_every_shard_of_a_job_and_its_merge_share_one_job_key(tmp_path):
    import dataclasses

    from drover.generate.rank_contextual import RankContextualConfig, _job
    from drover.generate.stage import stage_key
    from drover.infer.rerank_config import RerankConfig

    rerank = RerankConfig(reward_model=str(tmp_path), prompts=str(tmp_path), policy="openai:p")
    keys = {stage_key(dataclasses.replace(rerank, **c)) for c in ({"shard": "0/2"}, {"shard": "1/2"}, {"merge_shards": 2})}
    assert len(keys) == 1 and stage_key(dataclasses.replace(rerank, temperature=0.5)) not in keys
    ranking = RankContextualConfig(input="i.json", output="o.jsonl", policy="openai:p", judge="openai:j")
    keys = {_job(dataclasses.replace(ranking, **c)) for c in ({"shard": "0/2"}, {"shard": "1/2"}, {"merge_shards": 2})}
    assert len(keys) == 1 and _job(dataclasses.replace(ranking, n=3)) not in keys


def test_a_contextual_ranking_shard_resumed_under_other_settings_refuses(tmp_path, monkeypatch, capsys):
    """A shard writes its own part: the part, not the (not yet merged) output, is what a re-run
    of that shard resumes, so the part is what is claimed with the settings."""
    import drover.generate.rank_contextual as rc

    def crashed(config):  # wrote one ranking into its part, then died
        part = output_part(config.output, Shard.parse(config.shard))
        part.parent.mkdir(parents=True, exist_ok=True)
        with part.open("a") as handle:
            handle.write(json.dumps({"id": "i0", "n": config.n}) + "\n")

    monkeypatch.setattr(rc, "run_rank_contextual", crashed)
    prompts = tmp_path / "alpaca.json"
    prompts.write_text(json.dumps([{"id": "i0", "instruction": "Write.", "input": "", "output": "x"}]))
    out = tmp_path / "data" / "c.jsonl"
    base = ["generate", "rank", "--method", "contextual", "--input", str(prompts), "--output", str(out),
            "--policy", "openai:p", "--judge", "openai:j", "shard=0/2"]
    assert main([*base, "n=3"]) == 0
    assert main([*base, "n=3"]) == 0  # the same settings resume
    assert main([*base, "n=5"]) == 2  # others would mix n=3 and n=5 rankings in one part
    assert "written under other settings (changed: n)" in capsys.readouterr().err
    assert main([*base, "n=5", "--force"]) == 0
    part = output_part(out, Shard(0, 2))
    assert [json.loads(x)["n"] for x in part.read_text().splitlines()] == [5]
