"""Adapters: raw records of common public schemas -> the canonical sample (see sample.py, `reasonpipe.sample`).

Pure functions: `adapt(record, schema, fields) -> (text, metadata)` or `AdaptError(reason)`. Schemas:
- messages: chat `messages` (or ShareGPT `conversations` with from/value); reasoning as `<think>...</think>` (or
  Marco-o1 `<Thought>...</Thought><Output>...</Output>`) inside assistant content, or a separate field.
- problem_solution: a problem and a solution; the final answer from an explicit field, GSM8K `#### n` or `\\boxed{}`.
- prompt_completion: a prompt and a completion (which may hold think tags).
- text: plain text.
`fields` maps canonical names (messages, problem, solution, reasoning, answer, prompt, completion, text) to keys;
`gold` names a record key holding the gold answer of the problem, kept as `metadata["gold"]` (for `answer_verify`).
"""

from __future__ import annotations

import re
from typing import Any

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
        if key in record and key not in skip and record[key] not in (None, ""):
            return record[key]
    if required:
        raise AdaptError(f"missing_{name}", f"none of {CANDIDATES[name]} in record")
    return None


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise AdaptError("wrong_type", f"{name} is {type(value).__name__}, expected a string")
    return value


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


def adapt_messages(record: dict, fields: dict[str, str]) -> tuple[str, dict]:
    messages = _get(record, "messages", fields)
    if not isinstance(messages, list) or not messages:
        raise AdaptError("wrong_type", "messages must be a non-empty list")
    turns, answer = [], None
    for m in messages:
        if not isinstance(m, dict):
            raise AdaptError("wrong_type", "each message must be an object")
        role = ROLES.get(str(m.get("role", m.get("from", ""))).lower())
        if role is None:
            raise AdaptError("unknown_role", str(m.get("role", m.get("from"))))
        content = _text(m.get("content", m.get("value", "")), "message content")
        reasoning = m.get("reasoning") or m.get("reasoning_content") or m.get("thinking")
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
    solution = _get(record, "solution", fields, required=False, skip=("answer",)) or _get(record, "solution", fields)
    if isinstance(solution, list) and solution and all(isinstance(s, str) for s in solution):
        solution = solution[0]  # several reference solutions: keep the first
    solution = _text(solution, "solution")
    separate = _get(record, "reasoning", fields, required=False)
    if separate:
        reasoning, answer_text, extracted = _text(separate, "reasoning").strip(), solution.strip(), None
        extracted = boxed(answer_text)
    else:
        reasoning, answer_text, extracted = split_solution(solution)
    explicit = _get(record, "answer", fields, required=False)
    if isinstance(explicit, str | int | float) and explicit is not solution and str(explicit).strip():
        extracted = str(explicit).strip()
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
