"""A stand-in for the `vllm` package, so drover's vLLM engine (`drover.local.vllm_sampler`) runs on CPU.

Only what the adapter touches: `LLM(model, **engine args)` (a Hugging Face model loaded from
`model` on CPU, its own copy, as vLLM holds its own), `apply_model(func)` handing over a model
with vLLM's `load_weights(iterable of (name, tensor))`, `reset_prefix_cache`, `sleep(level)` /
`wake_up(tags)`, `generate(prompts as {"prompt_token_ids": ...}, one SamplingParams each)` and
`SamplingParams`. Outputs have vLLM's shape: `token_ids` end with the stop token when the
sample stopped, `stop_reason` None for EOS.

Sampling is drover's local engine with each request's seed, and consecutive requests of one
prompt decode as one item (as the `hf` engine batches a prompt's samples): holding the same
weights, the fake draws exactly what the `hf` engine draws, so a weight sync that is late,
missing or wrong shows up as different samples. `events` records the call order; `requests`
every (prompt ids, SamplingParams) received.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    seed: int | None = None
    detokenize: bool = True


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)


class FakeModel:
    """vLLM's model as `apply_model` hands it over: checkpoint-named weights go in by `load_weights`."""

    def __init__(self, hf: Any):
        self.hf = hf
        self.loaded: list[set[str]] = []

    def load_weights(self, weights: Any) -> set[str]:
        import torch

        params = dict(self.hf.named_parameters())
        names = set()
        with torch.no_grad():
            for name, tensor in weights:
                params[name].copy_(tensor)   # a name vLLM's model would not know is a KeyError
                names.add(name)
        self.loaded.append(names)
        return names


class LLM:
    made: list[LLM] = []

    def __init__(self, model: str, **kwargs: Any):
        from transformers import AutoModelForCausalLM

        from drover.models import load_tokenizer

        if kwargs.get("gpu_memory_utilization", 0.9) < 0.05:   # as vLLM's memory profiling refuses
            raise ValueError("No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
                             "when initializing the engine.")
        self.kwargs = {"model": model, **kwargs}
        self.model = FakeModel(AutoModelForCausalLM.from_pretrained(model, local_files_only=True).eval())
        self.tokenizer = load_tokenizer(kwargs.get("tokenizer") or model)
        self.events: list[str] = []
        self.requests: list[tuple[list[int], SamplingParams]] = []
        self.asleep: set[str] = set()
        LLM.made.append(self)

    def apply_model(self, func: Any) -> list[Any]:
        if "weights" in self.asleep:
            raise RuntimeError("fake vllm: apply_model while the weights sleep")
        self.events.append("apply_model")
        return [func(self.model)]

    def reset_prefix_cache(self) -> bool:
        self.events.append("reset_prefix_cache")
        return True

    def sleep(self, level: int = 1) -> None:
        self.events.append(f"sleep{level}")
        self.asleep = {"weights", "kv_cache"}

    def wake_up(self, tags: list[str] | None = None) -> None:
        tags = tags or ["weights", "kv_cache"]
        self.events.append("wake_up:" + ",".join(tags))
        self.asleep -= set(tags)

    def generate(self, prompts: list[dict[str, Any]], sampling_params: Any = None,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        from drover.local.decode import GenerationItem, generate

        if self.asleep:
            raise RuntimeError(f"fake vllm: generate while {sorted(self.asleep)} sleep")
        self.events.append("generate")
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        ids = [list(p["prompt_token_ids"]) for p in prompts]
        self.requests += list(zip(ids, params))
        groups: list[list[int]] = []         # runs of requests with one prompt and one decoding
        for r in range(len(prompts)):
            last = groups[-1][0] if groups else None
            if last is not None and ids[last] == ids[r] and _decoding(params[last]) == _decoding(params[r]):
                groups[-1].append(r)
            else:
                groups.append([r])
        drawn: dict[int, list[int]] = {r: [] for r in range(len(prompts))}

        def recorder(group: list[int]) -> Any:
            def on_token(sample: int, token: int, _logprob: Any) -> None:
                drawn[group[sample]].append(int(token))
            return on_token

        items = [GenerationItem(prompt_ids=ids[g[0]], max_tokens=params[g[0]].max_tokens,
                                temperature=params[g[0]].temperature, top_p=params[g[0]].top_p, n=len(g),
                                seeds=[params[r].seed for r in g], on_token=recorder(g)) for g in groups]
        out: list[RequestOutput | None] = [None] * len(prompts)
        eos = self.tokenizer.eos_token_id
        for k, result in generate(self.model.hf, self.tokenizer, items, batch_size=self.kwargs.get("max_num_seqs", 8),
                                  max_length=self.kwargs.get("max_model_len")):
            for r, c in zip(groups[k], result.choices):
                tokens = drawn[r] + ([eos] if c.finish_reason == "stop" else [])   # vLLM keeps the stop token
                out[r] = RequestOutput(str(r), ids[r], [CompletionOutput(0, c.text, tokens, c.finish_reason)])
        return out  # type: ignore[return-value]


def _decoding(p: SamplingParams) -> tuple[Any, ...]:
    return p.n, p.temperature, p.top_p, p.max_tokens


def module() -> types.ModuleType:
    """A fresh `vllm` module object to put in sys.modules."""
    fake = types.ModuleType("vllm")
    fake.LLM = LLM
    fake.SamplingParams = SamplingParams
    LLM.made = []
    return fake
