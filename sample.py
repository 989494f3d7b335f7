"""The canonical sample: accessors over a datatrove `Document`'s metadata.

A plain document has only `text`. A conversational/reasoning sample (`metadata["kind"] == "chat"`) carries
`metadata["turns"]`: a list of `{"role": "system"|"user"|"assistant", "content": str, "reasoning": str | None}` where
an assistant's `content` is its answer without think tags and `reasoning` the trace without tags. `doc.text` of a chat
sample is `render_text(turns)`, the plain view that filters and dedup work on.

Other metadata every sample carries: `source` (input name), `domain`, `kind` ("chat" or absent). Chat samples also
carry `problem_key` (hex hash of the normalised problem: traces of one problem share it; problem dedup gives all the
traces of a near-duplicate problem group one key), used for validation routing and grouping traces by problem. A
record's own id, when it has one (`id`, `uuid`, `task_id`, ... or `fields: {id: ...}`), is kept as `upstream_id`.
"""

from __future__ import annotations

from typing import Any

Turn = dict[str, Any]


def is_chat(doc) -> bool:
    return doc.metadata.get("kind") == "chat"


def turns(doc) -> list[Turn]:
    return doc.metadata.get("turns") or [] if is_chat(doc) else []


def render_text(turns: list[Turn]) -> str:
    """Plain rendering of a conversation: each turn's reasoning (if any) then its content, blank-line separated."""
    parts = []
    for turn in turns:
        if turn.get("reasoning"):
            parts.append(turn["reasoning"])
        if turn.get("content"):
            parts.append(turn["content"])
    return "\n\n".join(parts)


def problem_text(doc) -> str:
    """The problem a sample answers: its first user turn; a plain document's whole text."""
    for turn in turns(doc):
        if turn["role"] == "user":
            return turn["content"]
    return doc.text


def reasoning_text(doc) -> str:
    """All reasoning of a sample, turns joined by blank lines ("" when there is none)."""
    return "\n\n".join(t["reasoning"] for t in turns(doc) if t["role"] == "assistant" and t.get("reasoning"))


def final_answer_text(doc) -> str:
    """The last assistant turn's content (its answer); "" when the sample has no assistant turn."""
    for turn in reversed(turns(doc)):
        if turn["role"] == "assistant":
            return turn.get("content") or ""
    return ""
