"""The online algorithms, by name: the one registration site (lazy entries).

  grpo        Shao et al. 2024, DeepSeekMath (arXiv:2402.03300)
  rloo        Ahmadian et al. 2024, Back to Basics (arXiv:2402.14740)
  ppo         Schulman et al. 2017 (arXiv:1707.06347); RLHF as Ouyang et al. 2022 (arXiv:2203.02155)
  online-dpo  Guo et al. 2024, Direct Language Model Alignment from Online AI Feedback (arXiv:2402.04792)
"""

from __future__ import annotations

from drover.registry import Registry

ALGORITHMS: Registry = Registry("online algorithm", {
    "grpo": "drover.train.online.algorithms.grpo:SPEC",
    "rloo": "drover.train.online.algorithms.rloo:SPEC",
    "ppo": "drover.train.online.algorithms.ppo:SPEC",
    "online-dpo": "drover.train.online.algorithms.online_dpo:SPEC",
})
