"""Shared by the online-RL tests: a prompts file of one-turn chat records."""

from __future__ import annotations

import json
from pathlib import Path


def write_prompts(path: Path, count: int, template: str = "Say something about item {i}.") -> Path:
    """`count` records p0..p{count-1}, each a single user turn `template` formatted with its index."""
    path.write_text("".join(json.dumps({"id": f"p{i}", "messages": [
        {"role": "user", "content": template.format(i=i)}]}) + "\n" for i in range(count)))
    return path
