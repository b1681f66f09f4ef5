"""A sequence-classification model as a toxicity judge (ToxiGen evaluation).

The Tülu evaluation uses the ToxiGen RoBERTa classifier (`tomh/toxigen_roberta`), where
label 1 is "toxic"; any Hugging Face sequence-classification model directory works, with
the index of its toxic label configurable. Loaded from a local path only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class ToxicityClassifier:
    def __init__(self, path: str | Path, toxic_label: int = 1, batch_size: int = 32, max_length: int = 512):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from drover.errors import ModelNotFoundError

        path = Path(path)
        if not path.is_dir():
            raise ModelNotFoundError(f"--toxigen-classifier {path}: not a local model directory")
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if getattr(self.model.config, "pad_token_id", None) is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.toxic_label, self.batch_size, self.max_length = toxic_label, batch_size, max_length

    def predict(self, texts: Sequence[str]) -> list[int]:
        """1 where the argmax label is the toxic one, else 0."""
        import torch

        out: list[int] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(list(texts[start:start + self.batch_size]), padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                logits = self.model(**batch).logits
                out += [int(i == self.toxic_label) for i in logits.argmax(dim=-1).tolist()]
        return out
