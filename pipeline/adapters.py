"""Adapters: raw records of common public schemas -> the canonical sample (see sample.py, `reasonpipe.sample`).

Pure functions: `adapt(record, schema, fields) -> (text, metadata)` or `AdaptError(reason)`. Schemas:
- messages: chat `messages` (or ShareGPT `conversations` with from/value); reasoning as `<think>...</think>` (or
  Marco-o1 `<Thought>...</Thought><Output>...</Output>`) inside assistant content, or a separate field.
- problem_solution: a problem and a solution; the final answer from an explicit field, GSM8K `#### n` or `\\boxed{}`.
- prompt_completion: a prompt and a completion (which may hold think tags).
- text: plain text.
`fields` maps canonical names (messages, problem, solution, reasoning, answer, prompt, completion, text, id) to keys;
`gold` names a record key holding the gold answer of the problem, kept as `metadata["gold"]` (for `answer_verify`).

Values of any type never crash an adapter: text fields take strings, UTF-8 bytes (binary columns) and null (empty);
a message's content may also be a list of text parts (`[{"type": "text", "text": ...}]`); `messages` may be a JSON
string (csv inputs); an explicit answer may be a number. Anything else is an `AdaptError` (`wrong_type`,
`invalid_utf8`, ...) whose message names the field and the type found.

A record's own id (`upstream_id`: the `id` field mapping, else the first of ID_KEYS present) is kept as a string.
"""

from __future__ import annotations

import functools
import math
import re
from decimal import Decimal
from typing import Any

import orjson

from reasonpipe.filters.answers import boxed
from reasonpipe.sample import render_text

CANDIDATES: dict[str, tuple[str, ...]] = {
    "messages": ("messages", "conversations", "conversation", "dialog"),
    "problem": ("problem", "question", "instruction", "query", "input", "prompt", "text"),
    "solution": (
        "solution",
        "response",
        "output",
        "message_content",
        "answer",
        "solutions",
        "canonical_solution",
        "code",
        "completion",
    ),
    "reasoning": ("reasoning", "reasoning_content", "thinking", "message_thinking", "thought", "cot"),
    "answer": ("final_answer", "gtruth_answer", "answer"),
    "prompt": ("prompt", "input", "question"),
    "completion": ("completion", "output", "response"),
    "text": ("text", "content"),
}
ID_KEYS = ("id", "uuid", "_id", "task_id", "problem_id", "question_id", "unique_id", "sample_id", "example_id", "idx")
ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}
ROLES |= {"model": "assistant", "bot": "assistant"}

THINK = re.compile(r"<think>(.*?)</think>", re.S)
THOUGHT = re.compile(r"<Thought>(.*?)</Thought>", re.S)
OUTPUT = re.compile(r"<Output>(.*?)(?:</Output>|$)", re.S)
GSM_ANSWER = re.compile(r"\n?####\s*(.+?)\s*$", re.S)


class AdaptError(ValueError):
    """A record that cannot become a canonical sample; `reason` is its counted rejection reason."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str | bytes) and not value)


def _get(record: dict, name: str, fields: dict[str, str], required: bool = True, skip: tuple = ()) -> Any:
    """The record's value for canonical field `name`: the mapped key, else the first candidate key present."""
    if name in fields:
        key = fields[name]
        if key not in record:
            if required:
                raise AdaptError(f"missing_{name}", f"mapped key {key!r} not in record")
            return None
        return record[key]
    for key in CANDIDATES[name]:
        if key in record and key not in skip and _present(record[key]):
            return record[key]
    if required:
        raise AdaptError(f"missing_{name}", f"none of {CANDIDATES[name]} in record")
    return None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _text(value: Any, name: str) -> str:
    """A text field: a string, UTF-8 bytes, or null (empty); a list of text parts for message content."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise AdaptError("invalid_utf8", f"{name} holds bytes that are not UTF-8") from None
    if isinstance(value, list) and name.endswith("content") and all(isinstance(p, dict) for p in value):
        parts = []
        for part in value:  # OpenAI-style content parts: text only
            if part.get("type", "text") != "text" or "text" not in part:
                raise AdaptError("non_text_content", f"{name} has a {part.get('type')!r} part")
            parts.append(_text(part["text"], name))
        return "".join(parts)
    raise AdaptError("wrong_type", f"{name} is {_kind(value)}, expected a string")


def _first(value: Any) -> Any:
    """Several reference solutions/answers (a list of strings): the first."""
    return value[0] if isinstance(value, list) and value and all(isinstance(v, str) for v in value) else value


def _scalar_text(value: Any, name: str) -> str:
    """An answer may also be a finite number (`answer: 72`)."""
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        if not (value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)):
            raise AdaptError("wrong_type", f"{name} is {value}, expected a string or a finite number")
        return str(value)
    return _text(value, name)


def _id_value(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int | bytes):
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return str(value) if str(value).strip() else None


def upstream_id(record: Any, fields: dict[str, str]) -> str | None:
    """The record's own id as a string (`fields["id"]`, else the first of ID_KEYS with a string/integer value)."""
    if not isinstance(record, dict):
        return None
    if "id" in fields:
        return _id_value(record.get(fields["id"]))
    for key in ID_KEYS:
        if (value := _id_value(record.get(key))) is not None:
            return value
    return None


