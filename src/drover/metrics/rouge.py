"""ROUGE-L, identical to Google's `rouge-score` package, and a fast near-duplicate index.

Reference implementation: `rouge_score.rouge_scorer.RougeScorer(["rougeL"])` (v0.1.2):
lowercase, every run of non-`[a-z0-9]` characters becomes a space, split on whitespace,
optionally Porter-stem tokens longer than 3 characters (nltk's `PorterStemmer`, the one
rouge-score uses), and F = 2PR/(P+R) from the longest common subsequence (LCS) of tokens.
`rouge-score` is not needed at run time; the tests compare the two on shipped data.

Speed. Self-Instruct/Alpaca drop a new instruction when its ROUGE-L against any
instruction already in the pool exceeds 0.7; the original code scores every pair with an
O(n·m) Python table, which takes hours for a 50,000-instruction pool. Here:

* texts are tokenised once into integer ids;
* the LCS uses the bit-parallel algorithm of Allison–Dix / Hyyrö over Python ints
  (one big-int step per token of the other text);
* `NearDuplicateIndex` computes the exact LCS for few pairs: LCS <= bag overlap and
  F = 2·LCS/(|a|+|b|), so F > θ needs 2·overlap > θ·(|a|+|b|). The overlaps of a query
  with the whole pool are counted at once (numpy `bincount` over inverted posting lists
  of occurrence-tagged tokens), and only the members passing that bound get an LCS.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from drover.errors import ConfigError

_NON_ALPHANUM = re.compile(r"[^a-z0-9]+")
_SPACES = re.compile(r"\s+")
_VALID = re.compile(r"^[a-z0-9]+$")


@lru_cache(maxsize=1)
def _stemmer():
    try:
        from nltk.stem import porter
    except ImportError:
        raise ConfigError("ROUGE with use_stemmer=True needs nltk's Porter stemmer "
                          "(the one rouge-score uses): pip install nltk") from None
    return porter.PorterStemmer()


def tokenize(text: str, use_stemmer: bool = False) -> list[str]:
    """rouge-score's default tokenizer.

    >>> tokenize("Hello, World! It's 2-for-1.")
    ['hello', 'world', 'it', 's', '2', 'for', '1']
    """
    text = _NON_ALPHANUM.sub(" ", text.lower())
    tokens = _SPACES.split(text)
    if use_stemmer:
        stem = _stemmer().stem
        tokens = [stem(t) if len(t) > 3 else t for t in tokens]
    return [t for t in tokens if _VALID.match(t)]


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence, bit-parallel (Hyyrö 2004).

    Bit i of V is 0 where row i of the classic DP table grew; one big-int update per
    element of `b`, so the cost is O(|b| · ceil(|a|/word)) machine operations.

    >>> lcs_length("ABCBDAB", "BDCABA")
    4
    """
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    masks: dict = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    return _lcs_with_masks(masks, len(a), b)


def _lcs_with_masks(masks: dict, n: int, b: Iterable) -> int:
    full = (1 << n) - 1
    v = full
    get = masks.get
    for tok in b:
        m = get(tok)
        if m:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return n - v.bit_count()


def fmeasure_from_lcs(lcs: int, target_len: int, prediction_len: int) -> float:
    """rouge-score's F from an LCS length (same float operations, so identical values)."""
    if lcs == 0 or target_len == 0 or prediction_len == 0:
        return 0.0
    precision = lcs / prediction_len
    recall = lcs / target_len
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str, use_stemmer: bool = False) -> float:
    """ROUGE-L F-measure, equal to `RougeScorer(["rougeL"]).score(reference, prediction)`."""
    p, r = tokenize(prediction, use_stemmer), tokenize(reference, use_stemmer)
    return fmeasure_from_lcs(lcs_length(p, r), len(r), len(p))


def rouge_l_tokens(prediction: Sequence, reference: Sequence) -> float:
    """ROUGE-L F-measure of two already tokenised sequences."""
    return fmeasure_from_lcs(lcs_length(prediction, reference), len(reference), len(prediction))


@dataclass(frozen=True)
class Match:
    """The most similar pool member found for a query (`index` into the pool)."""

    index: int
    score: float


