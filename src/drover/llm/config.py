"""The configuration of one LLM (teacher, judge, rater or policy).

A config names the *environment variable* that holds the API key (`api_key_env`), never
the key itself, so configs can be saved into run directories and shared safely.

String specs (`LLMConfig.from_spec`), for command lines:

    ./path/to/model            an existing local directory -> hf backend
    hf:PATH                    hf backend (local Hugging Face model directory)
    openai:MODEL               OpenAI-compatible endpoint; base URL from $OPENAI_BASE_URL
                               (or base_url=... override), else the OpenAI API
    http://host:port/v1#MODEL  OpenAI-compatible endpoint at that URL (vLLM, drover serve, ...)
    MODEL@http://host:port/v1  the same, written the other way round
    http://h1:8000/v1,http://h2:8000/v1#MODEL
                               replicas of one model behind one client (YAML: `base_url: [...]`):
                               requests go to the least-loaded replica, a failing one is taken
                               out for `replica_cooldown` seconds (see `drover.llm.replicas`)

`mode: batch` sends the uncached requests of a run as provider batch jobs (the OpenAI
Batch API: about half the price, answered within `batch_window`); see `drover.llm.batch`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from drover.errors import ConfigError
from drover.completions import Decoding


def _declared_endpoints() -> dict[str, str]:
    import json

    try:
        data = json.loads(os.environ.get("DROVER_ENDPOINT_IDENTITIES") or "{}")
    except ValueError:
        return {}
    return {str(k).rstrip("/"): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


@dataclass
class LLMConfig:
    backend: Literal["openai", "hf"] = "openai"
    model: str = ""
    base_url: str | list[str] | None = None  # a list: replicas serving the same model
    replica_set: str | None = None  # the declared identity of a replica set (default: its sorted URLs)
    replica_cooldown: float = 30.0  # seconds a failing replica is left out before it is tried again
    api_key_env: str = "OPENAI_API_KEY"  # the NAME of the variable holding the key

    # Decoding defaults (a request's own Decoding fields win when set).
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    stop: list[str] | None = None
    n: int = 1
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None

    # Throughput and robustness (openai backend).
    concurrency: int = 16
    rpm: float | None = None  # requests per minute; None = unlimited
    tpm: float | None = None  # tokens per minute (prompt + max completion), None = unlimited
    timeout: float = 120.0  # seconds per HTTP request
    max_retries: int = 6
    backoff_base: float = 1.0  # first retry waits ~backoff_base seconds (with jitter)
    backoff_max: float = 60.0
    supports_n: bool = True  # False: n samples are n calls with distinct sample indices
    lean_transport: bool = True  # plain-http:// endpoints: drover's lean HTTP/1.1 transport under openai
    # Constrained decoding of requests that carry a Constraint: "auto" asks for it and, when an
    # endpoint rejects the parameters (HTTP 400 naming them), sends the rest of the session
    # without; "on" fails the job instead; "off" drops constraints from requests (cached as plain ones).
    constraints: Literal["auto", "on", "off"] = "auto"

    # Batch mode (openai backend): uncached requests go out as provider batch jobs.
    mode: Literal["sync", "batch"] = "sync"
    batch_max_requests: int = 50_000  # requests per batch job (OpenAI's limit)
    batch_max_bytes: int = 200 * 1024 * 1024  # bytes per uploaded JSONL file (OpenAI's limit)
    batch_poll_interval: float = 60.0  # seconds between status polls
    batch_window: str = "24h"  # completion_window of each job
    batch_discount: float = 0.5  # batch price = this x the per-1k prices below

    # Accounting.
    price_input_per_1k: float = 0.0
    price_output_per_1k: float = 0.0

    # hf backend.
    dtype: str = "auto"   # the checkpoint's dtype (float16 becomes float32 on CPU)
    device: str = "auto"  # local backend: "auto" = first GPU if any, else CPU; or cpu, cuda:1, ...
    batch_size: int = 8
    chat_template: str | None = None  # a named template (e.g. "tulu") or None = the tokenizer's own
    max_length: int | None = None  # truncate prompts (from the left) to fit; None = model limit

    def validate(self) -> None:
        if self.backend not in ("openai", "hf"):
            raise ConfigError(f"llm: backend: {self.backend!r} is not one of 'openai', 'hf'")
        if not self.model:
            raise ConfigError("llm: model: required (a model name, or a local path for the hf backend)")
        if self.constraints not in ("auto", "on", "off"):
            raise ConfigError(f"llm: constraints: {self.constraints!r} is not one of 'auto', 'on', 'off'")
        if self.concurrency < 1:
            raise ConfigError(f"llm: concurrency: must be >= 1, got {self.concurrency}")
        if self.batch_size < 1:
            raise ConfigError(f"llm: batch_size: must be >= 1, got {self.batch_size}")
        if self.n < 1:
            raise ConfigError(f"llm: n: must be >= 1, got {self.n}")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"llm: {name}: must be > 0 or null, got {value}")
        urls = self.base_urls()
        if isinstance(self.base_url, list) and not urls:
            raise ConfigError("llm: base_url: an empty list; give one URL or a list of replica URLs")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"llm: base_url: {url!r} is not an http:// or https:// URL")
        if len(set(urls)) != len(urls):
            raise ConfigError(f"llm: base_url: a replica is listed twice in {urls}")
        if self.replica_cooldown < 0:
            raise ConfigError(f"llm: replica_cooldown: must be >= 0 seconds, got {self.replica_cooldown}")
        if self.mode not in ("sync", "batch"):
            raise ConfigError(f"llm: mode: {self.mode!r} is not one of 'sync', 'batch'")
        if self.mode == "batch":
            if self.backend != "openai":
                raise ConfigError("llm: mode: batch needs the openai backend (a provider's batch API)")
            if len(urls) > 1:
                raise ConfigError("llm: mode: batch sends jobs to one provider endpoint; give one base_url")
            for name in ("batch_max_requests", "batch_max_bytes"):
                if getattr(self, name) < 1:
                    raise ConfigError(f"llm: {name}: must be >= 1, got {getattr(self, name)}")
            if self.batch_poll_interval <= 0:
                raise ConfigError(f"llm: batch_poll_interval: must be > 0 seconds, got {self.batch_poll_interval}")
            if not 0 < self.batch_discount <= 1:
                raise ConfigError(f"llm: batch_discount: must be in (0, 1], got {self.batch_discount}")
        if self.api_key_env.startswith(("sk-", "Bearer ")) or len(self.api_key_env) > 64:
            raise ConfigError("llm: api_key_env: give the NAME of the environment variable that holds "
                              "the key (e.g. OPENAI_API_KEY), never the key itself")

    def identity(self) -> dict[str, Any]:
        """What decides this LLM's answers: the one place the cache key takes the model from.

        An endpoint is its base URL plus the served model name (two servers serving
        different weights under one name are different models). A local model is the
        content fingerprint of its directory (weights, tokenizer, its own chat template)
        plus what shapes its prompts and numerics: the named chat template (and that
        template's text), `max_length` (left truncation) and `dtype`. Concurrency, rate
        limits, timeouts, retries, prices and `batch_size` (float32 outputs are the same at
        any batch size; half precision can flip a near-tie, docs/footguns.md) stay out. Decoding defaults are not here:
        the cache key holds each request's resolved decoding.

        A recipe's service listens on a free port that changes every run; the recipe runner
        declares its identity (its command line and the fingerprint of the model it
        serves) in `$DROVER_ENDPOINT_IDENTITIES` ({base URL: identity}), and that replaces
        the URL here, so a re-run finds its cached answers and another model never does.
        """
        if self.backend == "openai":
            url = self.endpoint_identity() or "https://api.openai.com/v1"
            declared = _declared_endpoints().get(url)
            if declared:
                return {"backend": "openai", "endpoint": declared, "model": self.model}
            return {"backend": "openai", "base_url": url, "model": self.model}
        from drover.identity import digest, model_fingerprint

        template = None
        if self.chat_template:
            from drover.templates import CHAT_TEMPLATES, chat_template_text

            text = chat_template_text(self.chat_template) if self.chat_template in CHAT_TEMPLATES else None
            template = {"name": self.chat_template, "text": digest(text) if text else None}
        return {"backend": "hf", "model": model_fingerprint(self.model),  # (an adapter's: with its base model)
                "chat_template": template, "max_length": self.max_length, "dtype": self.dtype}

    def defaults(self) -> Decoding:
        return Decoding(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                        stop=tuple(self.stop) if self.stop else None, n=self.n, seed=self.seed,
                        logprobs=self.logprobs, top_logprobs=self.top_logprobs)

    def resolve(self, decoding: Decoding) -> Decoding:
        """A request's decoding with every unset field filled from this config."""
        base = self.defaults()
        values = {f.name: getattr(decoding, f.name) for f in dataclasses.fields(Decoding)}
        merged = {k: (v if v is not None else getattr(base, k)) for k, v in values.items()}
        if merged["stop"] is not None:
            merged["stop"] = tuple(merged["stop"]) or None
        return Decoding(**merged)

    def base_urls(self) -> list[str]:
        """The endpoint URLs: [] (the provider's default), one, or the replicas of a replica set."""
        if self.base_url is None:
            return []
        return list(self.base_url) if isinstance(self.base_url, list) else [self.base_url]

    def endpoint_identity(self) -> str | None:
        """What names the endpoint in cache keys: one URL, or a replica set's declared identity.

        Replicas serve one model, so which replica answered never changes the key; the
        set is named by `replica_set` when given (adding a replica keeps the cache), else
        by its sorted URLs.
        """
        urls = [u.strip().rstrip("/") for u in self.base_urls()]
        if len(urls) <= 1:
            return urls[0] if urls else None
        return self.replica_set or ",".join(sorted(urls))

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None

    @classmethod
    def from_spec(cls, spec: str, **overrides: Any) -> "LLMConfig":
        """Build a config from a command-line string spec (see the module docstring)."""
        spec = spec.strip()
        if not spec:
            raise ConfigError("llm spec: empty; expected a local model directory, hf:PATH, openai:MODEL, "
                              "http://host:port/v1#MODEL or MODEL@http://host:port/v1")
        fields: dict[str, Any]
        if spec.startswith("hf:"):
            fields = {"backend": "hf", "model": spec[3:]}
        elif spec.startswith("openai:"):
            fields = {"backend": "openai", "model": spec[len("openai:"):],
                      "base_url": os.environ.get("OPENAI_BASE_URL") or None}
        elif spec.startswith(("http://", "https://")):
            url, sep, model = spec.partition("#")
            if not sep or not model:
                raise ConfigError(f"llm spec {spec!r}: name the model after '#', e.g. http://127.0.0.1:8000/v1#my-model")
            fields = {"backend": "openai", "model": model, "base_url": _urls(url)}
        elif "@http://" in spec or "@https://" in spec:
            model, _, url = spec.partition("@")
            fields = {"backend": "openai", "model": model, "base_url": _urls(url)}
        elif Path(spec).is_dir():
            fields = {"backend": "hf", "model": spec}
        else:
            raise ConfigError(f"llm spec {spec!r}: not a local directory; use hf:PATH, openai:MODEL, "
                              "http://host:port/v1#MODEL or MODEL@http://host:port/v1")
        fields.update(overrides)
        from drover.config import from_dict

        return from_dict(cls, fields, where=f"llm spec {spec!r}")


def _urls(text: str) -> str | list[str]:
    """`http://a/v1` -> the URL; `http://a/v1,http://b/v1` -> the replica list."""
    urls = [u.strip() for u in text.split(",") if u.strip()]
    return urls[0] if len(urls) == 1 else urls
