"""Rewards for online training: what a sampled response is worth.

A reward *kind* turns its typed parameters into a function scoring a batch of
(prompt, response, record) items; a `RewardSpec` sums several kinds with weights.
Kinds are registered here, by name, with the one registry type (no branching on names):

  reward-model  a model trained by `drover reward` (scalar head at the response's EOS)
  judge         an LLM judge through the one client: 1-10 rating (GPT-4-LLM / FastChat reviewer), cached
  judge-pairwise  the judge's pairwise preference of the response over the record's reference (both orders)
  gsm-match     1 if the response's last number equals the GSM8K gold answer (`metrics/extract.py`)
  unit-tests    1 if the response's code passes the record's tests in the Codex-Eval sandbox
  regex         format check: 1 if a pattern is found (or the fraction of characters it covers)
  length        format check: 1 at the target length, falling linearly to 0 at twice the tolerance
"""

from __future__ import annotations

from drover.registry import Registry

REWARDS: Registry = Registry("reward", {
    "reward-model": "drover.rewards.learned:REWARD_MODEL",
    "judge": "drover.rewards.learned:JUDGE",
    "judge-pairwise": "drover.rewards.learned:PAIRWISE_JUDGE",
    "gsm-match": "drover.rewards.verifiable:GSM_MATCH",
    "unit-tests": "drover.rewards.verifiable:UNIT_TESTS",
    "regex": "drover.rewards.verifiable:REGEX",
    "length": "drover.rewards.verifiable:LENGTH",
})
