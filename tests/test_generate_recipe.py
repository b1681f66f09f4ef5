"""The shipped GPT-4-LLM data recipe: every generate/stats stage parses into a valid config."""

from __future__ import annotations

import argparse

from drover.recipes import base_variables, load_recipe, resolve


def test_gpt4_llm_recipe_stages_build_valid_configs(tmp_path):
    import drover.commands.generate as generate
    import drover.commands.stats as stats

    recipe = load_recipe("gpt4-llm", ["vars.teacher=http://127.0.0.1:1/v1#t", f"run_dir={tmp_path / 'g4'}"])  # not a fixed /tmp path
    variables = base_variables(recipe)
    names = [s.name for s in recipe.stages]
    assert names[:5] == ["answers-en", "translate", "answers-zh", "feedback", "stats"]
    built = {}
    for stage in recipe.stages[:5]:
        args = [resolve(a, variables, stage.name) for a in stage.args]
        parser = argparse.ArgumentParser()
        module = generate if stage.command == "generate" else stats
        module.add_arguments(parser)
        ns = parser.parse_args(args)
        if stage.command == "generate":
            config, runner = generate.build_config(ns)
            built[stage.name] = config
    assert built["answers-en"].teacher == "http://127.0.0.1:1/v1#t"
    assert (built["answers-en"].temperature, built["answers-en"].top_p, built["answers-en"].max_tokens) == (1.0, 1.0, 512)
    assert built["translate"].to == "Chinese" and built["answers-zh"].input == built["translate"].output
    assert built["feedback"].responses == [f"gpt4={tmp_path / 'g4'}/data/alpaca_gpt4_en.jsonl",
                                           "text-davinci-003=alpaca_data.json"]


def test_generate_command_precedence_file_then_flags_then_overrides(tmp_path):
    import drover.commands.generate as generate

    cfg = tmp_path / "a.yaml"
    cfg.write_text("input: from-file.json\noutput: o.jsonl\nteacher: openai:gpt-4\nmax_tokens: 100\n")
    parser = argparse.ArgumentParser()
    generate.add_arguments(parser)
    ns = parser.parse_args(["answers", "--config", str(cfg), "--input", "flag.json", "max_tokens=7",
                            "teacher_options.concurrency=2"])
    config, _ = generate.build_config(ns)
    assert (config.input, config.output, config.max_tokens) == ("flag.json", "o.jsonl", 7)
    assert config.teacher_options == {"concurrency": 2}
    ns = parser.parse_args(["rank", "--method", "contextual", "--input", "i", "--output", "o", "--policy", "p",
                            "--judge", "j", "n=3"])
    config, runner = generate.build_config(ns)
    assert type(config).__name__ == "RankContextualConfig" and config.n == 3 and config.rouge_threshold == 0.8


def test_overrides_after_a_list_flag_are_not_taken_as_list_items():
    import drover.commands.generate as generate

    parser = argparse.ArgumentParser()
    generate.add_arguments(parser)
    ns = parser.parse_args(["feedback", "--output", "o", "--judge", "j", "--responses", "a=x.jsonl", "b=y.jsonl",
                            "max_tokens=8", "mode=joint"])
    config, _ = generate.build_config(ns)
    assert config.responses == ["a=x.jsonl", "b=y.jsonl"] and config.max_tokens == 8 and config.mode == "joint"
