"""Bad input never crashes a run: any JSON value in any field the adapters read, any arrow column type in
parquet/arrow/csv/hf_disk inputs, becomes a counted rejection with a reason (or is read, when it is a legitimate
encoding of text), and every rejection can be written to the exclusions."""

from __future__ import annotations

import csv
import gzip
import json
import math
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml
from datatrove.data import Document
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reasonpipe.filters.exclusions import exclusion_writer, json_safe
from reasonpipe.pipeline import splits
from reasonpipe.pipeline.adapters import ADAPTERS, AdaptError, adapt
from reasonpipe.pipeline.readers import InputReader, InputSource
from reasonpipe.pipeline.steps import Adapt, Normalize

ROOT = Path(__file__).resolve().parents[1]
KEYS = ["messages", "conversations", "problem", "question", "prompt", "solution", "answer", "response", "completion"]
KEYS += ["reasoning", "final_answer", "text", "content", "id", "uuid", "language", "code", "instruction"]

json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
message = st.dictionaries(
    st.sampled_from(["role", "from", "content", "value", "reasoning", "thinking"]),
    json_value | st.sampled_from(["user", "assistant", "system", "gpt", "human", "<think>a</think>b"]),
    max_size=5,
)
field_value = json_value | st.lists(message, max_size=4) | st.binary(max_size=20)
record = st.dictionaries(st.sampled_from(KEYS), field_value, max_size=7)


def check_sample(text: str, meta: dict) -> None:
    """What every adapted sample must look like, whatever the record held."""
    assert isinstance(text, str)
    if meta["kind"] == "chat":
        for turn in meta["turns"]:
            assert turn["role"] in ("system", "user", "assistant") and isinstance(turn["content"], str)
            assert turn["reasoning"] is None or isinstance(turn["reasoning"], str)
        assert isinstance(meta.get("answer", ""), str)
    orjson.dumps(meta)  # canonical documents are written with plain orjson


@settings(max_examples=300, deadline=None)
@given(record, st.sampled_from(sorted(ADAPTERS)))
def test_adapters_never_crash_on_any_value(rec, schema):
    try:
        text, meta = adapt(rec, schema, {})
    except AdaptError as err:
        assert err.reason and str(err)
        orjson.dumps(json_safe({"record": rec, "filter_detail": str(err)}))  # the exclusion record is writable
        return
    check_sample(text, meta)


@pytest.mark.parametrize(
    "rec, reason, detail",
    [
        ({"messages": [{"role": "user", "content": 5}]}, "wrong_type", "messages[0].content is int"),
        ({"messages": [{"role": ["user"], "content": "q"}]}, "wrong_type", "messages[0].role is list"),
        ({"messages": [{"content": "q"}]}, "unknown_role", "messages[0] has no role"),
        ({"messages": [{"role": "user", "content": b"\xff"}]}, "invalid_utf8", "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "image"}]}]}, "non_text_content", "image"),
        ({"messages": {"role": "user"}}, "wrong_type", "found dict"),
        ({"problem": "q", "solution": "s", "reasoning": 3.5}, "wrong_type", "reasoning is float"),
        ({"problem": "q", "solution": "s", "answer": {"a": 1}}, "wrong_type", "answer is dict"),
        ({"problem": "q", "solution": "s", "answer": float("nan")}, "wrong_type", "answer is nan"),
        ({"problem": True, "solution": "s"}, "wrong_type", "problem is bool"),
        ({"text": ["a", "b"]}, "wrong_type", "text is list"),
    ],
)
def test_wrong_types_are_rejected_with_the_field_named(rec, reason, detail):
    schema = "messages" if "messages" in rec else "text" if "text" in rec else "problem_solution"
    with pytest.raises(AdaptError) as err:
        adapt(rec, schema, {})
    assert err.value.reason == reason and detail in str(err.value)


def test_legitimate_encodings_of_text_are_read():
    parts = [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}]
    chat = {"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": b"<think>x</think>4"}]}
    _, meta = adapt(chat, "messages", {})
    assert meta["turns"][0]["content"] == "What is 2+2?" and meta["turns"][1] == {
        "role": "assistant",
        "content": "4",
        "reasoning": "x",
    }
    as_json = {"messages": json.dumps([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])}
    assert adapt(as_json, "messages", {})[1]["turns"][1]["content"] == "yo"  # csv cells hold JSON
    _, meta = adapt({"question": "6*7?", "solution": "6*7=42", "answer": 42}, "problem_solution", {})
    assert meta["answer"] == "42"
    _, meta = adapt({"question": "x?", "solution": "y", "answer": Decimal("0.50")}, "problem_solution", {})
    assert meta["answer"] == "0.50"
    assert adapt({"text": b"plain"}, "text", {})[0] == "plain"
    none_system = {"messages": [{"role": "system", "content": None}, {"role": "user", "content": "q"}]}
    none_system["messages"].append({"role": "assistant", "content": "a"})
    assert adapt(none_system, "messages", {})[1]["turns"][0]["content"] == ""


