"""Reading inputs: split plans, line-aligned byte ranges, ids independent of the task count, balanced tasks that read
only their own share, and read errors in the middle of a file (everything before them kept and counted)."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from reasonpipe.pipeline import readers, splits
from reasonpipe.pipeline.readers import BadRecord, InputReader, InputSource, iter_lines, iter_records
from reasonpipe.pipeline.splits import STRIPES, InputFile, plan_pieces

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def source(path: Path | list[Path], fmt: str, name: str = "in", **kw) -> InputSource:
    files = [path] if isinstance(path, Path) else path
    return InputSource(name, fmt, tuple(str(p) for p in files), str(files[0].parent), "text", "web", **kw)


def read_all(sources: list[InputSource], tasks: int, tmp_path: Path) -> list[list]:
    """Every task's documents (the index run first), as datatrove would run them."""
    folder = tmp_path / f"index-{tasks}-{len(os.listdir(tmp_path))}"
    reader = InputReader(sources, None, None, tasks, str(folder))
    if (index := reader.index_step()) is not None:
        for rank in range(tasks):
            list(index.run(None, rank, tasks))
    return [list(reader.run(None, rank, tasks)) for rank in range(tasks)]


def by_id(tasks: list[list]) -> dict[str, object]:
    docs = [d for task in tasks for d in task]
    ids = [d.id for d in docs]
    assert len(ids) == len(set(ids)), "a record was read twice"
    return {d.id: d.metadata["record"] for d in docs}


# ------------------------------------------------------------------------------------------------------------- plans
@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5_000_000), st.booleans()), min_size=1, max_size=30),
    st.integers(1, 40),
)
def test_split_plan_covers_every_byte_once_and_balances(files, tasks):
    inputs = [InputFile(0, f"f{i}", size, split) for i, (size, split) in enumerate(files)]
    plan = plan_pieces(inputs, tasks)
    assert plan == plan_pieces(inputs, tasks) and len(plan) == tasks
    by_file: dict[str, list] = {}
    for rank, pieces in enumerate(plan):
        order = [int(p.path[1:]) for p in pieces]
        assert order == sorted(order)  # each task reads in input order
        for p in pieces:
            by_file.setdefault(p.path, []).append((p, rank))
    for f in inputs:
        parts = sorted(by_file[f.path], key=lambda pr: pr[0].part)
        assert [p.part for p, _ in parts] == list(range(parts[0][0].parts))
        ranks = [rank for _, rank in parts]  # dealt round robin: part p + 1 goes to the task after part p's
        assert all(b == (a + 1) % tasks for a, b in zip(ranks, ranks[1:]))
        assert parts[0][0].parts == 1 or f.splittable
        ranges = [p.byte_range() for p, _ in parts]
        assert ranges[0][0] == 0 and ranges[-1][1] == f.size
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    loads = [sum(p.byte_range()[1] - p.byte_range()[0] for p in pieces) for pieces in plan]
    share = sum(f.size for f in inputs) / tasks
    biggest_unit = max(max(e - s for p, _ in ps for s, e in [p.byte_range()]) for ps in by_file.values())
    assert max(loads) <= share + biggest_unit + 1  # greedy placement: never more than one unit above the mean


def test_split_plan_gives_every_task_stripes_spread_over_each_large_file():
    inputs = [InputFile(0, "big.jsonl", 40 << 20, True), InputFile(0, "big.jsonl.gz", 30 << 20, False)]
    inputs += [InputFile(1, f"small{i}", 1 << 20, True) for i in range(8)]
    plan = plan_pieces(inputs, 4)
    for rank, pieces in enumerate(plan):  # task r: parts r, r + 4, ... of 32, one in every eighth of the file
        assert [p.part for p in pieces if p.path == "big.jsonl"] == list(range(rank, STRIPES * 4, 4))
    assert sum(p.path == "big.jsonl.gz" and p.whole for pieces in plan for p in pieces) == 1


