"""Test environment: offline, no GPU, tiny local models only."""

from __future__ import annotations

import os
import tempfile

# Set before transformers/datasets are imported anywhere: a hub name must fail at once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="drover-hf-home-"))
os.environ.setdefault("WANDB_MODE", "disabled")
