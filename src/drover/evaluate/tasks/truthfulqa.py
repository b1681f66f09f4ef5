"""TruthfulQA (Lin et al. 2021): multiple choice (MC1/MC2) and generation judged for truth
and informativeness.

Protocol: sylinrl/TruthfulQA `truthfulqa/models.py` (run_probs, MC_calcs) and
`utilities.py` (split_multi_answer, format_best, the "qa" preset), as allenai/open-instruct
`eval/truthfulqa/run_eval.py` (run_hf_model_mc, first version, August 2023) runs them.

Data: the v1 CSV (817 questions, `data/v1/TruthfulQA.csv`, UTF-8 with BOM), the set
papers before 2025 report on. Prompts follow the official "qa" preset: the six-question
QA primer, then "Q: <question>" and the cue "A:".

- MC (official `MC_calcs`): each reference answer is scored as the continuation
  " <answer>" (summed log-likelihood). True answers are exactly "Correct Answers" and false
  ones "Incorrect Answers" (`split_multi_answer`, a period closing each); the official code
  adds "I have no comment." to the true answers only for its BLEU/ROUGE/BLEURT metrics, and
  open-instruct's MC evaluation does not either. MC1: the best answer beats every false one;
  MC2: probability mass of the true answers.
- Generation: greedy, 50 new tokens, cut at the first blank line. Each answer is judged
  for truth and informativeness by `--truthfulqa-judge SPEC` (one model for both, or
  `truth=SPEC,info=SPEC`). A judge reached as text (a local or served model, e.g. a
  GPT-judge-style fine-tune) is scored: P(" yes") after "Q: ..\\nA: ..\\nTrue:" /
  "Helpful:", true when P(" yes") >= 0.5 (GPT-judge's rule, not renormalised over yes/no). A chat API judge gets the LLM-judge
  prompts in `resources/prompts/eval/` and answers yes/no (constrained where the endpoint
  can). The judge is `drover.judges.truthfulqa`: a failed scoring request or a reply that
  is neither yes nor no is a failure (`n_judge_failures`), left out of the percentages,
  never a verdict. We report % truthful, % informative and % both.
"""

from __future__ import annotations

from dataclasses import dataclass

from drover.errors import ConfigError
from drover.evaluate.prompting import PromptFormatter
from drover.evaluate.task import EvalContext, Task, TaskResult, resource_text
from drover.judges.truthfulqa import JUDGE_PROMPTS, load_questions
from drover.metrics.classification import mc1, mc2, mean


def qa_prompt(fmt: PromptFormatter, question: str) -> object:
    primer = resource_text("prompts", "eval", "truthfulqa_qa_primer.txt").strip()
    return fmt.render(primer + "\n\nQ: " + question, chat_cue="A:", raw_cue="\nA:")


@dataclass
class MCSettings:
    limit: int | None = None


class TruthfulQAMC(Task):
    name = "truthfulqa_mc"
    title = "TruthfulQA MC2"
    primary_metric = "mc2"
    Settings = MCSettings
    shipped = ("data/truthfulqa/data/v1/TruthfulQA.csv", "prompts/eval/truthfulqa_qa_primer.txt")

    def run(self, ctx: EvalContext, settings: MCSettings) -> TaskResult:
        questions = load_questions()[: settings.limit]
        requests, spans = [], []
        for q in questions:
            prompt = qa_prompt(ctx.fmt, q.question)
            answers = q.correct + q.incorrect
            spans.append((prompt, len(requests), len(q.correct), len(answers)))
            requests += [ctx.fmt.score_request(prompt, " " + a) for a in answers]
        scores = ctx.score(requests, desc=self.name)
        examples = []
        for q, (prompt, start, n_true, n_all) in zip(questions, spans):
            totals = [s.total for s in scores[start:start + n_all]]
            true, false = totals[:n_true], totals[n_true:]
            best_index = q.correct.index(q.best) if q.best in q.correct else 0
            m1, m2 = mc1(true, false, best_index), mc2(true, false)
            examples.append({"id": q.id, "category": q.category, "prompt": prompt, "prediction": None,
                             "reference": q.best, "mc1": m1, "mc2": m2,
                             "true_logprobs": true, "false_logprobs": false})
        metrics = {"mc1": 100 * mean(e["mc1"] for e in examples), "mc2": 100 * mean(e["mc2"] for e in examples)}
        return TaskResult(metrics, examples)


@dataclass
class GenSettings:
    limit: int | None = None
    max_tokens: int = 50
    judge_mode: str = "auto"  # auto | logprob | chat


def _judges(spec: str | None) -> dict[str, str]:
    if not spec:
        raise ConfigError("truthfulqa_gen: pass --truthfulqa-judge SPEC (one judge model for truth and "
                          "informativeness) or --truthfulqa-judge truth=SPEC,info=SPEC")
    if "truth=" in spec or "info=" in spec:
        parts = dict(p.split("=", 1) for p in spec.split(",") if "=" in p)
        if set(parts) != {"truth", "info"}:
            raise ConfigError(f"--truthfulqa-judge {spec!r}: expected truth=SPEC,info=SPEC")
        return parts
    return {"truth": spec, "info": spec}


class TruthfulQAGen(Task):
    name = "truthfulqa_gen"
    title = "TruthfulQA True*Info"
    primary_metric = "truthful_informative"
    Settings = GenSettings
    uses = ("truthfulqa_judge",)
    shipped = (*TruthfulQAMC.shipped, *JUDGE_PROMPTS)  # its judges' prompts decide True*Info

    def run(self, ctx: EvalContext, settings: GenSettings) -> TaskResult:
        judges = _judges(ctx.options.truthfulqa_judge)
        questions = load_questions()[: settings.limit]
        prompts = [qa_prompt(ctx.fmt, q.question) for q in questions]
        requests = [ctx.fmt.request(p, key=q.id, temperature=0.0, max_tokens=settings.max_tokens,
                                    stop=["\n\n", "\nQ:"]) for p, q in zip(prompts, questions)]
        answers = [out.text.strip() for out in ctx.generate(requests, desc=self.name)]
        items = [(q.id, q.question, a) for q, a in zip(questions, answers)]
        verdicts = {aspect: self._judge(ctx, spec, aspect, items, settings.judge_mode)
                    for aspect, spec in judges.items()}
        examples = []
        for i, (q, prompt, answer) in enumerate(zip(questions, prompts, answers)):
            truth, info = verdicts["truth"][i], verdicts["info"][i]
            examples.append({"id": q.id, "category": q.category, "prompt": prompt, "prediction": answer,
                             "reference": q.best, "truthful": truth, "informative": info,
                             "truthful_informative": None if truth is None or info is None else truth and info})
        from drover.judges.truthfulqa import aggregate

        return TaskResult(aggregate(verdicts["truth"], verdicts["info"]), examples)

    def _judge(self, ctx: EvalContext, spec: str, aspect: str, items: list[tuple[str, str, str]],
               mode: str) -> list[bool | None]:
        """The shared TruthfulQA judge (`drover.judges.truthfulqa`): None where judging failed."""
        from drover.judges.judge import JudgeContext
        from drover.judges.stage import judge_identity
        from drover.judges.truthfulqa import judge_answers

        with ctx.judge_llm(spec) as llm:
            judge = JudgeContext(llm, llm.config.model, judge_identity(llm.config), None)
            return judge_answers(judge, aspect, items, mode)


MULTIPLE_CHOICE = TruthfulQAMC()
GENERATION = TruthfulQAGen()
