"""TyDi QA gold passage (Clark et al. 2020), 1-shot with per-language instructions, and
its closed-book variant, as the Tülu evaluation.

Protocol: allenai/open-instruct `eval/tydiqa/run_eval.py`, main(), at the Tülu-1-era commit
cd06c6fb0 (July 2023), run as the Tülu paper's scripts do: `--n_shot 1
--max_num_examples_per_lang 100 --max_context_length 512` (so 100 seeded examples per
language by default; `--limit` changes it). Metric: the SQuAD v1.1 script (`evaluate`'s
"squad"), per language, averaged over languages. Deliberate differences: each language's
sample and exemplar come from generators seeded with `--seed` (the reference draws all
languages from one `random.seed(42)` stream), and without the train file the exemplar is
another dev question of the same language.

Data from a user-given directory (`--data-dir`) with the official GoldP dev file
`tydiqa-goldp-v1.1-dev.json` (SQuAD format; the language is the id's prefix). The one
exemplar per language comes from `tydiqa-goldp-v1.1-train.json` when present (seeded
sample), else from the dev file itself (a different question of the same language, never
the one evaluated). Passages are cut to 512 tokens. Prompt: the language's instruction
(`resources/prompts/eval/tydiqa_templates.json`), the exemplar, then passage and question
with the language's answer cue. Greedy, 50 new tokens, first line. Metrics: SQuAD
F1 and exact match per language (`drover.metrics.squad`), and their mean over languages.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from drover.errors import ConfigError, InputError
from drover.evaluate.task import EvalContext, Task, TaskResult, require_data_dir, resource_text, subsample
from drover.metrics.classification import mean
from drover.metrics.squad import squad_scores

DEV = "tydiqa-goldp-v1.1-dev.json"
TRAIN = "tydiqa-goldp-v1.1-train.json"


def read_squad(path: Path) -> list[dict]:
    """Examples {id, lang, context, question, answers[text]} of a SQuAD-format file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(path, None, None, f"invalid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise InputError(path, None, "data", "expected the SQuAD/TyDi QA GoldP format {\"data\": [...]}")
    out = []
    for article in data["data"]:
        for paragraph in article.get("paragraphs", []):
            for qa in paragraph.get("qas", []):
                answers = [a["text"] for a in qa.get("answers", [])]
                if not answers:
                    raise InputError(path, None, f"qas[{qa.get('id')}].answers", "no gold answer")
                out.append({"id": qa["id"], "lang": qa["id"].split("-")[0], "context": paragraph["context"],
                            "question": qa["question"], "answers": answers})
    return out


@dataclass
class TydiQASettings:
    gold_passage: bool = True
    shots: int = 1
    limit: int | None = 100  # examples per language (Tülu: --max_num_examples_per_lang 100)
    max_context_tokens: int = 512
    max_tokens: int = 50


class TydiQA(Task):
    primary_metric = "f1"
    Settings = TydiQASettings
    uses = ("data_dir",)
    shipped = ("prompts/eval/tydiqa_templates.json",)

    def __init__(self, name: str, title: str, gold_passage: bool):
        self.name, self.title, self.gold_passage = name, title, gold_passage

    def default_settings(self) -> TydiQASettings:
        return TydiQASettings(gold_passage=self.gold_passage)

    def run(self, ctx: EvalContext, settings: TydiQASettings) -> TaskResult:
        root = require_data_dir(ctx.options, self.name, f"the TyDi QA GoldP dev file {DEV}")
        dev_path = root / DEV if root.is_dir() else root
        if not dev_path.exists():
            raise ConfigError(f"{self.name}: {dev_path} not found")
        templates = json.loads(resource_text("prompts", "eval", "tydiqa_templates.json"))
        table = templates["gold_passage" if settings.gold_passage else "closed_book"]
        dev = read_squad(dev_path)
        langs = sorted({e["lang"] for e in dev})
        unknown = [lang for lang in langs if lang not in table]
        if unknown:
            raise InputError(dev_path, None, "id", f"no template for language(s) {unknown}; known: {sorted(table)}")
        test = []
        for lang in langs:
            test += subsample([e for e in dev if e["lang"] == lang], settings.limit, ctx.options.seed)
        train_path = dev_path.parent / TRAIN
        pool = read_squad(train_path) if settings.shots and train_path.exists() else dev
        rng = random.Random(ctx.options.seed)
        shots_by_lang = {}
        for lang in langs:
            candidates = [e for e in pool if e["lang"] == lang]
            shots_by_lang[lang] = rng.sample(candidates, min(len(candidates), settings.shots + 1)) if settings.shots else []
        items = []
        for example in test:
            shots = [s for s in shots_by_lang[example["lang"]] if s["id"] != example["id"]][: settings.shots]
            user = self._user_text(ctx, table[example["lang"]], shots, example, settings)
            prompt = ctx.fmt.render(user, chat_cue=table[example["lang"]]["answer"])
            if not ctx.fmt.is_chat:
                prompt = user + table[example["lang"]]["answer"]
            items.append((example, prompt))
        requests = [ctx.fmt.request(p, key=e["id"], temperature=0.0, max_tokens=settings.max_tokens, stop=["\n"])
                    for e, p in items]
        outputs = ctx.generate(requests, desc=self.name)
        examples = []
        for (example, prompt), out in zip(items, outputs):
            prediction = out.text.strip().split("\n")[0].strip()
            scores = squad_scores([prediction], [example["answers"]])
            examples.append({"id": example["id"], "lang": example["lang"], "prompt": prompt, "prediction": prediction,
                             "reference": example["answers"], "f1": scores["f1"],
                             "exact_match": scores["exact_match"]})
        per_lang = {}
        for lang in langs:
            rows = [e for e in examples if e["lang"] == lang]
            per_lang[lang] = squad_scores([e["prediction"] for e in rows], [e["reference"] for e in rows])
        metrics = {"f1": mean(v["f1"] for v in per_lang.values()),
                   "exact_match": mean(v["exact_match"] for v in per_lang.values())}
        metrics.update({f"f1/{lang}": v["f1"] for lang, v in per_lang.items()})
        return TaskResult(metrics, examples, {"language": per_lang},
                          {"exemplars_from": "train" if pool is not dev else "dev"} if settings.shots else {})

    def _user_text(self, ctx: EvalContext, t: dict, shots: list[dict], example: dict, s: TydiQASettings) -> str:
        cut = lambda text: ctx.fmt.truncate_tokens(text, s.max_context_tokens)  # noqa: E731
        text = t["instruction"] + "\n\n"
        demos = []
        for shot in shots:
            demo = (t["passage"] + " " + cut(shot["context"]) + "\n" if s.gold_passage else "")
            demos.append(demo + t["question"] + " " + shot["question"] + "\n" + t["answer"] + " " + shot["answers"][0])
        if demos:
            text += "\n\n".join(demos) + "\n\n"
        if s.gold_passage:
            text += t["passage"] + " " + cut(example["context"]) + "\n"
        text += t["question"] + " " + example["question"] + "\n"
        if ctx.fmt.is_chat:
            text = text.strip()
        return text


GOLD_PASSAGE = TydiQA("tydiqa_goldp", "TydiQA GP", True)
CLOSED_BOOK = TydiQA("tydiqa_closedbook", "TydiQA CB", False)
