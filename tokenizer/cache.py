"""The tokenised corpus cache: samples encoded once as segments, re-trimmable to any context later.

One Arrow IPC stream file per task, one row per sample:

    id, source, domain, kind   string
    problem_key, upstream_id   string (null when the sample has none; see reasonpipe.sample)
    correct                    bool            `metadata["correct"]` of `answer_verify` (null: unknown or not judged)
    n_tokens                   uint32          tokens of the whole sample
    ids                        list<uint32>    the sample's tokens (its segments concatenated)
    seg_kind                   list<uint8>     SEG_* code of each segment
    seg_len                    list<uint32>    tokens of each segment
    seg_think                  list<int16>     think-block index of each segment (-1: none)

Writing takes an `EncodedBatch` (the template encodes straight into these columns, no per-segment objects); reading
memory-maps a local file (streams any other fsspec file) and builds `Segment`s (for trimming) whose ids are read-only
numpy views into it. Files are written and read through an fsspec filesystem (datatrove's `DataFolder` is one), so
the cache can live on an object store. No datatrove import here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from reasonpipe.segments import Segment

FORMAT_VERSION = "3"
META_COLUMNS = ("id", "source", "domain", "kind", "problem_key", "upstream_id", "correct")
CACHE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("problem_key", pa.string()),
        pa.field("upstream_id", pa.string()),
        pa.field("correct", pa.bool_()),
        pa.field("n_tokens", pa.uint32()),
        pa.field("ids", pa.list_(pa.uint32())),
        pa.field("seg_kind", pa.list_(pa.uint8())),
        pa.field("seg_len", pa.list_(pa.uint32())),
        pa.field("seg_think", pa.list_(pa.int16())),
    ],
    metadata={"format": "reasonpipe-token-cache", "format_version": FORMAT_VERSION},
)


class SampleMeta(NamedTuple):
    """The metadata columns of one cached sample (everything but its tokens)."""

    id: str
    source: str | None = None
    domain: str | None = None
    kind: str | None = None
    problem_key: str | None = None
    upstream_id: str | None = None
    correct: bool | None = None


@dataclass
class CachedSample:
    """One sample read back: its `SampleMeta` fields and its segments."""

    id: str
    source: str | None
    domain: str | None
    kind: str | None
    problem_key: str | None
    upstream_id: str | None
    correct: bool | None
    segments: list[Segment]


@dataclass(frozen=True)
class EncodedBatch:
    """Samples encoded as the cache's columns (what `ChatTemplate.encode_batch` returns): no per-segment objects.

    `ids` holds every sample's tokens back to back; segment j has `seg_len[j]` tokens, code `seg_kind[j]` and
    think-block index `seg_think[j]`; sample i has `doc_segs[i]` segments and `n_tokens[i]` tokens.
    """

    ids: np.ndarray  # uint32, read-only
    seg_kind: np.ndarray  # uint8
    seg_len: np.ndarray  # uint32
    seg_think: np.ndarray  # int16
    doc_segs: np.ndarray  # int64
    n_tokens: np.ndarray  # uint32

    def segments(self) -> list[list[Segment]]:
        """Per sample, its `Segment`s (ids are read-only views into `ids`)."""
        ends = np.cumsum(self.seg_len, dtype=np.int64).tolist()
        kinds, thinks = self.seg_kind.tolist(), self.seg_think.tolist()
        segs = [Segment(k, self.ids[a:b], t) for k, a, b, t in zip(kinds, [0, *ends[:-1]], ends, thinks)]
        bounds = np.cumsum(self.doc_segs).tolist()
        return [segs[a:b] for a, b in zip([0, *bounds[:-1]], bounds)]


def _list_array(lengths: np.ndarray, values: np.ndarray, type_: pa.DataType) -> pa.Array:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=type_))


def cache_batch(meta: Sequence[SampleMeta | tuple], encoded: EncodedBatch) -> pa.RecordBatch:
    """A record batch of samples: `meta` per sample (`SampleMeta` fields in order, trailing ones optional),
    `encoded` their columns."""
    cols = list(zip(*(SampleMeta(*m) for m in meta))) if meta else [()] * len(META_COLUMNS)
    e = encoded
    return pa.record_batch(
        [
            *(pa.array(col, CACHE_SCHEMA.field(name).type) for name, col in zip(META_COLUMNS, cols)),
            pa.array(e.n_tokens, pa.uint32()),
            _list_array(e.n_tokens, e.ids, pa.uint32()),
            _list_array(e.doc_segs, e.seg_kind, pa.uint8()),
            _list_array(e.doc_segs, e.seg_len, pa.uint32()),
            _list_array(e.doc_segs, e.seg_think, pa.int16()),
        ],
        schema=CACHE_SCHEMA,
    )


def _fs_path(path: str | Path, fs: AbstractFileSystem | None) -> tuple[AbstractFileSystem, str]:
    return (fs or LocalFileSystem(), str(path))


class CacheWriter:
    """Writes cache batches to `path` on `fs` (local by default) via a temporary file moved into place on `close()`
    (nothing on error)."""

    def __init__(self, path: str | Path, fs: AbstractFileSystem | None = None) -> None:
        self.fs, self.path = _fs_path(path, fs)
        parent, name = self.path.rsplit("/", 1) if "/" in self.path else ("", self.path)
        self.tmp = f"{parent}/.{name}.tmp-{os.getpid()}" if parent else f".{name}.tmp-{os.getpid()}"
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        self._sink = self.fs.open(self.tmp, "wb")
        self._writer = pa.ipc.new_stream(self._sink, CACHE_SCHEMA)
        self.rows = 0

    def write(self, meta: Sequence[SampleMeta | tuple], encoded: EncodedBatch) -> None:
        if meta:
            self._writer.write_batch(cache_batch(meta, encoded))
            self.rows += len(meta)

    def close(self) -> None:
        self._writer.close()
        self._sink.close()
        self.fs.mv(self.tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self._sink.close()
        if self.fs.exists(self.tmp):
            self.fs.rm(self.tmp)

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close() if exc_type is None else self.abort()


def _np(arr: pa.Array) -> np.ndarray:
    return arr.to_numpy(zero_copy_only=True)


def open_cache(path: str | Path, fs: AbstractFileSystem | None = None) -> pa.ipc.RecordBatchStreamReader:
    """A reader over the record batches of a cache file: memory-mapped when local, streamed otherwise.

    A cache written by another format version is an error that says what to do (its columns differ)."""
    fs, path = _fs_path(path, fs)
    if hasattr(fs, "is_local") and fs.is_local():  # a local datatrove DataFolder: map the file it points at
        fs, path = LocalFileSystem(), fs.resolve_paths(path)
    source = (
        pa.memory_map(path, "r") if isinstance(fs, LocalFileSystem) else pa.PythonFile(fs.open(path, "rb"), mode="r")
    )
    reader = pa.ipc.open_stream(source)
    found = (reader.schema.metadata or {}).get(b"format_version", b"?").decode()
    if found != FORMAT_VERSION:
        raise ValueError(
            f"token cache {path}: format version {found}, this reasonpipe reads version {FORMAT_VERSION}; "
            "it was made by another version: re-run with --force (or remove the work folder) to re-tokenise"
        )
    return reader


def batch_meta(batch: pa.RecordBatch) -> list[SampleMeta]:
    """The metadata of every sample of a cache record batch."""
    return [SampleMeta(*row) for row in zip(*(batch.column(c).to_pylist() for c in META_COLUMNS))]


def batch_samples(batch: pa.RecordBatch, rows: Sequence[int] | None = None) -> list[list[Segment]]:
    """The segments of the samples `rows` (all by default) of a cache record batch, as read-only views into it."""
    kind_col = batch.column("seg_kind")
    if rows is not None and len(rows) < batch.num_rows:
        return [_row_segments(batch, i) for i in rows]
    return EncodedBatch(
        ids=_np(batch.column("ids").flatten()),  # the batch's segments back to back
        seg_kind=_np(kind_col.flatten()),
        seg_len=_np(batch.column("seg_len").flatten()),
        seg_think=_np(batch.column("seg_think").flatten()),
        doc_segs=np.diff(_np(kind_col.offsets)),
        n_tokens=_np(batch.column("n_tokens")),
    ).segments()


def _row_segments(batch: pa.RecordBatch, i: int) -> list[Segment]:
    ids = _np(batch.column("ids")[i].values)
    kinds, lens = batch.column("seg_kind")[i].values.to_pylist(), batch.column("seg_len")[i].values.to_pylist()
    thinks = batch.column("seg_think")[i].values.to_pylist()
    ends = np.cumsum(lens).tolist()
    return [Segment(k, ids[a:b], t) for k, a, b, t in zip(kinds, [0, *ends[:-1]], ends, thinks)]


def read_cache(
    path: str | Path,
    fs: AbstractFileSystem | None = None,
    select: Callable[[SampleMeta], bool] | None = None,
) -> Iterator[CachedSample]:
    """Samples of a cache file in order (those `select` accepts, when given); segment ids are read-only views.

    Segments are built only for the selected samples, so a selective pass over a cache costs little more than
    reading its metadata columns."""
    for batch in open_cache(path, fs):
        meta = batch_meta(batch)
        rows = [i for i, m in enumerate(meta) if select(m)] if select else None
        for i, segs in zip(rows if rows is not None else range(len(meta)), batch_samples(batch, rows)):
            yield CachedSample(*meta[i], segments=segs)
