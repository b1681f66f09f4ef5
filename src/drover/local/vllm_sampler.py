"""vLLM as the generation engine of an online run, in the training process, on the training GPU.

The colocated design of TRL's GRPOTrainer (`vllm_mode="colocate"`): each training process
builds one `vllm.LLM` from the starting policy directory (`distributed_executor_backend=
"external_launcher"`, so the engine runs inside this process on this process's GPU instead of
spawning workers), takes `gpu_memory_utilization` of the GPU for its weights and KV cache,
and before every step's sampling receives the policy's current weights:

    sync    every parameter of the policy under its checkpoint name, LoRA adapters merged
            without touching the trained tensors (`drover.local.weights`), loaded into vLLM's
            model by its own `load_weights` (which fuses q/k/v and gate/up as it does from
            disk), then `reset_prefix_cache()`: cached prompt keys were computed by the old weights
    sample  one request per sample, `SamplingParams(n=1, seed=...)` with the run's per-sample
            seed (vLLM's per-request seeded sampling), prompts as token ids; the sampled tokens
            are vLLM's own `token_ids` (never re-tokenised text), the stop token removed as the
            protocol asks, the text decoded by the run's tokenizer as for the `hf` engine

With `enable_sleep_mode`, vLLM frees its weights and KV cache after sampling (`sleep(level=2)`:
nothing is kept, since the next sync rewrites every weight anyway) and wakes them for the
next sync and sampling, leaving the GPU to the update in between.

What this does not promise: vLLM's samples for a seed are not the `hf` engine's (another
kernel, another dtype), and seeded vLLM sampling is reproducible only as far as its batched
kernels are batch-invariant. The trained log-probs never come from vLLM: the loop recomputes
them with the policy (`rollout`), so the loss sees no engine mismatch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

from drover.errors import ConfigError
from drover.local.samplers import Drawn, EngineSetup
from drover.models import _first_line

DTYPES = ("auto", "float16", "bfloat16", "float32")


@dataclass
class VLLMSettings:
    """`OnlineConfig.vllm`: read only when `engine: vllm`."""

    gpu_memory_utilization: float = 0.3   # share of the GPU vLLM may take (weights + KV cache); the policy,
                                          # reference and optimiser state need the rest (TRL's colocate default)
    max_model_len: int = 0                # 0: train.max_length (prompt + response, already checked per prompt)
    dtype: str = "auto"                   # vLLM's weights and compute ("auto": vLLM's choice from the checkpoint)
    enable_sleep_mode: bool = False       # free vLLM's GPU memory between samplings (slower, smaller peak)

    def validate(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"rl: vllm.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.max_model_len < 0:
            raise ConfigError(f"rl: vllm.max_model_len must be >= 0 (0: train.max_length), got {self.max_model_len}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"rl: vllm.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _launcher_env(setup: EngineSetup) -> None:
    """The torch.distributed variables vLLM's external launcher reads; torchrun / accelerate set
    them for several processes, a single process gets its own rendezvous on localhost."""
    import socket

    os.environ.setdefault("RANK", str(setup.process_index))
    os.environ.setdefault("LOCAL_RANK", str(setup.local_process_index))
    os.environ.setdefault("WORLD_SIZE", str(setup.num_processes))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(probe.getsockname()[1])


def _context(setup: EngineSetup) -> int:
    """vLLM's context: `train.max_length` (every prompt + response fits it), or the model's own
    limit when smaller (as the `hf` engine caps it), never the model's full length: vLLM would
    reserve KV cache for a sequence of that length."""
    from transformers import AutoConfig

    limit = getattr(AutoConfig.from_pretrained(setup.model_dir, local_files_only=True), "max_position_embeddings", None)
    return min(setup.max_length, limit) if isinstance(limit, int) and limit > 0 else setup.max_length


def _without_stop(ids: list[int], finish_reason: str, stop_reason: Any, eos: int | None) -> list[int]:
    """vLLM's `token_ids` end with the token that stopped the sample (EOS: `stop_reason` None;
    a stop token id: `stop_reason` that id); the protocol's ids do not."""
    if finish_reason != "stop" or not ids:
        return ids
    stop = stop_reason if isinstance(stop_reason, int) else eos
    return ids[:-1] if ids[-1] == stop else ids


