"""lm-evaluation-harness's own request code against `drover serve`: its `local-completions`
model with default settings (token-id prompts, echo + logprobs) and batch size 4 on a small
local multiple-choice task, whose log-likelihoods must equal drover's own scoring (and on a
generation task, whose answers must equal drover's own generation); and its
`local-chat-completions` model on a small generation task, whose answers must equal
drover's own greedy chat generation."""

from __future__ import annotations

import json

import pytest

from drover.llm.client import LLM
from drover.llm.config import LLMConfig
from drover.completions import Request, ScoreRequest

pytestmark = pytest.mark.slow

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval[api] is in the dev extra")

QUESTIONS = [
    {"question": "The capital of France is", "choices": ["Paris", "London", "a river"], "answer": 0},
    {"question": "Two plus two equals", "choices": ["four", "five"], "answer": 0},
    {"question": "Question: what colour is the sky?\nAnswer:", "choices": ["blue", "green", "red", "the sea"],
     "answer": 0},
    {"question": "Cats like to", "choices": ["sleep", "swim"], "answer": 0},
    {"question": "Once upon a time there was a", "choices": ["princess", "dragon", "cat"], "answer": 1},
]

MC_TASK = """task: drover_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
metadata:
  version: 1
"""

GEN_TASK = """task: drover_tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{choices[0]}}}}"
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
metadata:
  version: 1
"""


class Recorder:
    """ASGI wrapper keeping every request body, to check what lm-eval really sent."""

    def __init__(self, app):
        self.app, self.bodies = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks = []

        async def heard():
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    self.bodies.append((scope["path"], json.loads(b"".join(chunks) or b"null")))
            return message

        await self.app(scope, heard, send)


@pytest.fixture(scope="module")
def recorder(tiny_model_dir):
    from drover.infer.server import load_app

    return Recorder(load_app(str(tiny_model_dir), model_name="tiny"))


@pytest.fixture(scope="module")
def served(recorder):
    from drover.infer.server import serve_in_thread

    with serve_in_thread("", app=recorder) as url:
        yield url


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    from lm_eval.tasks import TaskManager

    root = tmp_path_factory.mktemp("lm-eval-tasks")
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (root / "mc.yaml").write_text(MC_TASK.format(data=data))
    (root / "gen.yaml").write_text(GEN_TASK.format(data=data))
    return TaskManager(include_path=str(root), include_defaults=False)


def test_local_completions_log_likelihoods_equal_drovers_scoring(served, recorder, tasks, tiny_model_dir):
    from lm_eval import simple_evaluate

    out = simple_evaluate(model="local-completions", model_args={"model": "tiny", "base_url": f"{served}/completions",
                                                                 "tokenizer": str(tiny_model_dir)},
                          tasks=["drover_tiny_mc", "drover_tiny_gen"], batch_size=4, log_samples=True,
                          task_manager=tasks)
    samples = out["samples"]["drover_tiny_mc"]
    assert len(samples) == len(QUESTIONS)
    pairs, theirs = [], []
    for sample in sorted(samples, key=lambda s: s["doc_id"]):
        doc = QUESTIONS[sample["doc_id"]]
        for choice, resp in zip(doc["choices"], sample["resps"]):
            pairs.append(ScoreRequest(doc["question"], " " + choice))
            theirs.append(resp[0][0])
    with LLM(LLMConfig.from_spec(f"hf:{tiny_model_dir}"), None, progress=False) as llm:
        ours = [s.total for s in llm.score(pairs)]
    assert theirs == pytest.approx(ours, abs=1e-4)
    prompts = [body["prompt"] for path, body in recorder.bodies if path == "/v1/completions" and body.get("echo")]
    assert max(len(p) for p in prompts) == 4 and all(isinstance(t, int) for p in prompts for q in p for t in q)
    assert sum(len(p) for p in prompts) == len(pairs)  # batches of token-id prompts, each scored once
    right, at = [], 0  # lm-eval's accuracy is the argmax of drover's own log-likelihoods
    for sample in sorted(samples, key=lambda s: s["doc_id"]):
        doc = QUESTIONS[sample["doc_id"]]
        block = ours[at:at + len(doc["choices"])]
        right.append(block.index(max(block)) == doc["answer"])
        at += len(doc["choices"])
    assert out["results"]["drover_tiny_mc"]["acc,none"] == pytest.approx(sum(right) / len(right))
    generated = [s["resps"][0][0] for s in sorted(out["samples"]["drover_tiny_gen"], key=lambda s: s["doc_id"])]
    with LLM(LLMConfig.from_spec(f"hf:{tiny_model_dir}"), None, progress=False) as llm:
        own = [c.text for c in llm.run([Request.text(q["question"], max_tokens=8, temperature=0, stop=["\n\n"])
                                        for q in QUESTIONS])]
    assert generated == own  # generate_until through token-id prompts, batched


def test_local_chat_completions_answers_equal_drovers_generation(served, tasks, tiny_model_dir):
    from lm_eval import simple_evaluate

    out = simple_evaluate(model="local-chat-completions",
                          model_args={"model": "tiny", "base_url": f"{served}/chat/completions",
                                      "tokenizer": str(tiny_model_dir)},
                          tasks=["drover_tiny_gen"], batch_size=4, apply_chat_template=True, log_samples=True,
                          task_manager=tasks)
    samples = sorted(out["samples"]["drover_tiny_gen"], key=lambda s: s["doc_id"])
    assert len(samples) == len(QUESTIONS)
    reqs = [Request.chat([("user", q["question"])], max_tokens=8, temperature=0, stop=["\n\n"]) for q in QUESTIONS]
    with LLM(LLMConfig.from_spec(f"hf:{tiny_model_dir}"), None, progress=False) as llm:
        ours = [c.text for c in llm.run(reqs)]
    assert [s["resps"][0][0] for s in samples] == ours