def test_exclusions_are_writable_whatever_the_record_held(tmp_path):
    held = {
        "bytes": b"\x00\xffraw",
        "decimal": Decimal("12.50"),
        "when": datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
        "big": 1 << 80,
        "nan": math.nan,
        "bad_unicode": "caf\udce9",
        3: ("tuple", {1, 2}),
        "nested": [{"b": bytearray(b"\x01")}],
    }
    writer = exclusion_writer(str(tmp_path))
    with writer:
        writer.write(Document(text="x", id="a", metadata={"record": held, "filter_reason": "wrong_type"}), 0)
    (doc,) = read_exclusions(tmp_path)
    rec = doc["metadata"]["record"]
    assert rec["bytes"] == {"$base64": "AP9yYXc="} and rec["decimal"] == "12.50" and rec["big"] == str(1 << 80)
    assert rec["when"] == "2024-05-01T12:30:00+00:00" and rec["nan"] is None and rec["bad_unicode"] == "caf?"
    assert rec["3"] == ["tuple", [1, 2]] and rec["nested"] == [{"b": {"$base64": "AQ=="}}]


def test_exclusion_records_equal_datatrove_adapter_output():
    from datatrove.data import Media
    from datatrove.pipeline.writers.disk_base import DiskWriter

    writer = exclusion_writer("unused")
    nested = {"turns": [{"role": "user", "content": "q"}], "n": (1, 2), "empty": {}, "when": datetime(2024, 1, 2)}
    docs = [
        Document(text="t", id="a", metadata=nested),
        Document(text="", id="b", metadata={}),  # falsy fields are left out, as datatrove does
        Document(text="t", id="", metadata={"x": 0}),
        Document(text="t", id="c", media=[Media(id="m", type=0, url="u", media_bytes=b"\x01")], metadata={"k": 1}),
    ]
    for doc in docs:
        expected = json_safe(DiskWriter._default_adapter(writer, doc))
        assert writer._default_adapter(doc) == expected
        assert list(writer._default_adapter(doc)) == list(expected)  # same key order in the file


