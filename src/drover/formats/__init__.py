"""Converters from public dataset formats into `Conversation` / `Ranked` JSONL.

`FORMATS` is the one registration site: name -> ("module:attr" of a `Converter`, help).
Use `convert_file(name, in_path, out_path, options)` (see `drover.formats.driver`).
"""

from __future__ import annotations

from drover.registry import Registry

FORMATS: dict[str, tuple[str, str]] = {
    "alpaca": ("drover.formats.instruction:ALPACA",
               "{instruction, input, output}: Alpaca, GPT-4-LLM English/Chinese, Code Alpaca"),
    "dolly": ("drover.formats.instruction:DOLLY", "Dolly 15k {instruction, context, response, category}"),
    "self-instruct": ("drover.formats.instruction:SELF_INSTRUCT",
                      "Self-Instruct seed / user-oriented tasks {id, instruction, instances[{input, output}]}"),
    "unnatural": ("drover.formats.instruction:UNNATURAL",
                  "Unnatural Instructions core/full {instruction, instances[...], reformulations}"),
    "flan": ("drover.formats.instruction:FLAN", "FLAN / CoT {inputs, targets} or {input, target}"),
    "gsm8k": ("drover.formats.instruction:GSM8K", "GSM8K {question, answer ending '#### N'} (prompts for gsm-match)"),
    "superni": ("drover.formats.superni:SUPERNI",
                "Super-NaturalInstructions task file (Definition, Positive Examples, Instances)"),
    "sharegpt": ("drover.formats.chat:SHAREGPT", "ShareGPT {id, conversations[{from, value}]}"),
    "baize": ("drover.formats.chat:BAIZE", "Baize {topic, input} with [|Human|]/[|AI|] transcripts"),
    "oasst": ("drover.formats.chat:OASST", "OpenAssistant message trees (*_ready.trees.jsonl)"),
    "gpt4llm-comparison": ("drover.formats.preference:GPT4LLM_COMPARISON",
                           "GPT-4-LLM comparison data v1 (completion_a/b) or v2 (responses_and_scores) -> Ranked"),
    "hh-rlhf": ("drover.formats.preference:HH_RLHF", "Anthropic HH-RLHF {chosen, rejected} transcripts -> Ranked"),
    "llmbar": ("drover.formats.preference:LLMBAR", "LLMBar dataset.json {input, output_1, output_2, label} -> Ranked"),
    "unpaired": ("drover.formats.unpaired:UNPAIRED",
                 "labelled responses {messages|prompt, completion, label: bool} (KTO; TRL's unpaired) -> Ranked"),
    "alpaca-eval": ("drover.formats.evalsets:ALPACA_EVAL",
                    "AlpacaEval model_outputs.json {instruction, output, generator, dataset}"),
    "vicuna-questions": ("drover.formats.evalsets:VICUNA_QUESTIONS",
                         "Vicuna-80 question.jsonl {question_id, text|turns, category} -> prompts"),
    "mt-bench-questions": ("drover.formats.evalsets:MT_BENCH_QUESTIONS",
                           "MT-bench question.jsonl {question_id, category, turns, reference?} -> prompts"),
}

CONVERTERS: Registry = Registry("format", {name: target for name, (target, _) in FORMATS.items()})
