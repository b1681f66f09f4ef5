"""Load causal LMs and tokenizers in one place, and build tiny ones for tests and CPU demos.

Nothing is downloaded implicitly: every load uses `local_files_only=True` unless the caller
passes `allow_download=True`, so a typo in a model name fails at once with a message that
says how to provide the model, instead of hanging on the network or fetching gigabytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from drover.errors import ConfigError, ModelNotFoundError

DTYPES = ("auto", "float32", "bfloat16", "float16")
TINY_ARCHS = ("llama", "qwen2")
TINY_SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
TINY_EXTRA_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|im_start|>", "<|im_end|>"]
# Shipped text the tiny tokenizer is trained on (~4 MB of instructions, answers, code, math).
TINY_CORPUS = (
    "alpaca_eval/results/gpt4_1106_preview/model_outputs.json",
    "codealpaca/code_alpaca_2k.json",
    "gsm8k/test.jsonl",
    "self_instruct/seed_tasks.jsonl",
    "self_instruct/user_oriented_instructions.jsonl",
    "alpaca/seed_tasks.jsonl",
)


def _not_found(name_or_path: str, what: str, exc: Exception | None = None) -> ModelNotFoundError:
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return ModelNotFoundError(f"{name_or_path}: the directory holds no loadable {what} "
                                  f"({type(exc).__name__ if exc else 'missing files'}: {_first_line(exc)})")
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or path.suffix:
        return ModelNotFoundError(f"{name_or_path}: no such {what} directory; give a directory written by "
                                  "save_pretrained (`drover init-tiny DIR` builds a tiny test model)")
    return ModelNotFoundError(
        f"cannot load {what} {name_or_path!r}: it is not a local directory and drover does not download "
        f"implicitly. Pre-download it with `huggingface-cli download {name_or_path}` (then use the hub id or "
        f"the local path), or allow downloads explicitly where a command offers it (`allow_download=true` "
        f"in training configs, --allow-download for inspect-tokens)")


def _require_local(name: str, what: str) -> None:
    """Fail fast unless `name` is a local directory or a hub id already in the local cache."""
    if Path(name).expanduser().is_dir():
        return
    from huggingface_hub import try_to_load_from_cache

    files = ("config.json",) if what == "model" else ("tokenizer_config.json", "tokenizer.json")
    for filename in files:
        try:
            if isinstance(try_to_load_from_cache(name, filename), str):
                return
        except Exception:  # not a valid repo id
            break
    raise _not_found(name, what)


def _first_line(exc: Exception | None) -> str:
    return str(exc).strip().splitlines()[0] if exc and str(exc).strip() else ""


def load_tokenizer(name_or_path: str | Path, chat_template: str | None = None, *,
                   allow_download: bool = False, trust_remote_code: bool = False) -> Any:
    """A fast tokenizer with a pad token and, if `chat_template` is given, a chat template.

    `chat_template` is a name (`tulu`, `chatml`, or `model`): the tokenizer's own template wins
    when it has one (see `templates.ensure_chat_template`).
    """
    from transformers import AutoTokenizer

    name = str(name_or_path)
    if not allow_download:
        _require_local(name, "tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=not allow_download,
                                                  trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _not_found(name, "tokenizer", exc) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"{name}: drover needs a fast (Rust) tokenizer for character offsets; "
                          f"this one is {type(tokenizer).__name__}")
    if tokenizer.pad_token is None:
        # Padding is always masked out (attention_mask / labels -100), so EOS is a safe pad.
        tokenizer.pad_token = tokenizer.eos_token
    if chat_template is not None:
        from drover.templates import ensure_chat_template

        ensure_chat_template(tokenizer, chat_template)
    return tokenizer


def resolve_device() -> str:
    """The best local device: the first GPU where there is one, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load_model(name_or_path: str | Path, dtype: str = "auto", device: str | None = "auto",
               trust_remote_code: bool = False, *, allow_download: bool = False) -> Any:
    """Any `AutoModelForCausalLM` from a local directory or hub id, in eval mode.

    dtype "auto" keeps the checkpoint's dtype, except float16 on CPU, which becomes float32
    (CPU float16 matmuls are slow and lossy). device "auto" (the default) is the first GPU
    where there is one, else the CPU; None leaves the model where transformers puts it.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    name = str(name_or_path)
    torch_dtype: Any = "auto" if dtype == "auto" else getattr(torch, dtype)
    if device == "auto":
        device = resolve_device()
    if device is not None:
        try:
            torch.device(device)
        except (RuntimeError, TypeError):
            raise ConfigError(f"device {device!r} is not a torch device (e.g. cpu, cuda, cuda:0, mps)") from None
    if not allow_download:
        _require_local(name, "model")
    try:
        # adapter_kwargs: transformers' PEFT-adapter probe ignores local_files_only otherwise.
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype, local_files_only=not allow_download,
                                                     adapter_kwargs={"local_files_only": not allow_download},
                                                     trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _not_found(name, "model", exc) from exc
    on_cpu = device is None or str(device).startswith("cpu")
    if dtype == "auto" and on_cpu and model.dtype == torch.float16:
        model = model.float()
    if device is not None:
        model = model.to(device)
    model.eval()
    return model


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        if obj.strip():
            yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _strings(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _strings(value)


def tiny_corpus() -> list[str]:
    """Every non-empty string value of the shipped corpus files, in a fixed order."""
    root = resources.files("drover").joinpath("resources", "data")
    texts: list[str] = []
    for rel in TINY_CORPUS:
        entry = root.joinpath(*rel.split("/"))
        if not entry.is_file():
            continue
        raw = entry.read_text(encoding="utf-8")
        if rel.endswith(".jsonl"):
            for line in raw.splitlines():
                if line.strip():
                    texts.extend(_strings(json.loads(line)))
        else:
            texts.extend(_strings(json.loads(raw)))
    if not texts:
        raise ModelNotFoundError("no shipped text found under drover/resources/data to train the tiny tokenizer")
    return texts


def _train_tokenizer(vocab: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=TINY_SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = list(TINY_SPECIAL_TOKENS.values()) + TINY_EXTRA_TOKENS
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(tiny_corpus(), trainer=trainer)
    return tok


def build_tiny(out_dir: str | Path, hidden: int = 64, layers: int = 2, heads: int = 4, vocab: int = 4096,
               seed: int = 0, arch: str = "llama") -> Path:
    """Write a randomly initialised tiny causal LM + byte-level BPE tokenizer to `out_dir`.

    The tokenizer is trained on text shipped with drover and carries the Tülu chat template;
    the model is seeded, so the same arguments give the same weights. Loadable with plain
    `AutoTokenizer` / `AutoModelForCausalLM`. Takes a few seconds on a laptop CPU.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

    from drover.templates import chat_template_text

    if arch not in TINY_ARCHS:
        raise ConfigError(f"arch {arch!r} is not one of {', '.join(TINY_ARCHS)}")
    for name, value in (("hidden", hidden), ("layers", layers), ("heads", heads)):
        if value < 1:
            raise ConfigError(f"{name} ({value}) must be at least 1")
    if hidden % heads:
        raise ConfigError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    if vocab < 300:
        raise ConfigError(f"vocab ({vocab}) must be at least 300 (256 bytes + special tokens)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory; give a new or existing folder to write the model to")
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_train_tokenizer(vocab), **TINY_SPECIAL_TOKENS,
                                        extra_special_tokens=list(TINY_EXTRA_TOKENS), model_max_length=2048)
    tokenizer.chat_template = chat_template_text("tulu")
    tokenizer.save_pretrained(out)

    ids = {f"{k[:-6]}_token_id": tokenizer.convert_tokens_to_ids(v) for k, v in TINY_SPECIAL_TOKENS.items()
           if k != "unk_token"}
    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    config = config_cls(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden,
                        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                        max_position_embeddings=2048, tie_word_embeddings=False, **ids)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(**ids, do_sample=False)
    model.save_pretrained(out)
    from drover.provenance import provenance, stamp_model

    stamp_model(out, provenance({"hidden": hidden, "layers": layers, "heads": heads, "vocab": vocab, "seed": seed,
                                 "arch": arch}, device="cpu", precision="float32"))
    return out