class VLLMSampler:
    settings: ClassVar[str | None] = "vllm"   # the OnlineConfig field with VLLMSettings

    def __init__(self, setup: EngineSetup, settings: VLLMSettings):
        from vllm import LLM

        if setup.sharded or setup.quantized:
            raise ConfigError("rl: engine=vllm loads whole, unquantized weights into vLLM every step: not with "
                              "FSDP, DeepSpeed ZeRO-3 or QLoRA (use DDP / ZeRO-1/2 and LoRA, or engine=hf)")
        self.setup, self.config = setup, settings
        _launcher_env(setup)
        try:
            self.llm = LLM(model=setup.model_dir, tokenizer=setup.tokenizer_dir, dtype=settings.dtype,
                           gpu_memory_utilization=settings.gpu_memory_utilization,
                           max_model_len=settings.max_model_len or _context(setup), max_num_seqs=setup.batch_size,
                           enable_sleep_mode=settings.enable_sleep_mode, seed=setup.seed,
                           distributed_executor_backend="external_launcher")
        except ValueError as exc:   # vLLM's checks of its settings (context too long, no memory left for the KV cache)
            raise ConfigError(f"rl: engine=vllm: vLLM refused its settings: {_first_line(exc) or 'ValueError'} "
                              f"(see vllm.gpu_memory_utilization, vllm.max_model_len)") from None
        self.synced = False
        self.asleep: set[str] = set()
        self._sleep()

    @classmethod
    def check(cls, settings: VLLMSettings) -> None:
        """vLLM importable and a CUDA GPU visible, or a one-line error before anything runs."""
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise ConfigError("rl: engine=vllm needs vLLM installed in this environment "
                              "(pip install 'drover[gpu]'), or use engine=hf") from None
        except Exception as exc:  # a broken install (CUDA/torch mismatch) fails on import in many ways
            raise ConfigError(f"rl: engine=vllm: vllm failed to import ({_first_line(exc) or type(exc).__name__}); "
                              f"fix the install or use engine=hf") from None
        if not cuda_available():
            raise ConfigError("rl: engine=vllm needs a CUDA GPU and none is visible here; use engine=hf "
                              "(the local engine runs on CPU too)")

    @classmethod
    def key(cls, settings: VLLMSettings) -> dict[str, Any] | None:
        # what decides the samples; memory knobs (utilisation, sleep, context capacity) may change on resume
        return {"dtype": settings.dtype}

    def _sleep(self) -> None:
        if self.config.enable_sleep_mode:
            self.llm.sleep(level=2)
            self.asleep = {"weights", "kv_cache"}

    def _wake(self, tag: str) -> None:
        if tag in self.asleep:
            self.llm.wake_up(tags=[tag])
            self.asleep.discard(tag)

    def sync(self, module: Any) -> None:
        """Overwrite every weight of vLLM's model with the policy's (merged), then drop its prefix cache."""
        from drover.local.weights import plain_weights

        self._wake("weights")
        weights = plain_weights(module)
        self.llm.apply_model(lambda model: model.load_weights(weights))
        self.llm.reset_prefix_cache()
        self.synced = True

    def sample(self, prompts_ids: list[list[int]], n: int, seeds: list[list[int]], temperature: float,
               top_p: float, max_tokens: int) -> list[list[Drawn]]:
        from vllm import SamplingParams

        if not self.synced or "weights" in self.asleep:
            raise RuntimeError("VLLMSampler.sample before sync: vLLM does not hold the policy's weights")
        requests, params = [], []
        for ids, row_seeds in zip(prompts_ids, seeds):
            for j in range(n):
                requests.append({"prompt_token_ids": list(ids)})
                params.append(SamplingParams(n=1, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                             seed=int(row_seeds[j]), detokenize=False))
        self._wake("kv_cache")
        try:
            outputs = self.llm.generate(requests, sampling_params=params, use_tqdm=False)
        finally:
            self._sleep()
        if len(outputs) != len(requests):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(requests)} requests")
        tokenizer, eos = self.setup.tokenizer, self.setup.tokenizer.eos_token_id
        out: list[list[Drawn]] = []
        for i in range(len(prompts_ids)):
            row = []
            for request in outputs[i * n:(i + 1) * n]:
                c = request.outputs[0]
                if c.finish_reason not in ("stop", "length"):
                    raise RuntimeError(f"vLLM ended a sample with finish_reason {c.finish_reason!r}")
                drawn = [int(t) for t in c.token_ids]
                ids = _without_stop(drawn, c.finish_reason, c.stop_reason, eos)
                stop = drawn[-1] if len(ids) < len(drawn) else None   # the stop token vLLM drew, trained on as is
                row.append(Drawn(ids, tokenizer.decode(ids, skip_special_tokens=True), c.finish_reason, stop))
            out.append(row)
        return out
