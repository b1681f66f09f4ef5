"""The local model engine: decoding, log-prob scoring and reward scoring on a loaded Hugging
Face model, the forward training shares (`sequence_model`) and its attention kernels.

The layer below everything that runs a local model: the LLM client's local backend
(`drover.llm.hf_backend`), `drover serve`, best-of-n and expert iteration (`drover.infer`),
training and online RL (`drover.train`), and learned rewards (`drover.rewards`). It imports
none of them (tests/test_layers.py): one engine, reached from above only.

    decode.py          `generate` / `Decoder`: a running batch over a static KV cache (kv_slots.py),
                       per-row seeded sampling, stop strings, grammar constraints (constrained.py)
    scoring.py         log-likelihoods of (context, continuation) pairs, shared contexts once
    sequence_model.py  the one forward: per-target log-probs (logprobs.py) or a scalar head
    reward.py          reward models: load, score (prompt, response) pairs as training read them
    attention.py       varlen attention kernels for packed rows
    samplers.py        the generation-engine protocol of online training (sync weights, sample) and
                       its registry: `hf` (decode.py on the policy) and `vllm` (vllm_sampler.py,
                       in-process, weights pushed each step with LoRA merged by weights.py)
    packed_linear.py   the decode step's CPU projections through oneDNN-packed weights
"""