@functools.lru_cache(maxsize=64)
def _raw_id_pattern(keys: tuple[str, ...]) -> re.Pattern:
    names = b"|".join(re.escape(k.encode()) for k in keys)
    return re.compile(rb'"(?:%s)"\s*:\s*("(?:[^"\\\n]|\\.){1,200}"|-?\d{1,40})[\s,}]' % names)


def raw_upstream_id(raw: bytes, fields: dict[str, str]) -> str | None:
    """Best effort for a line that is not a readable record (malformed, too large): the first `"<id key>": value`
    in its first 64 KiB, when it is a JSON string or integer."""
    pattern = _raw_id_pattern((fields["id"],) if "id" in fields else ID_KEYS)
    if (m := pattern.search(raw[: 64 << 10])) is None:
        return None
    try:
        return _id_value(orjson.loads(m.group(1)))
    except orjson.JSONDecodeError:
        return None


def split_reasoning(text: str) -> tuple[str | None, str]:
    """Separate reasoning from the answer in assistant text: `<think>` or Marco-o1 `<Thought>/<Output>` tags."""
    if (m := THINK.search(text)) is not None:
        answer = (text[: m.start()] + text[m.end() :]).strip()
        return m.group(1).strip(), answer
    if text.lstrip().startswith("<think>") and "</think>" not in text:
        raise AdaptError("unbalanced_think", "<think> without </think>")
    if (m := THOUGHT.search(text)) is not None:
        out = OUTPUT.search(text, m.end())
        answer = out.group(1).strip() if out else text[m.end() :].strip()
        return m.group(1).strip(), answer
    return None, text.strip()


def split_solution(solution: str) -> tuple[str | None, str, str | None]:
    """Split a worked solution into (reasoning, answer text, extracted answer).

    GSM8K: everything before `#### n` is reasoning, `#### n` the answer. MATH: the paragraph (or sentence) holding the
    last `\\boxed{}` is the answer, what precedes it the reasoning. Otherwise the whole solution is the answer.
    """
    reasoning, answer = split_reasoning(solution)
    if reasoning is not None:
        return reasoning, answer, boxed(answer)
    if (m := GSM_ANSWER.search(solution)) is not None:
        return solution[: m.start()].strip() or None, f"#### {m.group(1)}", m.group(1)
    if (pos := solution.rfind("\\boxed")) >= 0:
        cut = solution.rfind("\n\n", 0, pos)
        if cut < 0:
            cut = max(solution.rfind(". ", 0, pos) + 1, 0)
        reasoning, answer = solution[:cut].strip(), solution[cut:].strip()
        return reasoning or None, answer, boxed(answer)
    return None, solution.strip(), None


def _chat(turns: list[dict], answer: str | None) -> tuple[str, dict]:
    if not any(t["role"] == "assistant" for t in turns):
        raise AdaptError("no_assistant_turn")
    if not any(t["role"] == "user" for t in turns):
        raise AdaptError("no_user_turn")
    meta = {"kind": "chat", "turns": turns}
    if answer:
        meta["answer"] = answer
    return render_text(turns), meta


def _messages(record: dict, fields: dict[str, str]) -> list:
    messages = _get(record, "messages", fields)
    if isinstance(messages, str | bytes) and messages.lstrip()[:1] in ("[", b"["):
        try:
            messages = orjson.loads(messages)  # a JSON-encoded list (csv inputs)
        except orjson.JSONDecodeError:
            raise AdaptError("wrong_type", "messages is a string that is not a JSON list") from None
    if not isinstance(messages, list) or not messages:
        raise AdaptError("wrong_type", f"messages must be a non-empty list, found {_kind(messages)}")
    return messages


