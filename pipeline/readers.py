"""Reading the manifest's inputs: every record becomes a Document or a counted, excluded rejection.

Formats: jsonl (also .gz/.zst/.bz2/.xz), parquet, arrow (IPC file or stream), csv, and `datasets` folders saved with
`save_to_disk`. Local paths or fsspec URLs. Tasks split the work deterministically: whole files (`files[rank::n]`)
when there are at least as many files as tasks, else records striped across tasks (`record_index % n == rank`), so one
big file still keeps every task busy. Malformed JSON, invalid UTF-8, non-object records and records over
`max_record_bytes` never crash a run: each is counted as `dropped_<reason>` and written to the exclusions.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import orjson
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.typeshelper import StatHints

EXCLUDED_TEXT_LIMIT = 64 << 10  # rejected raw records are kept in the exclusions up to this many characters


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
    """Stands in the record stream for a record that could not be read, with the reason and its raw bytes."""

    reason: str
    raw: bytes | str


def _open(path: str, mode: str = "rb"):
    import fsspec

    f = fsspec.open(path, mode, compression="infer").open()
    # zstandard's reader cannot iterate lines by itself
    return io.BufferedReader(f) if path.endswith((".zst", ".zstd")) else f


def _jsonl(path: str, max_bytes: int) -> Iterator[Any]:
    with _open(path) as f:
        for line in f:
            if not line.strip():
                continue  # blank lines are not records
            if len(line) > max_bytes:
                yield BadRecord("too_large", line[:EXCLUDED_TEXT_LIMIT])
                continue
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                yield BadRecord("invalid_utf8", line)
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                yield BadRecord("malformed_json", line)


def _csv(path: str, max_bytes: int) -> Iterator[Any]:
    csv.field_size_limit(sys.maxsize)
    with _open(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        for row in csv.DictReader(text):
            values = "".join(v or "" for v in row.values() if isinstance(v, str))
            if None in row:
                yield BadRecord("malformed_csv", repr(row))
            elif any("\udc80" <= c <= "\udcff" for c in values):
                yield BadRecord("invalid_utf8", values.encode("utf-8", "surrogateescape"))
            elif len(values) > max_bytes:
                yield BadRecord("too_large", values[:EXCLUDED_TEXT_LIMIT])
            else:
                yield row


def _arrow_batches(path: str) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.endswith(".parquet"):
        with _open(path) as f:
            yield from pq.ParquetFile(f).iter_batches(batch_size=1024)
        return
    with _open(path) as f:
        data = f.read()
    try:
        reader = pa.ipc.open_file(pa.BufferReader(data))
        yield from (reader.get_batch(i) for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:
        yield from pa.ipc.open_stream(pa.BufferReader(data))


def _table_records(path: str, max_bytes: int) -> Iterator[Any]:
    for batch in _arrow_batches(path):
        for record in batch.to_pylist():
            size = sum(len(v) for v in record.values() if isinstance(v, str | bytes))
            yield BadRecord("too_large", repr(record)[:EXCLUDED_TEXT_LIMIT]) if size > max_bytes else record


def _hf_disk(path: str, max_bytes: int) -> Iterator[Any]:
    import datasets

    ds = datasets.load_from_disk(path)
    splits = [ds[k] for k in sorted(ds)] if isinstance(ds, datasets.DatasetDict) else [ds]
    for split in splits:
        for batch in split.with_format("arrow").iter(batch_size=1024):
            for record in batch.to_pylist():
                size = sum(len(v) for v in record.values() if isinstance(v, str | bytes))
                yield BadRecord("too_large", repr(record)[:EXCLUDED_TEXT_LIMIT]) if size > max_bytes else record


RECORD_READERS = {"jsonl": _jsonl, "csv": _csv, "parquet": _table_records, "arrow": _table_records}
RECORD_READERS["hf_disk"] = _hf_disk


def iter_records(source: InputSource, path: str) -> Iterator[Any]:
    """Records of one file (a `BadRecord` stands for each record that could not be read)."""
    try:
        yield from RECORD_READERS[source.format](path, source.max_record_bytes)
    except Exception as exc:  # an unreadable file (truncated parquet, bad gzip...) is one counted rejection
        yield BadRecord("unreadable_file", f"{path}: {type(exc).__name__}: {exc}")


def relative_id(source: InputSource, path: str, index: int) -> str:
    rel = path[len(source.root) :].lstrip("/") if path.startswith(source.root) else path.rsplit("/", 1)[-1]
    return f"{source.name}/{rel or path.rsplit('/', 1)[-1]}:{index}"


class InputReader(PipelineStep):
    """Reads every manifest input; yields raw records as Documents (`metadata["record"]`) for the adapter."""

    name = "📖 inputs"
    type = "📖 - READER"

    def __init__(self, sources: list[InputSource], limit: int | None = None, exclusion_writer=None):
        super().__init__()
        self.sources, self.limit, self.exclusion_writer = sources, limit, exclusion_writer

    def _work(self, rank: int, world_size: int) -> Iterator[tuple[InputSource, str, bool]]:
        """(source, file, striped) units of this rank."""
        files = [(s, f) for s in self.sources for f in s.files]
        if self.limit is None and len(files) >= world_size:
            for source, path in files[rank::world_size]:
                yield source, path, False
        else:
            for source, path in files:
                yield source, path, True

    def _records(self, rank: int, world_size: int) -> Iterator[tuple[InputSource, str, int, Any]]:
        counts: dict[str, int] = {}
        for source, path, striped in self._work(rank, world_size):
            for index, record in enumerate(iter_records(source, path)):
                seen = counts.get(source.name, 0)
                if self.limit is not None and seen >= self.limit:
                    break
                counts[source.name] = seen + 1
                if striped and seen % world_size != rank:
                    continue
                yield source, path, index, record

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with self.exclusion_writer or nullcontext() as writer:
            for source, path, index, record in self._records(rank, world_size):
                self.stat_update(StatHints.total)
                doc_id = relative_id(source, path, index)
                if isinstance(record, BadRecord):
                    self.stat_update(StatHints.dropped, f"dropped_{record.reason}")
                    if writer is not None:
                        raw = record.raw.decode("utf-8", "replace") if isinstance(record.raw, bytes) else record.raw
                        meta = {"source": source.name, "filter_reason": record.reason, "file": path}
                        writer.write(Document(text=raw[:EXCLUDED_TEXT_LIMIT], id=doc_id, metadata=meta), rank)
                    continue
                self.stat_update(StatHints.forwarded)
                meta = {"source": source.name, "domain": source.domain, "record": record}
                yield Document(text="", id=doc_id, metadata=meta)
