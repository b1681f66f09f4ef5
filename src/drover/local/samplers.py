"""Generation engines for online training: one small protocol, a registry, the local HF engine.

An online run (`drover rl`) samples from the policy it is training, so the engine that
samples must see the policy's current weights: `sync(module)` is called once per step,
before `sample`, with the trained module (a transformers model, possibly peft-wrapped).

    sample(prompts_ids, n, seeds, temperature, top_p, max_tokens)
        -> per prompt, per sample: Drawn(ids, text, finish_reason)

`ids` are the tokens the engine drew, *without* the stop token that ended a sample (the
caller decides what a stopped sample is trained on); `text` is their decoding with special
tokens skipped; `finish_reason` is "stop" (an EOS) or "length" (max_tokens). `seeds[i][j]`
seeds sample j of prompt i on its own: a sample does not depend on its batch, so a resumed
run draws exactly what the uninterrupted one drew.

Engines (`SAMPLERS`, chosen by `OnlineConfig.engine`; nothing branches on their names):

    hf     drover's own decoding loop (`drover.local.decode.generate`) on the policy module
           itself: `sync` only points at it (the default; CPU and GPU)
    vllm   an in-process `vllm.LLM` colocated on the training GPU (`drover.local.vllm_sampler`),
           its weights overwritten by the policy's (LoRA merged) at every `sync`

An engine class declares `settings` (the name of the `OnlineConfig` field holding its
settings, or None), `check(settings)` (is it usable here: raise `ConfigError` before any
step), `key(settings)` (what of it enters the resume key; None adds nothing) and is built as
`cls(setup, settings)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from drover.registry import Registry


@dataclass
class Drawn:
    """One sample as the engine drew it."""

    ids: list[int]                # sampled tokens, the stop token that ended it excluded
    text: str                     # ids decoded, special tokens skipped
    finish_reason: str            # "stop" | "length"
    stop: int | None = None       # the token that ended a stopped sample, where the engine knows it
                                  # (a model may stop at several: generation_config's eos_token_id list);
                                  # None: the tokenizer's EOS


@dataclass
class EngineSetup:
    """What every engine may need to know about the run, in plain values (no trainer objects)."""

    model_dir: str                # the starting policy (a Hugging Face model directory)
    tokenizer_dir: str
    tokenizer: Any                # the run's tokenizer: decodes every engine's samples alike
    max_length: int               # prompt + response tokens, at most
    batch_size: int               # rows decoded together
    seed: int
    process_index: int = 0
    local_process_index: int = 0
    num_processes: int = 1
    sharded: bool = False         # no process holds whole parameters (FSDP, ZeRO-3)
    quantized: bool = False       # the policy's base weights are 4-bit (QLoRA)


class Sampler(Protocol):
    settings: ClassVar[str | None]

    @classmethod
    def check(cls, settings: Any) -> None: ...

    @classmethod
    def key(cls, settings: Any) -> dict[str, Any] | None: ...

    def sync(self, module: Any) -> None: ...

    def sample(self, prompts_ids: list[list[int]], n: int, seeds: list[list[int]], temperature: float,
               top_p: float, max_tokens: int) -> list[list[Drawn]]: ...


class HFSampler:
    """The local engine on the policy's own weights: `sync` keeps a reference, no copy."""

    settings: ClassVar[str | None] = None

    def __init__(self, setup: EngineSetup, settings: Any = None):
        self.setup = setup
        self.model: Any = None

    @classmethod
    def check(cls, settings: Any) -> None:
        """Always usable: the engine runs wherever the policy does."""

    @classmethod
    def key(cls, settings: Any) -> dict[str, Any] | None:
        return None   # the reference engine: resume keys of runs before engines existed stay valid

    def sync(self, module: Any) -> None:
        from drover.local.sequence_model import hf_model

        self.model = hf_model(module)

    def sample(self, prompts_ids: list[list[int]], n: int, seeds: list[list[int]], temperature: float,
               top_p: float, max_tokens: int) -> list[list[Drawn]]:
        """Trained tokens are exactly the sampled ones, heard through the engine's `on_token`;
        a stopped row's stop token is the one the engine reports (`GenerationResult.stop_tokens`)."""
        from drover.local.decode import GenerationItem, generate

        if self.model is None:
            raise RuntimeError("HFSampler.sample before sync: the engine has no policy to sample from")
        drawn: list[list[list[int]]] = [[[] for _ in range(n)] for _ in prompts_ids]

        def recorder(i: int) -> Callable[[int, int, Any], None]:
            def on_token(sample: int, token: int, _logprob: Any) -> None:
                drawn[i][sample].append(int(token))
            return on_token

        items = [GenerationItem(prompt_ids=ids, max_tokens=max_tokens, temperature=temperature, top_p=top_p, n=n,
                                seeds=list(row_seeds), on_token=recorder(i))
                 for i, (ids, row_seeds) in enumerate(zip(prompts_ids, seeds))]
        out: list[list[Drawn]] = [[] for _ in items]
        was_training = self.model.training
        self.model.eval()
        try:
            for i, result in generate(self.model, self.setup.tokenizer, items, batch_size=self.setup.batch_size,
                                      max_length=self.setup.max_length):
                out[i] = [Drawn(drawn[i][j], c.text, c.finish_reason, result.stop_tokens[j])
                          for j, c in enumerate(result.choices)]
        finally:
            self.model.train(was_training)
        return out


SAMPLERS: Registry[Any] = Registry("generation engine", {
    "hf": "drover.local.samplers:HFSampler",
    "vllm": "drover.local.vllm_sampler:VLLMSampler",
})