def adapt_messages(record: dict, fields: dict[str, str]) -> tuple[str, dict]:
    turns, answer = [], None
    for i, m in enumerate(_messages(record, fields)):
        if not isinstance(m, dict):
            raise AdaptError("wrong_type", f"messages[{i}] is {_kind(m)}, expected an object")
        raw_role = m.get("role", m.get("from"))
        if raw_role is None:
            raise AdaptError("unknown_role", f"messages[{i}] has no role")
        if not isinstance(raw_role, str):
            raise AdaptError("wrong_type", f"messages[{i}].role is {_kind(raw_role)}, expected a string")
        if (role := ROLES.get(raw_role.lower())) is None:
            raise AdaptError("unknown_role", f"messages[{i}].role is {raw_role[:100]!r}")
        content = _text(m.get("content", m.get("value")), f"messages[{i}].content")
        reasoning = None
        for key in ("reasoning", "reasoning_content", "thinking"):
            reasoning = reasoning or _text(m.get(key), f"messages[{i}].{key}") or None
        if role == "assistant":
            inline, content = split_reasoning(content)
            reasoning = reasoning or inline
            answer = boxed(content) or answer
        turns.append({"role": role, "content": content.strip(), "reasoning": reasoning})
    if turns[-1]["role"] != "assistant":
        raise AdaptError("no_final_answer", "the conversation does not end with an assistant turn")
    if not turns[-1]["content"]:
        raise AdaptError("empty_text", "the final answer is empty")
    return _chat(turns, answer)


def adapt_problem_solution(record: dict, fields: dict[str, str]) -> tuple[str, dict]:
    problem = _text(_get(record, "problem", fields), "problem").strip()
    # prefer a worked solution over a bare `answer` field; fall back to `answer` (GSM8K keeps its work there)
    raw = _get(record, "solution", fields, required=False, skip=("answer",)) or _get(record, "solution", fields)
    solution = _text(_first(raw), "solution")
    separate = _text(_get(record, "reasoning", fields, required=False), "reasoning").strip()
    if separate:
        reasoning, answer_text = separate, solution.strip()
        extracted = boxed(answer_text)
    else:
        reasoning, answer_text, extracted = split_solution(solution)
    explicit = _get(record, "answer", fields, required=False)
    if explicit is not None and explicit is not raw:  # not the field the solution came from
        extracted = _scalar_text(_first(explicit), "answer").strip() or extracted
    if not problem or not answer_text:
        raise AdaptError("empty_text", "problem or answer is empty")
    turns = [{"role": "user", "content": problem, "reasoning": None}]
    turns.append({"role": "assistant", "content": answer_text, "reasoning": reasoning})
    return _chat(turns, extracted)


def adapt_prompt_completion(record: dict, fields: dict[str, str]) -> tuple[str, dict]:
    prompt = _text(_get(record, "prompt", fields), "prompt").strip()
    completion = _text(_get(record, "completion", fields, skip=("input",)), "completion")
    reasoning, answer = split_reasoning(completion)
    if not prompt or not answer:
        raise AdaptError("empty_text", "prompt or completion is empty")
    turns = [{"role": "user", "content": prompt, "reasoning": None}]
    turns.append({"role": "assistant", "content": answer, "reasoning": reasoning})
    return _chat(turns, boxed(answer))


def adapt_text(record: dict, fields: dict[str, str]) -> tuple[str, dict]:
    text = _text(_get(record, "text", fields), "text")
    if not text.strip():
        raise AdaptError("empty_text")
    meta: dict[str, Any] = {"kind": "text"}
    if isinstance(record.get("language"), str):
        meta["language"] = record["language"].lower()  # code documents: their programming language
    return text, meta


ADAPTERS = {
    "messages": adapt_messages,
    "problem_solution": adapt_problem_solution,
    "prompt_completion": adapt_prompt_completion,
    "text": adapt_text,
}


def detect_schema(records: list[Any], fields: dict[str, str]) -> str:
    """Pick the schema that adapts the most of the first records (ties: the order of ADAPTERS)."""
    if "messages" in fields:
        return "messages"
    best, best_ok = "text", -1
    for schema in ("messages", "prompt_completion", "problem_solution", "text"):
        ok = 0
        for record in records:
            if not isinstance(record, dict):
                continue
            if schema == "prompt_completion" and not {"prompt", "completion"} & set(record) - {"input"}:
                continue
            try:
                ADAPTERS[schema](record, fields)
                ok += 1
            except AdaptError:
                pass
        if ok > best_ok:
            best, best_ok = schema, ok
    return best


def adapt(record: Any, schema: str, fields: dict[str, str]) -> tuple[str, dict]:
    if not isinstance(record, dict):
        raise AdaptError("not_an_object", f"record is a {type(record).__name__}")
    text, meta = ADAPTERS[schema](record, fields)
    if "gold" in fields and record.get(fields["gold"]) not in (None, ""):
        meta["gold"] = str(record[fields["gold"]])
    return text, meta