class NearDuplicateIndex:
    """A growing pool of texts that answers "is this within ROUGE-L > θ of any member?".

    Exact: `max_similar(text)` returns the pool member with the highest ROUGE-L among
    those scoring above the threshold (or None), the same decision as scoring every
    pair with rouge-score. Bag overlaps with the whole pool are counted in one numpy
    pass over posting lists; only members whose overlap bound passes get an exact LCS.
    """

    def __init__(self, threshold: float = 0.7, use_stemmer: bool = False):
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"rouge threshold must be in (0, 1], got {threshold}")
        import numpy as np

        self._np = np
        self.threshold = threshold
        self.use_stemmer = use_stemmer
        self._vocab: dict[str, int] = {}
        self._texts: list[str] = []
        self._ids: list[tuple[int, ...]] = []
        self._lens = np.zeros(1024, dtype=np.int32)
        self._masks: list[dict[int, int] | None] = []
        # (token id, occurrence number) -> [buffer of pool indices, used length]. Tagging
        # each occurrence turns bags into sets, so counting shared keys gives bag overlap.
        self._postings: dict[tuple[int, int], list] = {}
        self.pairs_checked = 0  # exact LCS computations done (for benchmarks)

    def __len__(self) -> int:
        return len(self._texts)

    @property
    def texts(self) -> list[str]:
        return self._texts

    def encode(self, text: str) -> tuple[int, ...]:
        vocab = self._vocab
        return tuple(vocab.setdefault(t, len(vocab)) for t in tokenize(text, self.use_stemmer))

    @staticmethod
    def _keys(ids: tuple[int, ...]) -> list[tuple[int, int]]:
        seen: dict[int, int] = {}
        keys = []
        for tok in ids:
            k = seen.get(tok, 0)
            seen[tok] = k + 1
            keys.append((tok, k))
        return keys

    def add(self, text: str, ids: tuple[int, ...] | None = None) -> int:
        """Add a text to the pool; returns its index."""
        np = self._np
        ids = self.encode(text) if ids is None else ids
        index = len(self._texts)
        self._texts.append(text)
        self._ids.append(ids)
        self._masks.append(None)
        if index >= len(self._lens):
            self._lens = np.concatenate([self._lens, np.zeros_like(self._lens)])
        self._lens[index] = len(ids)
        for key in self._keys(ids):
            entry = self._postings.get(key)
            if entry is None:
                entry = self._postings[key] = [np.empty(4, dtype=np.int32), 0]
            buf, size = entry
            if size == len(buf):
                buf = entry[0] = np.concatenate([buf, np.empty_like(buf)])
            buf[size] = index
            entry[1] = size + 1
        return index

    def _mask(self, index: int) -> dict[int, int]:
        masks = self._masks[index]
        if masks is None:
            masks = {}
            for i, tok in enumerate(self._ids[index]):
                masks[tok] = masks.get(tok, 0) | (1 << i)
            self._masks[index] = masks
        return masks

    def _candidates(self, ids: tuple[int, ...]) -> list[int]:
        """Pool members whose bag overlap allows F > θ (F <= 2·overlap/(|a|+|b|))."""
        np = self._np
        n = len(self._texts)
        arrays = []
        for key in self._keys(ids):
            entry = self._postings.get(key)
            if entry is not None:
                arrays.append(entry[0][: entry[1]])
        if not arrays:
            return []
        overlap = np.bincount(np.concatenate(arrays), minlength=n)
        la = len(ids)
        # A small margin keeps the bound safe against float rounding in the exact score.
        keep = 2.0 * overlap > (self.threshold - 1e-9) * (la + self._lens[:n])
        return np.flatnonzero(keep).tolist()

    def max_similar(self, text: str, ids: tuple[int, ...] | None = None) -> Match | None:
        """The most similar pool member with ROUGE-L > threshold, or None."""
        ids = self.encode(text) if ids is None else ids
        la = len(ids)
        if la == 0 or not self._texts:
            return None
        theta = self.threshold
        best: Match | None = None
        for j in self._candidates(ids):
            lb = len(self._ids[j])
            self.pairs_checked += 1
            if lb >= la:
                lcs = _lcs_with_masks(self._mask(j), lb, ids)
            else:
                lcs = lcs_length(ids, self._ids[j])
            # Score as the original code does: the new text is the target.
            score = fmeasure_from_lcs(lcs, la, lb)
            if score > theta and (best is None or score > best.score):
                best = Match(j, score)
        return best

    def add_if_novel(self, text: str) -> Match | None:
        """Add `text` unless a pool member is too similar; returns that member or None."""
        ids = self.encode(text)
        match = self.max_similar(text, ids)
        if match is None:
            self.add(text, ids)
        return match


def dedup(texts: Iterable[str], threshold: float = 0.7, pool: Iterable[str] = (),
          use_stemmer: bool = False) -> list[int]:
    """Indices of `texts` kept by the greedy Self-Instruct filter (in order), given a seed pool."""
    index = NearDuplicateIndex(threshold, use_stemmer)
    for text in pool:
        index.add(text)
    kept = []
    for i, text in enumerate(texts):
        if index.add_if_novel(text) is None:
            kept.append(i)
    return kept
