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
os.environ.setdefault("DROVER_CACHE_DIR", tempfile.mkdtemp(prefix="drover-cache-"))  # fingerprint memo
os.environ.setdefault("WANDB_MODE", "disabled")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """A saved tiny Llama + byte-level BPE tokenizer with the Tülu chat template (built once)."""
    from drover.models import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny-model") / "tiny")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    """The tiny model's tokenizer, loaded once per session (do not mutate it; load your own copy)."""
    from drover.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)
