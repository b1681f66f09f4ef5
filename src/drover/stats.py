"""Data statistics for Conversation/Ranked files (`drover stats`).

What "Instruction Tuning with GPT-4" reports about its data (Figure 1): how long prompts
and responses are (length histograms, log-scale counts), how varied the vocabulary is,
and which root verbs with their direct objects dominate the outputs (the Self-Instruct
verb-noun analysis: parse the first sentence with spaCy, take the root verb, or the first
verb below the root, and its direct-object noun).

Lengths are counted in tokens of a Hugging Face tokenizer when one is given, else in
words and punctuation marks (`\\w+|[^\\w\\s]`); the summary says which. The verb-noun part
needs spaCy and an English pipeline (`pip install 'drover[nlp]'` and
`python -m spacy download en_core_web_sm`); without them it is skipped and the summary
says why.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drover.records import Conversation, Ranked, read_records

_WORDS = re.compile(r"\w+|[^\w\s]")


def word_tokens(text: str) -> list[str]:
    return _WORDS.findall(text)


def distribution(values: list[int]) -> dict[str, float]:
    """count, mean, min, median, p90, p99, max of a list of lengths."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def pct(q: float) -> float:
        return float(ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))])

    return {"count": len(values), "mean": round(statistics.fmean(values), 2), "min": ordered[0],
            "median": float(statistics.median(ordered)), "p90": pct(0.9), "p99": pct(0.99), "max": ordered[-1]}


def root_verb_and_object(doc: Any) -> tuple[str | None, str | None]:
    """Self-Instruct's `find_root_verb_and_its_dobj` on the first sentence of a spaCy Doc."""
    sentences = list(doc.sents)
    if not sentences:
        return None, None
    return _verb_dobj(sentences[0].root)


def _verb_dobj(token: Any) -> tuple[str | None, str | None]:
    if token.pos_ == "VERB":
        for child in token.children:
            if child.dep_ == "dobj" and child.pos_ == "NOUN":
                return token.lemma_, child.lemma_
        return token.lemma_, None
    for child in token.children:
        return _verb_dobj(child)  # the original follows the first child only
    return None, None


def load_spacy(model: str) -> tuple[Any | None, str]:
    """(nlp, "") or (None, why the verb-noun analysis is skipped)."""
    try:
        import spacy
    except ImportError:
        return None, "spaCy is not installed (pip install 'drover[nlp]'; then python -m spacy download en_core_web_sm)"
    try:
        return spacy.load(model, disable=["ner"]), ""
    except OSError:
        return None, f"spaCy model {model!r} is not installed (python -m spacy download {model})"


@dataclass
class _Texts:
    prompts: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)
    sources: Counter = field(default_factory=Counter)
    responses_per_record: list[int] = field(default_factory=list)


def _collect(paths: Iterable[str | Path]) -> _Texts:
    texts = _Texts()
    for path in paths:
        for record in read_records(path):
            prompt = "\n".join(m.content for m in record.messages if m.role != "assistant"
                               ) if isinstance(record, Ranked) else "\n".join(
                m.content for m in record.prompt_messages if m.role != "assistant")
            texts.prompts.append(prompt)
            if isinstance(record, Conversation):
                texts.kinds["conversation"] += 1
                texts.sources[record.source or "-"] += 1
                answer = record.last_assistant
                if answer is not None:
                    texts.responses.append(answer)
                texts.responses_per_record.append(0 if answer is None else 1)
            else:
                texts.kinds["ranked"] += 1
                for r in record.responses:
                    texts.responses.append(r.content)
                    texts.sources[r.source or "-"] += 1
                texts.responses_per_record.append(len(record.responses))
    return texts


