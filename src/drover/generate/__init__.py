"""Teacher-LLM data generation, one resumable stage per module.

    answers.py             Alpaca-template answers from a teacher (GPT-4-LLM, Algorithm 1)
    translate.py           instructions and inputs into another language, ids kept
    self_instruct.py       grow an instruction pool (Alpaca or Self-Instruct mode)
    feedback.py            K responses rated 1-10 by a judge -> Ranked (comparison data)
    rank_probabilistic.py  Tuna_p: N samples ordered by length-normalised log-probability
    rank_contextual.py     Tuna_c: N diverse policy samples ranked by a judge in one prompt

Shared pieces: `inputs.py` (read prompts from Alpaca JSON/JSONL or Conversation/Ranked
files), `batching.py` (several requests per record, streamed in order), `stage.py`
(run directory, LLM client, resumable output, end-of-stage summary), `filters.py` and
`task_blocks.py` (the Self-Instruct/Alpaca post-processing of teacher outputs).
"""