def read_exclusions(folder: Path) -> list[dict]:
    """Every exclusion record under `folder` (datatrove's reader would skip those with an empty text)."""
    records = []
    for path in sorted(folder.rglob("*.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            records += [json.loads(line) for line in f]
    return records


# ---------------------------------------------------------------------------------- readers + adapt, in process
def read_adapt_normalize(path: Path, fmt: str, tmp_path: Path, tasks: int = 2) -> dict:
    """Every schema over one file: counts per step and the exclusions, through the real steps (index run first)."""
    root = str(path.parent)
    sources = [InputSource(schema, fmt, (str(path),), root, schema, "web") for schema in sorted(ADAPTERS)]
    excl = tmp_path / f"excl-{fmt}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(splits, "MIN_PIECE", 256)  # split even these small files: parts, index, csv fallback
        reader = InputReader(sources, None, exclusion_writer(str(excl / "read")), tasks, str(tmp_path / f"i-{fmt}"))
    if (index := reader.index_step()) is not None:
        for rank in range(tasks):
            list(index.run(None, rank, tasks))
    adapt_step = Adapt({s.name: (s.schema, s.fields) for s in sources}, exclusion_writer(str(excl / "adapt")))
    normalize = Normalize(exclusion_writer(str(excl / "normalize")))
    kept, ids = [], []
    for rank in range(tasks):
        read = list(reader.run(None, rank, tasks))
        ids += [d.id for d in read]
        kept += list(normalize.run(adapt_step.run(iter(read), rank, tasks), rank, tasks))
    assert len(ids) == len(set(ids))  # no record read twice, whatever the split
    counts = {}
    for name, step in (("read", reader), ("adapt", adapt_step), ("normalize", normalize)):
        stats = {k: v.total for k, v in step.stats.stats.items()}
        dropped = sum(v for k, v in stats.items() if k.startswith("dropped_"))
        assert stats.get("total", 0) == stats.get("forwarded", 0) + dropped, (name, stats)  # read = kept + rejected
        counts[name] = stats
    excluded = read_exclusions(excl)
    assert all(e["metadata"]["filter_reason"] for e in excluded)
    dropped_total = sum(v for c in counts.values() for k, v in c.items() if k.startswith("dropped_"))
    assert len(excluded) == dropped_total  # every rejection is in the exclusions
    for doc in kept:
        check_sample(doc.text, {"kind": "text", **doc.metadata})
    return {"counts": counts, "kept": kept, "excluded": excluded}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(record | json_value | st.binary(max_size=30), min_size=1, max_size=25))
def test_jsonl_of_arbitrary_values_is_read_adapted_or_rejected(tmp_path_factory, values):
    tmp_path = tmp_path_factory.mktemp("jsonl")
    lines = []
    for v in values:
        if isinstance(v, bytes):
            lines.append(v.replace(b"\n", b" "))  # a raw line: invalid UTF-8, not JSON...
        else:
            lines.append(orjson.dumps(json_safe(v)))
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = read_adapt_normalize(path, "jsonl", tmp_path)
    non_blank = sum(1 for line in lines if line.strip())
    assert result["counts"]["read"].get("total", 0) == len(ADAPTERS) * non_blank


ARROW_TYPES = {
    "binary": (pa.binary(), st.binary(max_size=12) | st.just(b"text as bytes")),
    "large_binary": (pa.large_binary(), st.binary(max_size=12)),
    "large_string": (pa.large_string(), st.text(max_size=12)),
    "string": (pa.string(), st.none() | st.text(max_size=12)),
    "dictionary": (pa.dictionary(pa.int32(), pa.string()), st.sampled_from(["user", "assistant", "a", "b"])),
    "struct": (pa.struct([("a", pa.int64()), ("b", pa.string())]), st.fixed_dictionaries({"a": st.integers(0, 9)})),
    "list": (pa.list_(pa.string()), st.lists(st.text(max_size=5), max_size=3)),
    "timestamp": (pa.timestamp("s"), st.integers(-(10**12), 10**12)),  # beyond year 9999 too
    "timestamp_tz": (pa.timestamp("ns", tz="UTC"), st.integers(0, 10**18)),
    "decimal": (pa.decimal128(10, 2), st.decimals(-(10**7), 10**7, places=2, allow_nan=False)),
    "null": (pa.null(), st.none()),
    "date": (pa.date32(), st.integers(-(10**5), 10**5)),
    "duration": (pa.duration("s"), st.integers(-(10**9), 10**9)),
    "map": (pa.map_(pa.string(), pa.int64()), st.lists(st.tuples(st.text(max_size=3), st.integers(0, 5)), max_size=2)),
    "bool": (pa.bool_(), st.booleans()),
    "float": (pa.float64(), st.floats()),
    "messages": (
        pa.list_(pa.struct([("role", pa.string()), ("content", pa.binary())])),
        st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": st.binary()})),
    ),
}


@st.composite
def arrow_table(draw) -> pa.Table:
    n = draw(st.integers(1, 12))
    columns = {}
    names = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=5, unique=True))
    for name in names:
        arrow_type, values = ARROW_TYPES[draw(st.sampled_from(sorted(ARROW_TYPES)))]
        raw = draw(st.lists(values, min_size=n, max_size=n))
        if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type) or pa.types.is_duration(arrow_type):
            storage = {"timestamp": pa.int64(), "date": pa.int32(), "duration": pa.int64()}
            kind = (
                "timestamp"
                if pa.types.is_timestamp(arrow_type)
                else "date"
                if arrow_type == pa.date32()
                else "duration"
            )
            columns[name] = pa.array(raw, storage[kind]).cast(arrow_type)
        elif pa.types.is_dictionary(arrow_type):
            columns[name] = pa.array(raw).dictionary_encode()
        else:
            columns[name] = pa.array(raw, arrow_type)
    return pa.table(columns)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrow_table(), st.sampled_from(["parquet", "arrow", "arrow_stream", "csv"]))
