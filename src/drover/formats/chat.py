"""Multi-turn chat data: ShareGPT, Baize and OpenAssistant message trees."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from drover.formats.base import Converter, ConvertOptions, ConvertStats, Row, TokenCounter, extra_meta
from drover.formats.tokens import heuristic_count
from drover.records import Conversation, Message

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant",
                  "bard": "assistant", "assistant": "assistant"}
# Dropped turns: ShareGPT's rare system prompts, and Bing transcripts (search-augmented
# answers that do not fit a plain chat model). open-instruct drops these too.
SHAREGPT_DROPPED = {"system", "bing"}
# Per-turn overhead (role header, separators) added to the content tokens when splitting,
# as FastChat's split_long_conversation.py does.
TURN_OVERHEAD = 6


def _row_id(row: Row, number: int) -> str:
    value = row.object().get("id")
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value) else str(number)


def _alternating(messages: list[Message]) -> bool:
    return all(m.role == ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(messages))


def split_rounds(messages: list[Message], max_tokens: int, count: TokenCounter, stats: ConvertStats) -> list[tuple[int, int]]:
    """Greedily pack user/assistant rounds into chunks of at most `max_tokens` tokens.

    Returns (start, end) message slices. A single round over the budget cannot be split
    without cutting a turn, so it is dropped (open-instruct's fix of FastChat's splitter,
    which used to let such conversations through whole).
    """
    costs = [count(m.content) + TURN_OVERHEAD for m in messages]
    chunks: list[tuple[int, int]] = []
    start: int | None = None
    used = 0
    for i in range(0, len(messages), 2):
        size = costs[i] + costs[i + 1]
        if size > max_tokens:
            stats.skip("rounds longer than max_tokens")
            if start is not None:
                chunks.append((start, i))
            start, used = None, 0
        elif start is None:
            start, used = i, size
        elif used + size <= max_tokens:
            used += size
        else:
            chunks.append((start, i))
            start, used = i, size
    if start is not None:
        chunks.append((start, len(messages)))
    return chunks


def convert_sharegpt(rows: Iterable[Row], opts: ConvertOptions, stats: ConvertStats) -> Iterator[Conversation]:
    """ShareGPT `{id, conversations: [{from, value}]}`.

    Protocol: allenai/open-instruct `scripts/split_sharegpt_conversations.py` (Tülu-1 era,
    after FastChat's `fastchat/data/split_long_conversation.py`): split between rounds at
    `--max-length` 2048 tokens (the default here), each turn costing its tokens + 6, a round
    longer than the budget dropped. Deliberate difference: turns are counted without the
    BOS token the reference's `tokenizer(value)` adds (one token per turn).

    human/user -> user, gpt/chatgpt/bard -> assistant; system and bing turns are dropped.
    A conversation must then alternate user/assistant: leading assistant turns and a final
    unanswered user turn are trimmed, and one that still does not alternate is skipped
    (as open-instruct's `filter_invalid_roles`). Conversations longer than `max_tokens`
    are split between rounds into `<id>_<first turn index>` pieces.
    """
    source = opts.name("sharegpt")
    count = opts.count_tokens or heuristic_count
    for number, row in enumerate(rows):
        obj = row.object()
        conv_id = _row_id(row, number)
        turns = row.array("conversations", nonempty=False)
        messages: list[Message] = []
        for i in range(len(turns)):
            turn = row.member(turns, i, "conversations")
            prefix = f"conversations[{i}]."
            sender = row.text("from", obj=turn, prefix=prefix)
            value = row.text("value", obj=turn, prefix=prefix)
            if sender in SHAREGPT_DROPPED:
                stats.skip(f"{sender} turns dropped")
                continue
            if sender not in SHAREGPT_ROLES:
                raise row.error(prefix + "from", f"unknown sender {sender!r} (expected one of: "
                                f"{', '.join(sorted(SHAREGPT_ROLES) + sorted(SHAREGPT_DROPPED))})")
            if not value.strip():
                stats.skip("empty turns dropped")
                continue
            messages.append(Message(SHAREGPT_ROLES[sender], value))
        while messages and messages[0].role != "user":
            messages.pop(0)
        while messages and messages[-1].role != "assistant":
            messages.pop()
        if not messages:
            stats.skip("conversations without a complete human/gpt round")
            continue
        if not _alternating(messages):
            stats.skip("conversations that do not alternate human/gpt")
            continue
        meta = extra_meta(obj, ("id", "conversations"))
        meta["conversation_id"] = conv_id
        chunks = split_rounds(messages, opts.max_tokens, count, stats) if opts.max_tokens else [(0, len(messages))]
        for start, end in chunks:
            whole = (start, end) == (0, len(messages))
            rid = f"{source}_{conv_id}" if whole else f"{source}_{conv_id}_{start}"
            yield Conversation(rid, messages[start:end], source, dict(meta, first_turn=start) if not whole else meta)


def convert_baize(rows: Iterable[Row], opts: ConvertOptions, stats: ConvertStats) -> Iterator[Conversation]:
    """Baize `{topic, input}` where `input` is a `[|Human|] ... [|AI|] ...` transcript.

    The preamble before the first `[|Human|]` and a trailing unanswered human turn are
    dropped (as open-instruct does).
    """
    source = opts.name("baize")
    for number, row in enumerate(rows):
        obj = row.object()
        transcript = row.text("input")
        messages: list[Message] = []
        for part in transcript.split("[|Human|]")[1:]:
            if "[|AI|]" not in part:
                continue
            human, _, ai = part.partition("[|AI|]")
            if "[|AI|]" in ai:
                raise row.error("input", "two [|AI|] turns without a [|Human|] turn between them")
            if not human.strip() or not ai.strip():
                stats.skip("empty turns")
                break
            messages += [Message("user", human.strip()), Message("assistant", ai.strip())]
        if not messages:
            stats.skip("transcripts without a [|Human|]/[|AI|] round")
            continue
        yield Conversation(f"{source}_{number}", messages, source, extra_meta(obj, ("input",)))


# --- OpenAssistant ------------------------------------------------------------------

OASST_ROLES = {"prompter": "user", "assistant": "assistant"}


def _oasst_rank(node: dict[str, Any]) -> tuple[float, float]:
    """Sort key, best first: human ranking (0 = best), then the quality label."""
    rank = node.get("rank")
    quality = ((node.get("labels") or {}).get("quality") or {}).get("value")
    return (rank if isinstance(rank, (int, float)) else float("inf"),
            -(quality if isinstance(quality, (int, float)) else 0.0))


def convert_oasst(rows: Iterable[Row], opts: ConvertOptions, stats: ConvertStats) -> Iterator[Conversation]:
    """OpenAssistant `*_ready.trees.jsonl`: one message tree per line under `prompt`.

    `oasst_mode="all"`: every path from the root to an assistant message (leaf or not), as
    open-instruct does. `"top"`: at each branching only the best-ranked reply is followed,
    so a tree yields one chain (and its assistant-ending prefixes). Deleted messages and
    their subtrees are skipped. Ids are the last assistant message's id.
    """
    source = opts.name("oasst1")
    top = opts.oasst_mode == "top"
    for row in rows:
        obj = row.object()
        root = row.get("prompt", dict)
        tree_id = obj.get("message_tree_id")
        # Iterative DFS (trees can be deep): (node, field name, path of messages so far)
        stack: list[tuple[dict[str, Any], str, list[Message]]] = [(root, "prompt", [])]
        while stack:
            node, name, path = stack.pop()
            if node.get("deleted") is True:
                stats.skip("deleted messages (with their replies)")
                continue
            role = row.text("role", obj=node, prefix=name + ".")
            if role not in OASST_ROLES:
                raise row.error(name + ".role", f"unknown role {role!r} (expected prompter or assistant)")
            text = row.text("text", obj=node, prefix=name + ".")
            expected = "user" if len(path) % 2 == 0 else "assistant"
            if OASST_ROLES[role] != expected:
                raise row.error(name + ".role", f"{role!r} message where a "
                                f"{'prompter' if expected == 'user' else 'assistant'} message was expected")
            if not text.strip():
                stats.skip("empty messages (with their replies)")
                continue
            path = path + [Message(OASST_ROLES[role], text)]
            if role == "assistant":
                mid = node.get("message_id")
                rid = f"{source}_{mid}" if isinstance(mid, str) and mid else f"{source}_{tree_id}_{name}"
                meta = {"message_tree_id": tree_id, "message_id": mid, "lang": node.get("lang")}
                yield Conversation(rid, list(path), source, {k: v for k, v in meta.items() if v is not None})
            replies = row.get("replies", list, obj=node, prefix=name + ".", required=False) or []
            children = []
            for i in range(len(replies)):
                children.append((row.member(replies, i, name + ".replies"), f"{name}.replies[{i}]"))
            live = [c for c in children if c[0].get("deleted") is not True]
            stats.skip("deleted messages (with their replies)", len(children) - len(live))
            if top and live:
                live = [min(live, key=lambda c: _oasst_rank(c[0]))]
            for child, child_name in reversed(live):
                stack.append((child, child_name, path))


SHAREGPT = Converter(convert_sharegpt, "conversation")
BAIZE = Converter(convert_baize, "conversation")
OASST = Converter(convert_oasst, "conversation")