def compute(paths: list[str | Path], tokenize: Callable[[str], list] | None = None, tokens_name: str = "words",
            nlp: Any = None, nlp_missing: str = "", top: int = 20, verb_noun_of: str = "response") -> dict[str, Any]:
    """The statistics summary (plain JSON data) of one or more record files."""
    tokenize = tokenize or word_tokens
    texts = _collect(paths)
    prompt_tokens = [tokenize(t) for t in texts.prompts]
    response_tokens = [tokenize(t) for t in texts.responses]

    def vocab(rows: list[list]) -> dict[str, Any]:
        counts = Counter(tok for row in rows for tok in row)
        total = sum(counts.values())
        per = [len(set(row)) for row in rows]
        return {"unique_tokens": len(counts), "total_tokens": total,
                "type_token_ratio": round(len(counts) / total, 4) if total else 0.0,
                "mean_unique_tokens_per_text": round(statistics.fmean(per), 2) if per else 0.0,
                "top_tokens": counts.most_common(10)}

    summary: dict[str, Any] = {
        "files": [str(p) for p in paths],
        "records": sum(texts.kinds.values()),
        "kinds": dict(texts.kinds),
        "sources": dict(texts.sources.most_common(20)),
        "responses": len(texts.responses),
        "responses_per_record": distribution(texts.responses_per_record),
        "length_unit": tokens_name,
        "prompt_length": distribution([len(t) for t in prompt_tokens]),
        "response_length": distribution([len(t) for t in response_tokens]),
        "prompt_vocabulary": vocab(prompt_tokens),
        "response_vocabulary": vocab(response_tokens),
        "unique_prompts": len(set(texts.prompts)),
        "unique_responses": len(set(texts.responses)),
    }
    if nlp is None:
        summary["verb_noun"] = {"available": False, "skipped": nlp_missing or "no spaCy pipeline given"}
    else:
        source = texts.responses if verb_noun_of == "response" else texts.prompts
        pairs: Counter = Counter()
        verbs: Counter = Counter()
        for doc in nlp.pipe(source) if hasattr(nlp, "pipe") else map(nlp, source):
            verb, noun = root_verb_and_object(doc)
            if verb:
                verbs[verb] += 1
                if noun:
                    pairs[(verb, noun)] += 1
        summary["verb_noun"] = {
            "available": True, "of": verb_noun_of, "texts": len(source),
            "with_root_verb": sum(verbs.values()), "with_verb_noun_pair": sum(pairs.values()),
            "unique_verbs": len(verbs), "unique_pairs": len(pairs),
            "top_verbs": verbs.most_common(top),
            "top_pairs": [[v, n, c] for (v, n), c in pairs.most_common(top)]}
    summary["_lengths"] = {"prompt": [len(t) for t in prompt_tokens], "response": [len(t) for t in response_tokens]}
    return summary


def plot(summary: dict[str, Any], out_dir: Path) -> list[Path]:
    """PNG plots: length histograms (log-scale counts, Figure 1(d)) and top verb-noun pairs (Figure 1(c))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    lengths = summary["_lengths"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key in zip(axes, ("prompt", "response")):
        values = lengths[key]
        if values:
            ax.hist(values, bins=min(50, max(5, len(set(values)))), color="#4878a8")
        ax.set_yscale("log")
        ax.set_xlabel(f"{key} length ({summary['length_unit']})")
        ax.set_ylabel("frequency (log)")
        ax.set_title(f"{key}s: n={len(values)}")
    fig.tight_layout()
    path = out_dir / "lengths.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    vn = summary.get("verb_noun", {})
    if vn.get("available") and vn.get("top_pairs"):
        pairs = vn["top_pairs"][::-1]
        fig, ax = plt.subplots(figsize=(6, 0.3 * len(pairs) + 1.2))
        ax.barh([f"{v} {n}" for v, n, _ in pairs], [c for _, _, c in pairs], color="#d07040")
        ax.set_xlabel("count")
        ax.set_title(f"top root verb - direct object pairs ({vn['of']}s)")
        fig.tight_layout()
        path = out_dir / "verb_noun.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