def test_any_arrow_column_type_is_read_adapted_or_rejected(tmp_path_factory, table, fmt):
    tmp_path = tmp_path_factory.mktemp("arrow")
    path = tmp_path / f"in.{fmt.split('_')[0]}"
    if fmt == "parquet":
        pq.write_table(table, path, row_group_size=3)
    elif fmt == "arrow":
        with pa.ipc.new_file(str(path), table.schema) as w:
            w.write_table(table, max_chunksize=4)
    elif fmt == "arrow_stream":
        with pa.ipc.new_stream(str(path), table.schema) as w:
            w.write_table(table, max_chunksize=4)
    else:
        try:
            pacsv.write_csv(table, path)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # what csv cannot hold (nested, binary): no file
            return
    result = read_adapt_normalize(path, fmt.split("_")[0], tmp_path)
    rows = table.num_rows
    if fmt == "csv":  # an all-empty row is a blank line, not a record
        with open(path, newline="") as f:
            rows = sum(1 for row in list(csv.reader(f))[1:] if row)
    assert result["counts"]["read"].get("total", 0) == len(ADAPTERS) * rows


def test_binary_and_large_string_text_columns_are_read_as_text(tmp_path):
    table = pa.table(
        {
            "id": pa.array([7, 8], pa.int64()),
            "text": pa.array([b"first document", b"\xffnot utf-8"], pa.binary()),
            "content": pa.array(["a", "b"], pa.large_string()),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    source = InputSource("t", "parquet", (str(path),), str(tmp_path), "text", "web")
    step = Adapt({"t": ("text", {})}, exclusion_writer(str(tmp_path / "excl")))
    kept = list(step.run(InputReader([source]).run(None, 0, 1)))
    assert [(d.text, d.metadata["upstream_id"]) for d in kept] == [("first document", "7")]
    (rejected,) = read_exclusions(tmp_path / "excl")
    meta = rejected["metadata"]
    assert meta["filter_reason"] == "invalid_utf8" and meta["upstream_id"] == "8"
    assert meta["record"]["text"] == {"$base64": "/25vdCB1dGYtOA=="} and "text holds bytes" in meta["filter_detail"]


def test_hf_disk_with_odd_columns(tmp_path):
    import datasets

    table = pa.table(
        {
            "question": ["q1", "q2", None],
            "answer": pa.array([Decimal("1.5"), Decimal("2"), Decimal("3")], pa.decimal128(5, 2)),
            "solution": pa.array([b"s1 \\boxed{1}", b"\xfe", b"s3"], pa.binary()),
            "when": pa.array([0, 1, 2], pa.int64()).cast(pa.timestamp("s")),
        }
    )
    datasets.Dataset(table).save_to_disk(str(tmp_path / "ds"))
    result = read_adapt_normalize(tmp_path / "ds", "hf_disk", tmp_path, tasks=1)
    reasons = sorted(
        e["metadata"]["filter_reason"] for e in result["excluded"] if e["metadata"]["source"] == "problem_solution"
    )
    assert result["counts"]["read"]["total"] == 3 * len(ADAPTERS)
    solved = [d for d in result["kept"] if d.metadata["source"] == "problem_solution"]
    assert [d.metadata["answer"] for d in solved] == ["1.50"]
    assert reasons == ["invalid_utf8", "missing_problem"]  # the binary solution \xfe; the null question


# --------------------------------------------------------------------------------------------------- end to end
def test_a_run_over_bad_inputs_counts_everything_and_keeps_upstream_ids(tmp_path):
    """`reasonpipe run` on inputs full of wrong types: exit 0, exact accounting, upstream ids in the exclusions."""
    data = tmp_path / "data"
    data.mkdir()
    good = [
        {
            "uuid": f"u{i}",
            "question": f"What is {i} + {i}? Explain each step.",
            "answer": f"{i}+{i}={2 * i}.\n#### {2 * i}",
        }
        for i in range(40)
    ]
    bad = [
        {"uuid": "b1", "question": 5, "answer": "x"},
        {"uuid": "b2", "question": "q", "answer": ["#### 1"], "reasoning": {"x": 1}},
    ]
    lines = [orjson.dumps(r) for r in good + bad] + [b'{"uuid": "m1", "question": "broken', b"\xff\xfe"]
    (data / "qa.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    table = pa.table(
        {
            "id": pa.array(range(30), pa.int64()),
            "text": pa.array(
                [f"Paragraph {i} about numbers and words, long enough to keep. " * 3 for i in range(29)] + [None]
            ),
            "blob": pa.array([b"\x00\x01"] * 30, pa.binary()),
            "price": pa.array([Decimal("1.25")] * 30, pa.decimal128(6, 2)),
        }
    )
    pq.write_table(table, data / "docs.parquet", row_group_size=7)
    manifest = {
        "name": "bad",
        "inputs": [
            {"name": "qa", "path": "data/qa.jsonl", "schema": "problem_solution", "domain": "math"},
            {"name": "docs", "path": "data/docs.parquet", "schema": "text", "domain": "web"},
        ],
        "stages": [{"exact_dedup": {}}],
        "tokenizer": {"train": {"vocab_size": 512}},
        "trim": {"context": 128},
        "pack": {"seq_len": 128},
        "output": {"path": "out"},
        "executor": {"kind": "local", "tasks": 2, "workers": 1},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(manifest))
    proc = subprocess.run(
        [sys.executable, "-m", "reasonpipe.pipeline.cli", "run", str(path)], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    rows = {row["label"]: row for row in index["stages"]}
    assert rows["read"]["read"] == len(lines) + 30 and rows["read"]["rejected"] == {
        "invalid_utf8": 1,
        "malformed_json": 1,
    }
    assert rows["adapt"]["rejected"] == {"missing_text": 1, "wrong_type": 2}
    assert rows["normalize"]["rejected"] == {} and rows["adapt"]["kept"] == 40 + 29
    excluded = read_exclusions(tmp_path / "out" / "exclusions")
    by_reason = {(e["metadata"]["filter_reason"], e["metadata"].get("upstream_id")) for e in excluded}
    assert {("wrong_type", "b1"), ("wrong_type", "b2"), ("malformed_json", "m1")} <= by_reason
    assert ("missing_text", "29") in by_reason  # the parquet row with a null text: adapt rejects it, id kept
