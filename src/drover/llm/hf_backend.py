"""Local Hugging Face backend: requests -> prompts -> `drover.local.decode` / `scoring`.

Chat requests are rendered with the tokenizer's chat template (or the named
`chat_template` when the tokenizer has none) with the generation prompt appended; raw
`prompt` requests go to the model as they are. A request's `Constraint` is enforced in
the decoding loop (`drover.local.constrained`); `constraints: off` removes it before it
gets here (`LLM.resolve`). Each sample is seeded from the request's
cache fingerprint and its choice index, so a re-run reproduces it exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from drover.errors import DroverError
from drover.llm.config import LLMConfig
from drover.completions import Completion, Decoding, Request, Score, ScoreRequest, Usage, request_fingerprint
from drover.tokenization import encode_rendered


class HFBackend:
    name = "hf"

    def __init__(self, config: LLMConfig, model: Any = None, tokenizer: Any = None):
        from drover.models import load_model, load_tokenizer

        self.config = config
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config.model, chat_template=config.chat_template)
        self.model = model if model is not None else load_model(config.model, dtype=config.dtype, device=config.device)
        self.tokenizer.padding_side = "left"
        self.identity = config.identity()

    def render(self, request: Request) -> list[int]:
        """The prompt token ids of a request, with training's BOS rule (`encode_rendered`)."""
        if request.messages is not None:
            if not getattr(self.tokenizer, "chat_template", None):
                from drover.errors import TemplateError

                raise TemplateError(f"{self.config.model}: the tokenizer has no chat template for chat requests; "
                                    "set chat_template (tulu, chatml) in the LLM config")
            text = self.tokenizer.apply_chat_template(request.message_dicts(), tokenize=False,
                                                      add_generation_prompt=True)
            return encode_rendered(self.tokenizer, text)
        return encode_rendered(self.tokenizer, request.prompt)

    def item(self, request: Request, decoding: Decoding, seed_key: str) -> Any:
        from drover.local.decode import GenerationItem, sample_seed

        n = decoding.n or 1
        base = decoding.seed if decoding.seed is not None else 0
        constraint = decoding.constraint
        if constraint is not None:
            from drover.local.constrained import check
            from drover.local.decode import eos_ids, logits_width

            check(constraint, self.tokenizer, logits_width(self.model), eos_ids(self.model, self.tokenizer))
        return GenerationItem(
            prompt_ids=self.render(request), max_tokens=decoding.max_tokens if decoding.max_tokens is not None else 256,
            temperature=decoding.temperature or 0.0, top_p=decoding.top_p if decoding.top_p is not None else 1.0,
            stop=tuple(decoding.stop or ()), n=n, seeds=[sample_seed(seed_key, base, j) for j in range(n)],
            logprobs=bool(decoding.logprobs), top_logprobs=int(decoding.top_logprobs or 0), constraint=constraint)

    def complete_batch(self, pairs: Sequence[tuple[Request, Decoding]]) -> Iterator[tuple[int, Completion]]:
        """Yield (index, Completion) as each request finishes (length-sorted batches)."""
        import time

        from drover.local.decode import generate

        items, index, constrained = [], [], []
        for i, (request, decoding) in enumerate(pairs):
            try:
                key = request_fingerprint(self.identity, request, decoding)
                items.append(self.item(request, decoding, key))
                index.append(i)
                constrained.append(None if decoding.constraint is None else True)
            except DroverError:
                raise  # the same for every request: fail once
            except Exception as exc:  # e.g. a chat template that rejects the roles
                yield i, Completion(choices=[], error=f"cannot build the prompt: {exc}", model=self.config.model)
        start = time.perf_counter()
        for j, result in generate(self.model, self.tokenizer, items, batch_size=self.config.batch_size,
                                  max_length=self.config.max_length):
            yield index[j], Completion(choices=result.choices, usage=Usage(result.prompt_tokens, result.completion_tokens),
                                       model=self.config.model, latency=time.perf_counter() - start,
                                       constrained=constrained[j])

    def score_batch(self, requests: Sequence[ScoreRequest]) -> Iterator[tuple[int, Score]]:
        from drover.local.scoring import score_pairs

        scores = score_pairs(self.model, self.tokenizer, [(r.context, r.continuation) for r in requests],
                             batch_size=self.config.batch_size, max_length=self.config.max_length)
        yield from enumerate(scores)

    def close(self) -> None:
        self.model = None
