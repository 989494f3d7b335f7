"""Adapters: each schema on hand-written records and on the real public schemas when ../shared/data/real exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reasonpipe.pipeline.adapters import (
    AdaptError,
    adapt,
    boxed,
    detect_schema,
    raw_upstream_id,
    split_solution,
    upstream_id,
)

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def first(path: Path, n: int = 20) -> list[dict]:
    if not path.exists():
        pytest.skip(f"{path} not present")
    with path.open() as f:
        return [json.loads(next(f)) for _ in range(n)]


def assistant(meta: dict) -> dict:
    return [t for t in meta["turns"] if t["role"] == "assistant"][-1]


def test_messages_with_inline_think_and_system_turn():
    rec = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "<think>two plus two is four</think>The answer is \\boxed{4}."},
        ]
    }
    text, meta = adapt(rec, "messages", {})
    assert [t["role"] for t in meta["turns"]] == ["system", "user", "assistant"]
    assert assistant(meta) == {
        "role": "assistant",
        "content": "The answer is \\boxed{4}.",
        "reasoning": "two plus two is four",
    }
    assert meta["answer"] == "4" and meta["kind"] == "chat"
    assert "two plus two is four" in text and "<think>" not in text


def test_messages_sharegpt_and_separate_reasoning_field():
    rec = {
        "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello", "reasoning": "greet"}]
    }
    _, meta = adapt(rec, "messages", {})
    assert assistant(meta)["reasoning"] == "greet" and assistant(meta)["content"] == "Hello"


@pytest.mark.parametrize(
    "record, reason",
    [
        ([1, 2], "not_an_object"),
        ({"messages": "hi"}, "wrong_type"),
        ({"messages": [{"role": "user", "content": "q"}]}, "no_final_answer"),
        ({"messages": [{"role": "wizard", "content": "q"}]}, "unknown_role"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}], "x": 1}, "empty_text"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>x"}]},
            "unbalanced_think",
        ),
    ],
)
def test_messages_rejections(record, reason):
    with pytest.raises(AdaptError) as err:
        adapt(record, "messages", {})
    assert err.value.reason == reason


def test_gsm8k_answer_split():
    reasoning, answer, extracted = split_solution("Half of 48 is 24.\n24 + 48 = 72.\n#### 72")
    assert reasoning == "Half of 48 is 24.\n24 + 48 = 72." and answer == "#### 72" and extracted == "72"


def test_math_boxed_split_keeps_the_boxed_paragraph_as_answer():
    sol = "First, expand.\n\nThen simplify: $x = 3$.\n\nSo the answer is $\\boxed{\\frac{1}{2}}$."
    reasoning, answer, extracted = split_solution(sol)
    assert answer == "So the answer is $\\boxed{\\frac{1}{2}}$." and extracted == "\\frac{1}{2}"
    assert reasoning.endswith("$x = 3$.")
    assert boxed("no box") is None


def test_problem_solution_with_field_mapping_and_missing_field():
    rec = {"q": "What is 6*7?", "s": "6*7=42\n#### 42"}
    _, meta = adapt(rec, "problem_solution", {"problem": "q", "solution": "s"})
    assert meta["answer"] == "42" and assistant(meta)["reasoning"] == "6*7=42"
    with pytest.raises(AdaptError) as err:
        adapt({"q": "x"}, "problem_solution", {"problem": "q", "solution": "s"})
    assert err.value.reason == "missing_solution"


def test_prompt_completion_and_text():
    _, meta = adapt({"prompt": "Say hi", "completion": "<think>easy</think>hi"}, "prompt_completion", {})
    assert assistant(meta) == {"role": "assistant", "content": "hi", "reasoning": "easy"}
    text, meta = adapt({"content": "plain words", "language": "Python"}, "text", {"text": "content"})
    assert text == "plain words" and meta == {"kind": "text", "language": "python"}
    with pytest.raises(AdaptError):
        adapt({"text": "   "}, "text", {})


def test_real_gsm8k():
    recs = first(REAL / "math" / "gsm8k_train.jsonl")
    assert detect_schema(recs, {}) == "problem_solution"
    for rec in recs:
        _, meta = adapt(rec, "problem_solution", {})
        assert (
            assistant(meta)["content"].startswith("#### ")
            and meta["answer"] == rec["answer"].split("####")[-1].strip()
        )


def test_real_marco_o1_thought_output():
    recs = first(REAL / "reasoning" / "marco_o1_cot.jsonl")
    for rec in recs:
        _, meta = adapt(rec, detect_schema(recs, {}), {})
        turn = assistant(meta)
        assert turn["reasoning"] and "<Thought>" not in turn["reasoning"] and "<Output>" not in turn["content"]


def test_real_r1_samples_separate_thinking():
    recs = first(REAL / "reasoning" / "r1_samples_a.jsonl", 5)
    for rec in recs:
        _, meta = adapt(rec, detect_schema(recs, {}), {})
        assert assistant(meta)["reasoning"] == rec["message_thinking"].strip()
        assert meta["answer"] == rec["gtruth_answer"]


@pytest.mark.parametrize("name", ["humaneval.jsonl", "mbpp.jsonl", "leetcode_train.jsonl"])
def test_real_code_problems(name):
    recs = first(REAL / "code" / name, 10)
    schema = detect_schema(recs, {})
    assert schema == "problem_solution"
    for rec in recs:
        _, meta = adapt(rec, schema, {})
        assert meta["turns"][0]["role"] == "user" and assistant(meta)["content"]


def test_real_prose_is_text():
    recs = first(REAL / "prose" / "python_peps_paragraphs_6k.jsonl")
    assert detect_schema(recs, {}) == "text"


@pytest.mark.parametrize(
    "record, fields, expected",
    [
        ({"id": "gsm-17", "text": "t"}, {}, "gsm-17"),
        ({"uuid": "3f2a", "text": "t"}, {}, "3f2a"),
        ({"task_id": "HumanEval/0", "text": "t"}, {}, "HumanEval/0"),
        ({"problem_id": 1234, "text": "t"}, {}, "1234"),  # integer ids are kept as strings
        ({"question_id": "q", "unique_id": "u", "text": "t"}, {}, "q"),  # the first of ID_KEYS present
        ({"id": True, "idx": 5, "text": "t"}, {}, "5"),  # a boolean is not an id
        ({"id": {"nested": 1}, "text": "t"}, {}, None),
        ({"id": "", "text": "t"}, {}, None),
        ({"key": "k-9", "id": "other", "text": "t"}, {"id": "key"}, "k-9"),  # `fields: {id: key}` wins
        ({"id": "other", "text": "t"}, {"id": "key"}, None),  # mapped key absent: no id (counted by Adapt)
    ],
)
def test_upstream_id(record, fields, expected):
    assert upstream_id(record, fields) == expected


def test_adapt_step_keeps_upstream_ids_on_kept_and_rejected_records():
    from datatrove.data import Document

    from reasonpipe.pipeline.steps import Adapt

    step = Adapt({"a": ("text", {}), "b": ("text", {"id": "key"})})

    def doc(source, record):
        return Document(text="", id="x", metadata={"source": source, "domain": "web", "record": record})

    kept, empty, unmapped = (
        doc("a", {"id": 7, "text": "hi"}),
        doc("a", {"id": "e", "text": " "}),
        doc("b", {"text": "x"}),
    )
    assert step.filter(kept) is True and kept.metadata["upstream_id"] == "7" and "record" not in kept.metadata
    assert step.filter(empty) == (False, "empty_text") and empty.metadata["upstream_id"] == "e"
    assert step.filter(unmapped) is True and "upstream_id" not in unmapped.metadata
    assert step.stats["missing_upstream_id"].total == 1


def test_upstream_id_of_unreadable_lines():
    assert raw_upstream_id(b'{"id": "abc", "text": "broken', {}) == "abc"
    assert raw_upstream_id(b'{"text": "x", "uuid": 42, "more": [1,', {}) == "42"
    assert raw_upstream_id(b'{"key": "k\\"1", "id": "no"', {"id": "key"}) == 'k"1'
    assert raw_upstream_id(b"not json at all", {}) is None


def test_real_records_keep_their_ids():
    recs = first(REAL / "code" / "humaneval.jsonl", 5)
    assert [upstream_id(r, {}) for r in recs] == [r["task_id"] for r in recs]


@given(st.text(alphabet=st.sampled_from("a é\u0301\r\n\t\x00\x07\x1b\x7f\x0b\x0c\u00e9Z"), max_size=60))
@settings(max_examples=300, deadline=None)
def test_normalize_text_removes_controls_only_where_present(text):
    import unicodedata

    from reasonpipe.pipeline.steps import _CONTROL, normalize_text

    expected = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n")).translate(_CONTROL)
    assert normalize_text(text) == expected.rstrip()
    assert not any(ord(c) < 32 and c not in "\n\t" for c in normalize_text(text))