# ------------------------------------------------------------------------------------------------------------- lines
@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.text(st.sampled_from("ab{}\r é"), max_size=40), max_size=30),
    st.lists(st.integers(0, 2000), max_size=6),
    st.booleans(),
)
def test_line_ranges_read_every_line_exactly_once(lines, cuts, final_newline):
    data = "\n".join(lines).encode() + (b"\n" if final_newline and lines else b"")
    max_bytes = 20
    whole = list(iter_lines(io.BytesIO(data), 0, None, max_bytes))
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    parts = [item for a, b in zip(bounds, bounds[1:]) for item in iter_lines(io.BytesIO(data), a, b, max_bytes)]
    assert parts == whole
    offset = 0
    for pos, line, length in whole:  # offsets are true; a long line comes cut to max_bytes + 1, with its length
        assert pos == offset and line == data[pos : pos + min(length, max_bytes + 1)]
        offset += length
    assert offset == len(data)


# ---------------------------------------------------------------------------------------------- ids and balance
def write_inputs(root: Path, n: int = 600) -> list[InputSource]:
    """One input per format, with blank lines, malformed and too-large records, several row groups and batches."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        lines.append(json.dumps({"id": f"j{i}", "text": f"record {i} " + "word " * (i % 37)}))
        if i % 50 == 7:
            lines += ["", "   ", "{not json", "x" * 3000]
    (root / "a.jsonl").write_text("\n".join(lines) + "\n")
    (root / "b.csv").write_text("id,text\r\n" + "".join(f"c{i},row {i} {'w ' * (i % 11)}\r\n" for i in range(n)))
    (root / "quoted.csv").write_text("id,text\n" + "".join(f'q{i},"two\nlines {i}"\n' for i in range(300)))
    table = pa.table({"id": [f"p{i}" for i in range(n)], "text": [f"parquet {i} " * 20 for i in range(n)]})
    pq.write_table(table, root / "c.parquet", row_group_size=50)
    with pa.ipc.new_file(str(root / "d.arrow"), table.schema) as w:
        for start in range(0, n, 64):
            w.write_batch(table.slice(start, 64).to_batches()[0])
    with pa.ipc.new_stream(str(root / "e.arrow"), table.schema) as w:
        w.write_table(table, max_chunksize=100)
    (root / "f.jsonl.gz").write_bytes(gzip.compress((root / "a.jsonl").read_bytes()))
    return [
        source(root / "a.jsonl", "jsonl", "a", max_record_bytes=2000),
        source(root / "b.csv", "csv", "b"),
        source(root / "quoted.csv", "csv", "q"),
        source(root / "c.parquet", "parquet", "c"),
        source([root / "d.arrow", root / "e.arrow"], "arrow", "d"),
        source(root / "f.jsonl.gz", "jsonl", "f", max_record_bytes=2000),
    ]


def test_ids_are_the_record_index_whatever_the_task_count(tmp_path, monkeypatch):
    monkeypatch.setattr(splits, "MIN_PIECE", 1024)  # small files, many parts: every kind of boundary
    sources = write_inputs(tmp_path / "in")
    expected = {}
    for s in sources:  # the ids of a whole-file read (one task): `<input>/<file>:<index>`
        for path in s.files:
            for i, record in enumerate(iter_records(s, path)):
                expected[f"{s.name}/{Path(path).name}:{i}"] = record
    assert len(expected) == 2 * (600 + 12 * 2) + 600 + 300 + 3 * 600  # blank lines are not records; bad ones are
    for tasks in (1, 2, 3, 7, 16):
        split = read_all(sources, tasks, tmp_path)
        got = by_id(split)
        good = {k: v for k, v in expected.items() if not isinstance(v, BadRecord)}
        assert got == good, tasks
        assert sum(1 for task in split if task) == tasks  # the work is really divided


def test_tasks_get_equal_shares_of_documents_and_read_only_their_bytes(tmp_path, monkeypatch):
    sources = write_inputs(tmp_path / "in", 8000)
    sources = [s for s in sources if s.name in ("a", "b", "c")]
    sizes = sum(os.path.getsize(f) for s in sources for f in s.files)
    read_bytes = [0]  # the index run's, then each task's
    opened = readers.open_binary

    def counting(path):
        f = opened(path)
        real = f.readline

        def readline(limit=-1):
            line = real(limit)
            read_bytes[-1] += len(line)
            return line

        f.readline = readline
        return f

    monkeypatch.setattr(readers, "open_binary", counting)
    tasks = 4
    reader = InputReader(sources, None, None, tasks, str(tmp_path / "index"))
    for rank in range(tasks):
        list(reader.index_step().run(None, rank, tasks))
    counts = []
    for rank in range(tasks):
        read_bytes.append(0)
        counts.append(sum(1 for _ in reader.run(None, rank, tasks)))
    mean = sum(counts) / tasks
    assert max(counts) <= 1.2 * mean, counts
    # each task reads about its share (plus the csv header and the lines crossing its boundaries), never everything
    jsonl_csv = sum(os.path.getsize(f) for s in sources[:2] for f in s.files)
    assert read_bytes[0] <= 1.01 * jsonl_csv, read_bytes  # the index run reads jsonl and csv once, all tasks together
    tasks_read = read_bytes[1:]
    assert sum(tasks_read) <= 1.01 * jsonl_csv and max(tasks_read) <= 1.2 * jsonl_csv / tasks, read_bytes
    assert sizes > jsonl_csv  # (parquet is read by row groups, through pyarrow)


def test_real_sample_inputs_are_balanced(tmp_path):
    if not REAL.exists():
        pytest.skip(f"{REAL} not present")
    names = ["math/gsm8k_train.jsonl", "reasoning/marco_o1_cot.jsonl", "code/mbpp.jsonl", "code/leetcode_train.jsonl"]
    names += ["math_prose/hott_book_paragraphs.jsonl", "math_prose/stacks_project_paragraphs_5k.jsonl"]
    names += ["prose/python_peps_paragraphs_6k.jsonl"]
    sources = [source(REAL / n, "jsonl", f"s{i}") for i, n in enumerate(names)]
    for tasks in (2, 4, 8):
        counts = [len(docs) for docs in read_all(sources, tasks, tmp_path)]
        assert max(counts) <= 1.2 * sum(counts) / tasks, (tasks, counts)


def test_a_file_with_its_copies_appended_gives_every_task_the_same_share_of_originals(tmp_path):
    """Originals first, then three copies of them (how a corpus grows by appending): whatever dedup keeps, the
    originals, must be spread over the tasks, or the runs after dedup inherit the imbalance."""
    path = tmp_path / "grown.jsonl"
    rows = [json.dumps({"text": f"original {i} " + "word " * (i % 40)}) for i in range(4000)]
    path.write_text("\n".join(rows + [r.replace("original", "copy") for r in rows * 3]) + "\n")
    for tasks in (2, 4, 8):
        split = read_all([source(path, "jsonl")], tasks, tmp_path)
        originals = [sum(d.metadata["record"]["text"].startswith("original") for d in docs) for docs in split]
        assert sum(originals) == 4000 and max(originals) <= 1.2 * 4000 / tasks, (tasks, originals)


def test_quoted_csv_is_read_whole_by_the_task_of_its_first_part(tmp_path):
    path = tmp_path / "quoted.csv"
    path.write_text("id,text\n" + "".join(f'q{i},"two\nlines {i}"\n' for i in range(15000)))
    src = source(path, "csv", "q")
    assert all(p.parts > 3 for p in InputReader([src], None, None, 3).pieces[0])  # planned as a split file
    split = read_all([src], 3, tmp_path)
    assert [len(docs) for docs in split] == [15000, 0, 0]
    assert split[0][1].metadata["record"] == {"id": "q1", "text": "two\nlines 1"}
    assert by_id(split) == by_id(read_all([src], 1, tmp_path))


def test_limit_reads_the_first_records_of_each_input(tmp_path):
    sources = write_inputs(tmp_path / "in")[:2]
    reader = InputReader(sources, 10, None, 3)
    docs = [d for rank in range(3) for d in reader.run(None, rank, 3)]
    assert sorted(d.id for d in docs if d.id.startswith("b/")) == sorted(f"b/b.csv:{i}" for i in range(10))
    assert len([d for d in docs if d.id.startswith("a/")]) == 8  # records 8 and 9 are bad (malformed, too large)


# --------------------------------------------------------------------------------------------- read errors mid-file
def compressed(data: bytes, kind: str) -> bytes:
    return {
        "gz": gzip.compress,
        "zst": lambda d: zstandard.ZstdCompressor().compress(d),
        "xz": lzma.compress,
        "bz2": bz2.compress,
    }[kind](data)


@pytest.mark.parametrize("kind", ["gz", "zst", "xz", "bz2"])
def test_truncated_compressed_file_keeps_what_was_read(kind, tmp_path):
    lines = [json.dumps({"id": i, "text": f"line {i} " + "filler " * 40}).encode() + b"\n" for i in range(6000)]
    data = b"".join(lines)
    blob = compressed(data, kind)
    path = tmp_path / f"t.jsonl.{kind}"
    path.write_bytes(blob[: len(blob) * 3 // 4])
    records = list(iter_records(source(path, "jsonl"), str(path)))
    *good, rest = records
    assert isinstance(rest, BadRecord) and rest.reason == "unreadable_file"
    assert not any(isinstance(r, BadRecord) for r in good)  # no half line parsed as a malformed record
    assert [r["id"] for r in good] == list(range(len(good)))
    offset = sum(len(line) for line in lines[: len(good)])
    assert rest.where == f"byte={offset}" and str(path) in rest.raw
    assert len(good) > 0 or kind == "bz2"  # bz2 decompresses in 900 kB blocks


def test_zstd_multi_frame_files_read_whole(tmp_path):
    frames = [zstandard.ZstdCompressor().compress(b'{"text": "frame %d"}\n' % i) for i in range(5)]
    path = tmp_path / "m.jsonl.zst"
    path.write_bytes(b"".join(frames))
    assert [r["text"] for r in iter_records(source(path, "jsonl"), str(path))] == [f"frame {i}" for i in range(5)]


def test_corrupt_parquet_row_group_is_one_rejection_and_the_rest_is_read(tmp_path):
    table = pa.table({"id": list(range(400)), "text": [f"row {i} " + "x" * 200 for i in range(400)]})
    path = tmp_path / "c.parquet"
    pq.write_table(table, path, row_group_size=100, compression="none")
    meta = pq.ParquetFile(path).metadata
    column = meta.row_group(1).column(1)  # the text column of row group 1: overwrite its pages with garbage
    data = bytearray(path.read_bytes())
    start = column.dictionary_page_offset if column.has_dictionary_page else column.data_page_offset
    data[start : start + column.total_compressed_size] = b"\xff" * column.total_compressed_size
    path.write_bytes(bytes(data))
    src = source(path, "parquet")
    for tasks in (1, 3):
        docs = [d for task in read_all([src], tasks, tmp_path) for d in task]
        assert sorted(d.metadata["record"]["id"] for d in docs) == [*range(100), *range(200, 400)]
        assert all(d.id == f"in/c.parquet:{d.metadata['record']['id']}" for d in docs)
    bad = [r for r in iter_records(src, str(path)) if isinstance(r, BadRecord)]
    assert len(bad) == 1 and bad[0].where == "row_group=1" and "rows 100-199" in bad[0].raw


def test_corrupt_arrow_batch_is_one_rejection_and_the_rest_is_read(tmp_path):
    table = pa.table({"id": list(range(300)), "text": [f"row {i} " + "y" * 100 for i in range(300)]})
    path = tmp_path / "d.arrow"
    with pa.ipc.new_file(str(path), table.schema) as w:
        for start in range(0, 300, 100):
            w.write_batch(table.slice(start, 100).to_batches()[0])
    data = bytearray(path.read_bytes())
    second = data.find(b"row 150 ")  # inside batch 1's body: a flipped buffer length breaks its validation
    meta_at = data.rfind(b"\xff\xff\xff\xff", 0, second)  # its message's continuation marker
    data[meta_at + 8 : meta_at + 200] = b"\x7f" * 192
    path.write_bytes(bytes(data))
    records = list(iter_records(source(path, "arrow"), str(path)))
    good = [r for r in records if not isinstance(r, BadRecord)]
    bad = [r for r in records if isinstance(r, BadRecord)]
    assert [r["id"] for r in good] == [*range(100), *range(200, 300)]
    assert len(bad) == 1 and bad[0].where == "batch=1"


def test_io_error_mid_file_keeps_earlier_records_and_names_the_offset(tmp_path, monkeypatch):
    lines = [json.dumps({"id": f"{i:03d}", "text": "t" * 50}).encode() + b"\n" for i in range(100)]
    path = tmp_path / "io.jsonl"
    path.write_bytes(b"".join(lines))
    opened = readers.open_binary

    class Failing(io.BufferedReader):
        def readline(self, limit=-1):
            if self.tell() >= 40 * len(lines[0]):
                raise OSError(5, "Input/output error")
            return super().readline(limit)

    monkeypatch.setattr(readers, "open_binary", lambda p: Failing(opened(p).detach()))
    *good, rest = iter_records(source(path, "jsonl"), str(path))
    assert [r["id"] for r in good] == [f"{i:03d}" for i in range(40)]
    assert rest.where == f"byte={40 * len(lines[0])}" and "Input/output error" in rest.raw


def test_unreadable_rest_is_excluded_with_where_reading_stopped(tmp_path):
    from tests.stagekit import read_docs

    path = tmp_path / "t.jsonl.gz"
    blob = gzip.compress(b"".join(b'{"id": "u%d", "text": "%s"}\n' % (i, b"z" * 300) for i in range(3000)))
    path.write_bytes(blob[: len(blob) // 2])
    from reasonpipe.filters.exclusions import exclusion_writer

    reader = InputReader([source(path, "jsonl")], None, exclusion_writer(str(tmp_path / "excl")))
    kept = list(reader.run(None, 0, 1))
    stats = reader.stats.stats
    (excluded,) = read_docs(tmp_path / "excl", 1)
    assert stats["total"].total == len(kept) + 1 and stats["dropped_unreadable_file"].total == 1
    assert excluded.metadata["stopped_at"].startswith("byte=") and excluded.id.startswith("in/t.jsonl.gz@byte=")


def test_an_input_edited_after_its_records_were_counted_is_an_error_not_wrong_ids(tmp_path):
    sources = write_inputs(tmp_path / "in", 4000)[:1]
    reader = InputReader(sources, None, None, 2, str(tmp_path / "index"))
    for rank in range(2):
        list(reader.index_step().run(None, rank, 2))
    path = Path(sources[0].files[0])
    path.write_bytes(b'{"text": "a new first line"}\n' + path.read_bytes())
    edited = InputReader(sources, None, None, 2, str(tmp_path / "index"))  # a re-run plans the new size
    with pytest.raises(RuntimeError, match="counted another version of this file.*--force"):
        list(edited.run(None, 1, 2))


def test_truncated_arrow_stream_keeps_the_batches_before(tmp_path):
    table = pa.table({"id": list(range(500)), "text": [f"row {i}" for i in range(500)]})
    path = tmp_path / "s.arrow"
    with pa.ipc.new_stream(str(path), table.schema) as w:
        w.write_table(table, max_chunksize=100)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 7 // 10])
    *good, rest = iter_records(source(path, "arrow"), str(path))
    assert [r["id"] for r in good] == list(range(len(good))) and len(good) % 100 == 0 and 0 < len(good) < 500
    assert rest.reason == "unreadable_file" and rest.where == f"batch={len(good) // 100}"
