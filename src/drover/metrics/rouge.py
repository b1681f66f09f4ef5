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
* `NearDuplicateIndex` never computes most pairs: since LCS <= bag overlap and
  F = 2·LCS/(|a|+|b|), F > θ needs an overlap of more than θ/(2-θ)·|a| tokens, so any
  match shares at least one of the query's |a|-t+1 *rarest* tokens (prefix filtering,
  as in set-similarity joins); only pool members found through those short posting lists
  are checked, first with cheap length and bag-overlap bounds, then with the exact LCS.
"""

from __future__ import annotations

import re
from collections import Counter
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

    Exact for scores above `threshold`: `max_similar(text)` returns the pool member with
    the highest ROUGE-L among those scoring above the threshold (or None), identical to
    scoring every pair with rouge-score, but touching only a few candidates per query.
    """

    def __init__(self, threshold: float = 0.7, use_stemmer: bool = False):
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"rouge threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.use_stemmer = use_stemmer
        self._vocab: dict[str, int] = {}
        self._texts: list[str] = []
        self._ids: list[tuple[int, ...]] = []
        self._bags: list[Counter] = []
        self._masks: list[dict[int, int] | None] = []
        # (token id, occurrence number) -> pool indices holding that occurrence. Turning
        # a bag into a set this way makes set intersection equal bag intersection.
        self._postings: dict[tuple[int, int], list[int]] = {}
        self.pairs_checked = 0  # LCS computations done (for benchmarks)

    def __len__(self) -> int:
        return len(self._texts)

    @property
    def texts(self) -> list[str]:
        return self._texts

    def encode(self, text: str) -> tuple[int, ...]:
        vocab = self._vocab
        return tuple(vocab.setdefault(t, len(vocab)) for t in tokenize(text, self.use_stemmer))

    def add(self, text: str, ids: tuple[int, ...] | None = None) -> int:
        """Add a text to the pool; returns its index."""
        ids = self.encode(text) if ids is None else ids
        index = len(self._texts)
        self._texts.append(text)
        self._ids.append(ids)
        bag = Counter(ids)
        self._bags.append(bag)
        self._masks.append(None)
        for tok, count in bag.items():
            for k in range(count):
                self._postings.setdefault((tok, k), []).append(index)
        return index

    def _mask(self, index: int) -> dict[int, int]:
        masks = self._masks[index]
        if masks is None:
            masks = {}
            for i, tok in enumerate(self._ids[index]):
                masks[tok] = masks.get(tok, 0) | (1 << i)
            self._masks[index] = masks
        return masks

    def _candidates(self, ids: tuple[int, ...], bag: Counter) -> set[int]:
        la = len(ids)
        theta = self.threshold
        # F > θ needs overlap > θ/(2-θ)·la; flooring keeps the bound safe (it can only
        # make the prefix one token longer than necessary).
        t = max(1, int(theta / (2.0 - theta) * la))
        keys = [(tok, k) for tok, count in bag.items() for k in range(count)]
        keys.sort(key=lambda key: len(self._postings.get(key, ())))
        found: set[int] = set()
        for key in keys[: la - t + 1]:
            found.update(self._postings.get(key, ()))
        return found

    def max_similar(self, text: str, ids: tuple[int, ...] | None = None) -> Match | None:
        """The most similar pool member with ROUGE-L > threshold, or None."""
        ids = self.encode(text) if ids is None else ids
        la = len(ids)
        if la == 0 or not self._texts:
            return None
        bag = Counter(ids)
        theta = self.threshold
        best: Match | None = None
        for j in self._candidates(ids, bag):
            lb = len(self._ids[j])
            # Upper bounds before the exact LCS: by length, then by bag overlap.
            if 2.0 * min(la, lb) / (la + lb) <= theta - 1e-9:
                continue
            other = self._bags[j]
            overlap = sum(min(c, other[tok]) for tok, c in bag.items() if tok in other)
            if 2.0 * overlap / (la + lb) <= theta - 1e-9:
                continue
            self.pairs_checked += 1
            if lb >= la:
                lcs = _lcs_with_masks(self._mask(j), lb, ids)
            else:
                lcs = lcs_length(ids, self._ids[j])
            # Score as the original code does: the new text is the target.
            score = fmeasure_from_lcs(lcs, la, lb)
            if score > theta and (best is None or score > best.score or
                                  (score == best.score and j < best.index)):
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
