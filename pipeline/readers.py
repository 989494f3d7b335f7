"""Reading the manifest's inputs: every record becomes a Document or a counted, excluded rejection.

Formats: jsonl (also .gz/.zst/.bz2/.xz), parquet, arrow (IPC file or stream), csv, and `datasets` folders saved with
`save_to_disk`; local paths or fsspec URLs. Each task reads its own pieces of the inputs (splits.py: byte ranges of
plain jsonl/csv, row groups of parquet, record batches of arrow files, whole compressed files), so it reads about 1/T
of the bytes.

Document ids are `<input>/<file relative to the input>:<record index>`, the index counting the file's records from 0
(non-blank lines of jsonl, data rows of csv, rows of parquet/arrow), whatever the task count or the split. A task that
starts inside a file learns the index of its first record from the `input-index` run before the read run, which
counts the records of every part (newlines, no parsing; parquet needs no count: its footer has the row counts), each
task counting only its own parts. That run lives in the run's `prep-<hash>` folder, so its counts are reused exactly
as long as the inputs are (the prep key covers them). A csv file is split only when it holds no quote character and
no bare carriage return (the index checks that too); otherwise, as for arrow *stream* files, the task of its first
part reads it whole.

Bad input never crashes a run: malformed JSON, invalid UTF-8, non-object records, records over `max_record_bytes`
are each counted as `dropped_<reason>` and written to the exclusions, with the record's own id (`upstream_id`) when
it can be read. A read error inside a file (truncated gzip/zstd/xz/bz2, a corrupt parquet row group or arrow batch,
an I/O error) keeps every record read before it and records what could not be read as one `unreadable_file`
rejection naming the file and where reading stopped (`byte=N` of the decompressed stream, `row_group=N`, `batch=N`);
parquet row groups and arrow file batches after a bad one are still read.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import orjson
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.typeshelper import StatHints

from reasonpipe.pipeline.adapters import raw_upstream_id, upstream_id
from reasonpipe.pipeline.splits import InputFile, Piece, plan_pieces

EXCLUDED_TEXT_LIMIT = 64 << 10  # rejected raw records are kept in the exclusions up to this many characters
COMPRESSED = (".gz", ".zst", ".zstd", ".bz2", ".xz")
INDEXED_FORMATS = ("jsonl", "csv", "arrow")  # split parts whose first record index the index run counts
_CHUNK = 1 << 20


@dataclass(frozen=True)
class InputSource:
    """A resolved manifest input: its files are listed once, at compile time, and sorted."""

    name: str
    format: str
    files: tuple[str, ...]
    root: str  # ids are `<name>/<path relative to root>:<record index>`
    schema: str
    domain: str
    fields: dict[str, str] = field(default_factory=dict)
    max_record_bytes: int = 8 << 20


@dataclass(frozen=True)
class BadRecord:
    """Stands in the record stream for a record that could not be read, with the reason and its raw bytes.

    `where` is set on the `unreadable_file` record that stands for the unreadable rest of a file (or row group)."""

    reason: str
    raw: bytes | str
    upstream_id: str | None = None
    where: str | None = None


# ----------------------------------------------------------------------------------------------------------- files
def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def splittable(fmt: str, path: str) -> bool:
    return fmt in ("parquet", "arrow") or (fmt in ("jsonl", "csv") and not path.lower().endswith(COMPRESSED))


def file_size(path: str) -> int:
    """Bytes of a file, or of every file under a folder (`datasets` folders); 0 when it cannot be seen."""
    if is_local(path):
        path = path.removeprefix("file://")
        if os.path.isdir(path):
            return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names)
        return os.path.getsize(path) if os.path.exists(path) else 0
    import fsspec

    fs, _, (target,) = fsspec.get_fs_token_paths(path)
    return sum(fs.sizes(fs.find(target))) if fs.isdir(target) else fs.size(target)


def input_files(sources: list[InputSource]) -> list[InputFile]:
    return [
        InputFile(i, path, file_size(path), splittable(s.format, path))
        for i, s in enumerate(sources)
        for path in s.files
    ]


class _ZstdFrames(io.RawIOBase):
    """zstd decompression frame by frame that raises EOFError when the data ends inside a frame (a truncated file:
    zstandard's own stream reader just stops there)."""

    def __init__(self, raw):
        import zstandard

        self.raw, self._dctx, self._frame = raw, zstandard.ZstdDecompressor(), None
        self._out, self._pos, self._leftover = b"", 0, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._pos >= len(self._out):
            if self._frame is not None and self._frame.eof:
                self._leftover, self._frame = self._frame.unused_data, None  # the next frame starts here
            chunk, self._leftover = self._leftover or self.raw.read(_CHUNK), b""
            if not chunk:
                if self._frame is not None:
                    raise EOFError("zstd data ended inside a frame (truncated file)")
                return 0
            self._frame = self._frame or self._dctx.decompressobj()
            self._out, self._pos = self._frame.decompress(chunk), 0
        n = min(len(buffer), len(self._out) - self._pos)
        buffer[:n] = self._out[self._pos : self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


def open_binary(path: str):
    """A binary file with `readline(limit)`, decompressed by suffix (.gz .zst .bz2 .xz); plain files are seekable."""
    if is_local(path):
        raw = open(path.removeprefix("file://"), "rb", buffering=_CHUNK)
    else:
        import fsspec

        raw = io.BufferedReader(fsspec.open(path, "rb").open(), _CHUNK)
    name = path.lower()
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)
    if name.endswith((".zst", ".zstd")):
        return io.BufferedReader(_ZstdFrames(raw), _CHUNK)
    if name.endswith(".bz2"):
        return bz2.BZ2File(raw)
    if name.endswith(".xz"):
        return lzma.LZMAFile(raw)
    return raw


# ----------------------------------------------------------------------------------------------------------- lines
def _skip_line(f) -> int:
    """Consume the rest of the current line (through its newline); the number of bytes consumed."""
    n = 0
    while chunk := f.readline(_CHUNK):
        n += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return n


def iter_lines(f, start: int, end: int | None, max_bytes: int) -> Iterator[tuple[int, bytes, int]]:
    """`(offset, line, length)` of the lines of `f` (at its start) that start in [start, end) (end None: to the end).

    A line longer than `max_bytes` is never held whole: it comes cut (to max_bytes + 1 bytes at most, and to
    EXCLUDED_TEXT_LIMIT), with its full `length`. start > 0 seeks to start - 1 and skips to the next line start, so a
    line starting exactly at `start` belongs to this range, and the line crossing `end` is read through."""
    pos = 0
    if start > 0:
        f.seek(start - 1)
        pos = start - 1 + _skip_line(f)
    while end is None or pos < end:
        line = f.readline(max_bytes + 1)
        if not line:
            return
        length = len(line)
        if length > max_bytes:
            if not line.endswith(b"\n"):
                length += _skip_line(f)
            line = line[:EXCLUDED_TEXT_LIMIT]
        yield pos, line, length
        pos += length


def _unreadable(path: str, exc: BaseException, where: str, lost: str = "the rest of the file") -> BadRecord:
    """The rejection standing for what could not be read of a file: `where` it stopped (`byte=N`, `row_group=N`...)."""
    text = f"{path}: reading stopped at {where}, {lost} not read: {type(exc).__name__}: {exc}"
    return BadRecord("unreadable_file", text, None, where)


def _until_error(items: Iterator, path: str, where) -> Iterator:
    """`items` until reading them fails, then one `unreadable_file` record (`where()` tells where it stopped).

    Only the reading is guarded: what the caller does with each item is outside, so a bug is never taken for a
    damaged file."""
    while True:
        try:
            item = next(items)
        except StopIteration:
            return
        except Exception as exc:
            yield _unreadable(path, exc, where())
            return
        yield item


def _json_record(line: bytes, length: int, max_bytes: int, fields: dict[str, str]) -> Any:
    if length > max_bytes:
        return BadRecord("too_large", line, raw_upstream_id(line, fields))
    try:
        return orjson.loads(line)  # strict RFC 8259 (no NaN, no lone surrogates): what it reads can be written again
    except orjson.JSONDecodeError:
        pass
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return BadRecord("invalid_utf8", line, raw_upstream_id(line, fields))
    return BadRecord("malformed_json", line, raw_upstream_id(line, fields))


def _file_lines(path: str, start: int, end: int | None, max_bytes: int) -> Iterator[tuple[int, bytes, int]]:
    with open_binary(path) as f:
        yield from iter_lines(f, start, end, max_bytes)


def _jsonl(source: InputSource, path: str, start: int, end: int | None) -> Iterator[Any]:
    pos = [start]  # where the next line starts
    for item in _until_error(_file_lines(path, start, end, source.max_record_bytes), path, lambda: f"byte={pos[0]}"):
        if isinstance(item, BadRecord):
            yield item
            continue
        offset, line, length = item
        pos[0] = offset + length
        if line.strip():  # blank lines are not records
            yield _json_record(line, length, source.max_record_bytes, source.fields)


def _jsonl_count(source: InputSource, path: str, start: int, end: int) -> tuple[int, bool]:
    with open_binary(path) as f:
        return sum(1 for _, line, _ in iter_lines(f, start, end, source.max_record_bytes) if line.strip()), True


# ------------------------------------------------------------------------------------------------------------- csv
def _csv_row(row: dict, max_bytes: int, fields: dict[str, str]) -> Any:
    values = "".join(v for v in row.values() if isinstance(v, str))
    if None in row:
        return BadRecord("malformed_csv", repr(row)[:EXCLUDED_TEXT_LIMIT], upstream_id(row, fields))
    if any("\udc80" <= c <= "\udcff" for c in values):
        return BadRecord("invalid_utf8", values.encode("utf-8", "surrogateescape"), None)
    if len(values) > max_bytes:
        return BadRecord("too_large", values[:EXCLUDED_TEXT_LIMIT], upstream_id(row, fields))
    return row


def _csv_header(f, max_bytes: int) -> tuple[int, list[str]]:
    """(offset, field names) of a csv file's header: its first non-empty line."""
    for offset, line, _ in iter_lines(f, 0, None, max_bytes):
        if line.rstrip(b"\r\n"):
            return offset, next(csv.reader([line.decode("utf-8", "surrogateescape")]))
    return -1, []


def _csv_safe(line: bytes) -> bool:
    """Whether this line is one csv row whatever precedes it: no quote, no carriage return but a final CRLF."""
    return b'"' not in line and b"\r" not in line.removesuffix(b"\r\n")


def _csv_rows(path: str) -> Iterator[dict]:
    with open_binary(path) as f:
        yield from csv.DictReader(io.TextIOWrapper(f, encoding="utf-8", errors="surrogateescape", newline=""))


def _csv(source: InputSource, path: str, start: int, end: int | None) -> Iterator[Any]:
    """Rows of a whole file (quoted fields spanning lines included), or of a byte range of a file without quotes."""
    csv.field_size_limit(sys.maxsize)
    max_bytes, fields = source.max_record_bytes, source.fields
    if end is None:
        rows = [0]
        for row in _until_error(_csv_rows(path), path, lambda: f"row={rows[0]}"):
            rows[0] += 1
            yield row if isinstance(row, BadRecord) else _csv_row(row, max_bytes, fields)
        return
    try:
        with open_binary(path) as f:
            header_at, header = _csv_header(f, max_bytes)
    except Exception as exc:
        yield _unreadable(path, exc, "header")
        return
    pos = [start]
    for item in _until_error(_file_lines(path, start, end, max_bytes), path, lambda: f"byte={pos[0]}"):
        if isinstance(item, BadRecord):
            yield item
            continue
        offset, line, length = item
        pos[0] = offset + length
        if offset == header_at or not line.rstrip(b"\r\n"):
            continue
        if length > max_bytes:
            yield BadRecord("too_large", line, None)
            continue
        values = next(csv.reader([line.decode("utf-8", "surrogateescape")]))
        row = dict(zip(header, values + [None] * (len(header) - len(values))))
        if len(values) > len(header):
            row[None] = values[len(header) :]
        yield _csv_row(row, max_bytes, fields)


def _csv_count(source: InputSource, path: str, start: int, end: int) -> tuple[int, bool]:
    n, safe = 0, True
    with open_binary(path) as f:
        header_at, _ = _csv_header(f, source.max_record_bytes)
    with open_binary(path) as f:
        for offset, line, _ in iter_lines(f, start, end, source.max_record_bytes):
            safe = safe and _csv_safe(line)
            n += offset != header_at and bool(line.rstrip(b"\r\n"))
    return n, safe


# ----------------------------------------------------------------------------------------------------------- arrow
def _value_size(value: Any) -> int:
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, dict):
        return sum(_value_size(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_value_size(v) for v in value)
    return 0


def _row_by_row(batch, source: InputSource) -> Iterator[Any]:
    """The slow path for a batch holding a value Python cannot represent (a timestamp beyond year 9999...): such
    rows become `unreadable_value` rejections naming the columns, the others are read."""
    for i in range(batch.num_rows):
        row, bad = {}, []
        for name, column in zip(batch.schema.names, batch.slice(i, 1).columns):
            try:
                row[name] = column.to_pylist()[0]
            except Exception as exc:
                bad.append(f"{name} ({column.type}: {exc})")
        if bad:
            text = f"{repr(row)[:EXCLUDED_TEXT_LIMIT]}; unreadable: {', '.join(bad)}"
            yield BadRecord("unreadable_value", text, upstream_id(row, source.fields))
        else:
            yield row


def _batch_records(batch, source: InputSource) -> Iterator[Any]:
    try:
        rows = batch.to_pylist()
    except Exception:
        yield from _row_by_row(batch, source)
        return
    for record in rows:
        if _value_size(record) > source.max_record_bytes:
            yield BadRecord("too_large", repr(record)[:EXCLUDED_TEXT_LIMIT], upstream_id(record, source.fields))
        else:
            yield record


def _arrow_source(path: str):
    import pyarrow as pa

    if is_local(path):
        return pa.memory_map(path.removeprefix("file://"))
    return pa.PythonFile(open_binary(path), mode="r")


def _parquet(source: InputSource, piece: Piece) -> Iterator[tuple[int, Any]]:
    """(record index, record) of the row groups of this piece (those whose first row falls in its share of rows)."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(_arrow_source(piece.path))
    except Exception as exc:
        if piece.part == 0:
            yield 0, _unreadable(piece.path, exc, "footer")
        return
    meta = pf.metadata
    starts = [0]
    for i in range(meta.num_row_groups):
        starts.append(starts[-1] + meta.row_group(i).num_rows)
    for group in range(meta.num_row_groups):
        if not piece.owns(starts[group], meta.num_rows):
            continue
        index = starts[group]
        try:
            for batch in pf.iter_batches(batch_size=1024, row_groups=[group]):
                for record in _batch_records(batch, source):
                    yield index, record
                    index += 1
        except Exception as exc:
            lost = f"rows {index}-{starts[group + 1] - 1} of the row group"
            yield index, _unreadable(piece.path, exc, f"row_group={group}", lost)


def _arrow_stream(source: InputSource, path: str) -> Iterator[Any]:
    import pyarrow as pa

    batch_no = 0  # the batch being read
    try:
        for batch in pa.ipc.open_stream(_arrow_source(path)):
            yield from _batch_records(batch, source)
            batch_no += 1
    except Exception as exc:
        yield _unreadable(path, exc, f"batch={batch_no}")


def _arrow(source: InputSource, piece: Piece, first: int) -> Iterator[tuple[int, Any]]:
    """(record index, record) of this piece's record batches of an IPC file; a stream is read whole (by part 0)."""
    import pyarrow as pa

    try:
        reader = pa.ipc.open_file(_arrow_source(piece.path))
    except pa.ArrowInvalid:  # not an IPC file: a stream (no footer, no random access)
        if piece.part == 0:
            yield from enumerate(_arrow_stream(source, piece.path), first)
        return
    except Exception as exc:
        if piece.part == 0:
            yield first, _unreadable(piece.path, exc, "footer")
        return
    index = first
    for batch_no in piece.item_range(reader.num_record_batches):
        try:
            batch = reader.get_batch(batch_no)
        except Exception as exc:
            yield index, _unreadable(piece.path, exc, f"batch={batch_no}", "the batch")
            continue
        yield from enumerate(_batch_records(batch, source), index)
        index += batch.num_rows


def _arrow_count(source: InputSource, path: str, piece: Piece) -> tuple[int, bool]:
    import pyarrow as pa

    data = _arrow_source(path)
    try:
        reader = pa.ipc.open_file(data)
    except pa.ArrowInvalid:
        return 0, False  # a stream: read whole by the task of part 0
    n = 0
    for batch_no in piece.item_range(reader.num_record_batches):
        try:
            n += reader.get_batch(batch_no).num_rows
        except Exception:
            pass  # unreadable: the read run rejects it and counts no rows for it either
    return n, True


def _hf_disk(source: InputSource, path: str) -> Iterator[Any]:
    where = "load_from_disk"
    try:
        import datasets

        ds = datasets.load_from_disk(path)
        splits = [(k, ds[k]) for k in sorted(ds)] if isinstance(ds, datasets.DatasetDict) else [("", ds)]
        for name, split in splits:
            for batch_no, batch in enumerate(split.with_format("arrow").iter(batch_size=1024)):
                where = f"{name}/batch={batch_no}" if name else f"batch={batch_no}"
                yield from _batch_records(batch, source)
    except Exception as exc:
        yield _unreadable(path, exc, where)


# --------------------------------------------------------------------------------------------------------- records
def iter_piece(source: InputSource, piece: Piece, first: int = 0, whole: bool = False) -> Iterator[tuple[int, Any]]:
    """`(record index, record or BadRecord)` of one piece; `first` is the index of its first record (from the index
    run for split jsonl/csv/arrow parts); `whole` reads the whole file (a split csv that quoting made unsafe)."""
    fmt = source.format
    if fmt == "parquet":
        yield from _parquet(source, piece)
        return
    if fmt == "arrow":
        yield from _arrow(source, piece, first)
        return
    if fmt == "hf_disk":
        records = _hf_disk(source, piece.path)
    else:
        start, end = (0, None) if piece.whole or whole else piece.byte_range()
        records = (_jsonl if fmt == "jsonl" else _csv)(source, piece.path, start, end)
    for offset, record in enumerate(records):
        yield first + offset, record


def iter_records(source: InputSource, path: str) -> Iterator[Any]:
    """Records of one whole file (a `BadRecord` stands for each record that could not be read)."""
    for _, record in iter_piece(source, Piece(0, path, 0)):
        yield record


def count_piece(source: InputSource, piece: Piece) -> tuple[int, bool]:
    """(records that start in this part, whether the file can be split at all) for the index run."""
    try:
        if source.format == "arrow":
            return _arrow_count(source, piece.path, piece)
        start, end = piece.byte_range()
        return (_jsonl_count if source.format == "jsonl" else _csv_count)(source, piece.path, start, end)
    except Exception as exc:  # an I/O error: without the count, later parts could not be numbered
        raise RuntimeError(f"{piece.path}: cannot count the records of part {piece.part}: {exc}") from exc


def file_id(source: InputSource, path: str) -> str:
    rel = path[len(source.root) :].lstrip("/") if path.startswith(source.root) else path.rsplit("/", 1)[-1]
    return f"{source.name}/{rel or path.rsplit('/', 1)[-1]}"


def relative_id(source: InputSource, path: str, index: int) -> str:
    return f"{file_id(source, path)}:{index}"


# --------------------------------------------------------------------------------------------------------- the runs
def _needs_index(source: InputSource, piece: Piece) -> bool:
    return not piece.whole and source.format in INDEXED_FORMATS


def _index_file(folder: str, rank: int) -> str:
    return os.path.join(folder, f"{rank:05d}.json")


class IndexInputs(PipelineStep):
    """The index run: counts the records of this task's split jsonl/csv/arrow parts (no parsing) and checks that a
    split csv is safe to split; the read run takes each part's first record index from these counts."""

    name = "🔢 input index"
    type = "📖 - READER"

    def __init__(self, sources: list[InputSource], pieces: list[list[Piece]], folder: str):
        super().__init__()
        self.sources, self.pieces, self.folder = sources, pieces, folder

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        entries = []
        for piece in self.pieces[rank]:
            source = self.sources[piece.source]
            if _needs_index(source, piece):
                with self.track_time():
                    records, safe = count_piece(source, piece)
                entry = {"path": piece.path, "size": piece.size, "part": piece.part, "parts": piece.parts}
                entries.append(entry | {"records": records, "splittable": safe})
                self.stat_update("parts")
                self.stat_update("records", value=records)
        os.makedirs(self.folder, exist_ok=True)
        path = _index_file(self.folder, rank)
        with open(path + ".tmp", "w") as f:
            json.dump({"parts": entries}, f)
        os.replace(path + ".tmp", path)
        return
        yield


def load_index(folder: str, world_size: int, wanted: Iterable[str]) -> dict[str, dict[int, dict]]:
    """path -> part -> index entry, for the files in `wanted`, from every task's index file."""
    wanted = set(wanted)
    parts: dict[str, dict[int, dict]] = {}
    for rank in range(world_size):
        path = _index_file(folder, rank)
        if not os.path.exists(path):
            raise RuntimeError(f"{path} is missing: the input-index run did not finish; re-run to resume")
        with open(path) as f:
            for e in json.load(f)["parts"]:
                if e["path"] in wanted:
                    parts.setdefault(e["path"], {})[e["part"]] = e
    return parts


def first_record(piece: Piece, index: dict[str, dict[int, dict]]) -> tuple[int, bool]:
    """(index of the piece's first record, whether its file must be read whole instead) from the index run."""
    parts = index.get(piece.path, {})
    if sorted(parts) != list(range(piece.parts)) or any(e["size"] != piece.size for e in parts.values()):
        raise RuntimeError(
            f"{piece.path}: the input-index run counted another version of this file (this run planned {piece.size} "
            "bytes); it changed during the run or since that run: re-run with --force"
        )
    if not all(e["splittable"] for e in parts.values()):
        return 0, True
    return sum(parts[i]["records"] for i in range(piece.part)), False


class InputReader(PipelineStep):
    """Reads this task's pieces of the manifest's inputs; yields raw records as Documents (`metadata["record"]`).

    `limit` (read at most N records per input) reads each input from its start instead and stripes its first N
    records across tasks (`index % T == rank`): at most N records per input and task are parsed."""

    name = "📖 inputs"
    type = "📖 - READER"

    def __init__(
        self,
        sources: list[InputSource],
        limit: int | None = None,
        exclusion_writer=None,
        tasks: int = 1,
        index_dir: str | None = None,
    ):
        super().__init__()
        self.sources, self.limit, self.exclusion_writer = sources, limit, exclusion_writer
        self.tasks, self.index_dir = tasks, index_dir
        self.pieces = plan_pieces(input_files(sources), tasks) if limit is None else []

    def index_step(self) -> IndexInputs | None:
        """The index run's step, or None when no task starts inside a jsonl/csv/arrow file."""
        needed = any(_needs_index(self.sources[p.source], p) for pieces in self.pieces for p in pieces)
        return IndexInputs(self.sources, self.pieces, self.index_dir) if needed else None

    def _pieces(self, rank: int, world_size: int) -> Iterator[tuple[InputSource, str, int, Any]]:
        if world_size != self.tasks:
            raise RuntimeError(f"inputs were planned for {self.tasks} tasks, the run has {world_size}")
        pieces = self.pieces[rank]
        index = {}
        if any(_needs_index(self.sources[p.source], p) for p in pieces):
            index = load_index(self.index_dir, world_size, (p.path for p in pieces))
        for piece in pieces:
            source = self.sources[piece.source]
            first, whole = first_record(piece, index) if _needs_index(source, piece) else (0, piece.whole)
            if whole and piece.part > 0:
                continue  # read whole by the task of part 0
            for i, record in iter_piece(source, piece, first, whole):
                yield source, piece.path, i, record

    def _limited(self, rank: int, world_size: int) -> Iterator[tuple[InputSource, str, int, Any]]:
        for source in self.sources:
            seen = 0
            for path in source.files:
                if seen >= self.limit:
                    break
                for i, record in iter_piece(source, Piece(0, path, 0)):
                    if seen >= self.limit:
                        break
                    if seen % world_size == rank:
                        yield source, path, i, record
                    seen += 1

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        records = self._limited(rank, world_size) if self.limit is not None else self._pieces(rank, world_size)
        with self.exclusion_writer or nullcontext() as writer:
            for source, path, index, record in records:
                self.stat_update(StatHints.total)
                if isinstance(record, BadRecord):
                    self.stat_update(StatHints.dropped, f"dropped_{record.reason}")
                    if writer is not None:
                        writer.write(self._excluded(source, path, index, record), rank)
                    continue
                self.stat_update(StatHints.forwarded)
                meta = {"source": source.name, "domain": source.domain, "record": record}
                yield Document(text="", id=relative_id(source, path, index), metadata=meta)

    @staticmethod
    def _excluded(source: InputSource, path: str, index: int, record: BadRecord) -> Document:
        raw = record.raw.decode("utf-8", "replace") if isinstance(record.raw, bytes) else record.raw
        meta = {"source": source.name, "domain": source.domain, "filter_reason": record.reason, "file": path}
        if record.upstream_id is not None:
            meta["upstream_id"] = record.upstream_id
        if record.where is not None:
            meta["stopped_at"] = record.where
            doc_id = f"{file_id(source, path)}@{record.where}"
        else:
            doc_id = relative_id(source, path, index)
        return Document(text=raw[:EXCLUDED_TEXT_LIMIT], id=doc_id, metadata=meta)
