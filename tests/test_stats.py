"""drover stats: counts, length distributions, vocabulary, verb-noun pairs, plots."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from drover.cli import main
from drover.stats import compute, distribution, plot, root_verb_and_object


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _conv(i, prompt, answer, source="teacher"):
    return {"id": str(i), "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
            "source": source}


def test_distribution():
    d = distribution([1, 2, 3, 4, 100])
    assert d == {"count": 5, "mean": 22.0, "min": 1, "median": 3.0, "p90": 100.0, "p99": 100.0, "max": 100}
    assert distribution([]) == {"count": 0}


def test_counts_lengths_and_vocabulary(tmp_path):
    conv = _write(tmp_path / "c.jsonl", [_conv(0, "Write a poem.", "Roses are red."),
                                         _conv(1, "Write a story.", "Once upon a time, a cat.", "student")])
    ranked = _write(tmp_path / "r.jsonl", [{"id": "x", "messages": [{"role": "user", "content": "Pick one."}],
                                            "responses": [{"content": "A.", "score": 2, "source": "m1"},
                                                          {"content": "B is best.", "score": 1, "source": "m2"}]}])
    s = compute([conv, ranked])
    assert s["records"] == 3 and s["kinds"] == {"conversation": 2, "ranked": 1}
    assert s["responses"] == 4 and s["sources"] == {"teacher": 1, "student": 1, "m1": 1, "m2": 1}
    # words and punctuation: "Once upon a time, a cat." -> 8 tokens
    assert s["response_length"]["max"] == 8 and s["response_length"]["min"] == 2
    assert s["prompt_length"]["count"] == 3 and s["prompt_length"]["max"] == 4
    vocab = s["response_vocabulary"]
    assert vocab["total_tokens"] == 4 + 8 + 2 + 4
    assert vocab["unique_tokens"] == len({"Roses", "are", "red", ".", "Once", "upon", "a", "time", ",", "cat",
                                          "A", "B", "is", "best"})
    assert s["verb_noun"] == {"available": False, "skipped": "no spaCy pipeline given"}


# A spaCy-shaped stand-in: what the analysis reads is pos_, dep_, lemma_, children, sents.
@dataclass
class Tok:
    lemma_: str
    pos_: str
    dep_: str = ""
    children: list = field(default_factory=list)


@dataclass
class Sent:
    root: Tok


@dataclass
class Doc:
    sents: list


def fake_nlp(text):
    if text.startswith("Write"):
        return Doc([Sent(Tok("write", "VERB", "ROOT", [Tok("poem", "NOUN", "dobj")]))])
    if text.startswith("Give"):
        return Doc([Sent(Tok("give", "VERB", "ROOT", [Tok("me", "PRON", "dative"), Tok("tip", "NOUN", "dobj")]))])
    if text.startswith("The"):  # root is a noun; the first child is a verb with an object
        return Doc([Sent(Tok("answer", "NOUN", "ROOT", [Tok("explain", "VERB", "relcl", [Tok("idea", "NOUN", "dobj")])]))])
    return Doc([Sent(Tok("hello", "INTJ", "ROOT"))])


def test_root_verb_and_object_follows_self_instruct():
    assert root_verb_and_object(fake_nlp("Write a poem")) == ("write", "poem")
    assert root_verb_and_object(fake_nlp("The answer explains the idea")) == ("explain", "idea")
    assert root_verb_and_object(fake_nlp("Hello")) == (None, None)
    assert root_verb_and_object(Doc([])) == (None, None)


def test_verb_noun_pairs_and_plots(tmp_path):
    rows = [_conv(i, "q", a) for i, a in enumerate(["Write a poem.", "Write a poem!", "Give me tips.", "Hello."])]
    s = compute([_write(tmp_path / "c.jsonl", rows)], nlp=fake_nlp)
    vn = s["verb_noun"]
    assert vn["available"] and vn["top_pairs"] == [["write", "poem", 2], ["give", "tip", 1]]
    assert vn["with_root_verb"] == 3 and vn["texts"] == 4
    paths = plot(s, tmp_path / "plots")
    assert [p.name for p in paths] == ["lengths.png", "verb_noun.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_cli_writes_summary_and_says_when_spacy_is_missing(tmp_path, capsys, monkeypatch):
    import drover.stats as stats

    monkeypatch.setattr(stats, "load_spacy", lambda model: (None, "spaCy is not installed (pip install 'drover[nlp]')"))
    data = _write(tmp_path / "c.jsonl", [_conv(0, "Write a poem.", "Roses are red.")])
    assert main(["stats", str(data), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert summary["records"] == 1 and "_lengths" not in summary
    assert summary["verb_noun"]["skipped"].startswith("spaCy is not installed")
    assert (tmp_path / "out" / "lengths.png").exists()
    assert "verb-noun analysis skipped" in capsys.readouterr().out
