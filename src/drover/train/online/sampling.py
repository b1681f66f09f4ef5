"""Step 1 of the loop: which prompts a step uses, and the policy's samples for them.

Both are pure functions of (seed, step) and the current weights: the prompt order is a
seeded permutation per pass over the prompts, and every sample draws from its own
generator seeded by (seed, step, prompt position, sample index) — the local engine's
per-row seeding (`drover.local.decode`). The checkpointed step therefore *is* the
sampling RNG state: a resumed run draws exactly the samples the uninterrupted run would.

`sample_responses` is the one place generation happens during training, through a generation
engine (`drover.local.samplers`: the local Hugging Face engine on the policy's own weights, or
an in-process vLLM whose weights the loop syncs with the policy before every step's sampling).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from drover.errors import DataError
from drover.records import Message, Record


@dataclass
class Prompt:
    record: Record
    messages: list[Message]       # the prompt turns (a Conversation without its last answer)
    ids: list[int]                # rendered with the chat template + assistant header
    where: str                    # "file:line" for error messages


def load_prompts(paths: list[str], tokenizer: Any, max_length: int, max_new_tokens: int,
                 on_bad_records: str = "error") -> list[Prompt]:
    """Every prompt of the files, checked to leave room for a response within max_length;
    too long ones are an error naming file and line, or (`on_bad_records=drop`) skipped with a count."""
    import sys

    from drover.records import prompt_of, read_numbered_records
    from drover.tokenization import encode_prompt

    prompts: list[Prompt] = []
    dropped = 0
    for path in paths:
        for line, record in read_numbered_records(path):
            messages = prompt_of(record)
            where = f"{path}:{line}"
            if not messages:
                raise DataError(f"{where}: record {record.id!r}: messages: no prompt turn to sample from")
            if messages[-1].role != "user":   # as a Ranked prompt: the policy answers a user turn
                raise DataError(f"{where}: record {record.id!r}: messages[{len(messages) - 1}].role: the prompt "
                                f"must end with a user turn, got {messages[-1].role!r}")
            ids = encode_prompt(tokenizer, messages, record.id)
            if len(ids) + max_new_tokens + 1 > max_length:
                if on_bad_records == "drop":
                    dropped += 1
                    continue
                raise DataError(f"{where}: record {record.id!r}: prompt of {len(ids)} tokens + max_new_tokens "
                                f"{max_new_tokens} exceeds train.max_length {max_length}")
            prompts.append(Prompt(record, messages, ids, where))
    if dropped:
        print(f"drover rl: {dropped} prompt(s) dropped: longer than train.max_length {max_length} leaves room "
              f"for (max_new_tokens {max_new_tokens})", file=sys.stderr)
    if not prompts:
        raise DataError(f"{', '.join(paths)}: no usable prompts" + (f" ({dropped} too long)" if dropped else ""))
    return prompts


def step_prompts(num_prompts: int, per_step: int, seed: int, step: int) -> list[int]:
    """Positions of the prompts of `step`: consecutive slices of a seeded permutation per pass."""
    out = []
    for k in range(step * per_step, (step + 1) * per_step):
        epoch, pos = divmod(k, num_prompts)
        order = list(range(num_prompts))
        random.Random(f"{seed}:prompts:{epoch}").shuffle(order)
        out.append(order[pos])
    return out


@dataclass
class Sample:
    """One sampled response: its text (what rewards read) and the tokens trained on."""

    text: str
    ids: list[int]                # the sampled tokens, + EOS when the model stopped (not cut at max_new_tokens)


def sample_responses(sampler: Any, tokenizer: Any, prompts: list[Prompt], config: Any, step: int,
                     slots: list[int]) -> list[list[Sample]]:
    """`config.samples_per_prompt` samples per prompt from `sampler` (a `drover.local.samplers`
    engine, synced with the policy this step); `slots` number the prompts within the run
    (seeds: one per (seed, step, slot, sample)). Trained tokens are exactly the sampled ones,
    then the stop token the engine drew if the sample stopped (the EOS where the engine does not
    say which; also for a sample that drew nothing: a response has at least one target)."""
    from drover.local.decode import sample_seed

    if not prompts:   # a process without prompt slots this step
        return []
    g = config.samples_per_prompt
    seeds = [[sample_seed(config.train.seed, step, slot, j) for j in range(g)] for slot in slots]
    drawn = sampler.sample([p.ids for p in prompts], g, seeds, config.temperature, config.top_p,
                           config.max_new_tokens)
    eos = tokenizer.eos_token_id

    def trained(d: Any) -> list[int]:   # the stop token the engine drew (else the EOS) ends a stopped sample
        end = d.stop if getattr(d, "stop", None) is not None else eos
        return d.ids + ([end] if d.finish_reason == "stop" or not d.ids else [])

    return [[Sample(d.text, trained(d)) for d in group] for group in drawn]
