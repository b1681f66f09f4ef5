"""The one LLM client (see `drover.llm.client`): config, cache, OpenAI-compatible and local backends.

    from drover.llm import LLM, LLMConfig, Request
    with LLM(LLMConfig.from_spec("http://127.0.0.1:8000/v1#tiny"), run.llm_cache) as llm:
        answers = list(llm.run([Request.chat([{"role": "user", "content": "Hi"}])]))
"""

from drover.llm.cache import LLMCache
from drover.llm.client import LLM, LLMStats
from drover.llm.config import LLMConfig
from drover.completions import Completion, Decoding, Request, Score, ScoreRequest

__all__ = ["LLM", "LLMCache", "LLMConfig", "LLMStats", "Completion", "Decoding", "Request", "Score", "ScoreRequest"]
