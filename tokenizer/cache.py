"""The tokenised corpus cache: samples encoded once as segments, re-trimmable to any context later.

One Arrow IPC stream file per task, one row per sample:

    id, source, domain, kind   string
    problem_key                string          chat samples: the problem's key (`metadata["problem_key"]`)
    correct                    bool            `metadata["correct"]` of `answer_verify` (null: unknown or not judged)
    n_tokens                   uint32          tokens of the whole sample
    ids                        list<uint32>    the sample's tokens (its segments concatenated)
    seg_kind                   list<uint8>     SEG_* code of each segment
    seg_len                    list<uint32>    tokens of each segment
    seg_think                  list<int16>     think-block index of each segment (-1: none)

Writing takes an `EncodedBatch` (the template encodes straight into these columns, no per-segment objects); reading
memory-maps the file and builds `Segment`s (for trimming) whose ids are read-only numpy views into it. No datatrove.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from reasonpipe.segments import Segment

CACHE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("problem_key", pa.string()),
        pa.field("correct", pa.bool_()),
        pa.field("n_tokens", pa.uint32()),
        pa.field("ids", pa.list_(pa.uint32())),
        pa.field("seg_kind", pa.list_(pa.uint8())),
        pa.field("seg_len", pa.list_(pa.uint32())),
        pa.field("seg_think", pa.list_(pa.int16())),
    ],
    metadata={"format": "reasonpipe-token-cache", "format_version": "1"},
)


@dataclass
class CachedSample:
    id: str
    source: str | None
    domain: str | None
    kind: str | None
    segments: list[Segment]
    problem_key: str | None = None
    correct: bool | None = None


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


def cache_batch(meta: Sequence[tuple], encoded: EncodedBatch) -> pa.RecordBatch:
    """A record batch of samples: `meta` = (id, source, domain, kind[, problem_key, correct]) per sample."""
    cols = list(zip(*meta)) if meta else [()] * 6
    cols += [(None,) * len(meta)] * (6 - len(cols))
    e = encoded
    return pa.record_batch(
        [
            pa.array(cols[0], pa.string()),
            pa.array(cols[1], pa.string()),
            pa.array(cols[2], pa.string()),
            pa.array(cols[3], pa.string()),
            pa.array(cols[4], pa.string()),
            pa.array(cols[5], pa.bool_()),
            pa.array(e.n_tokens, pa.uint32()),
            _list_array(e.n_tokens, e.ids, pa.uint32()),
            _list_array(e.doc_segs, e.seg_kind, pa.uint8()),
            _list_array(e.doc_segs, e.seg_len, pa.uint32()),
            _list_array(e.doc_segs, e.seg_think, pa.int16()),
        ],
        schema=CACHE_SCHEMA,
    )


class CacheWriter:
    """Writes cache batches to `path` via a temporary file renamed on `close()` (nothing on error)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self._sink = pa.OSFile(str(self.tmp), "wb")
        self._writer = pa.ipc.new_stream(self._sink, CACHE_SCHEMA)
        self.rows = 0

    def write(self, meta: Sequence[tuple], encoded: EncodedBatch) -> None:
        if meta:
            self._writer.write_batch(cache_batch(meta, encoded))
            self.rows += len(meta)

    def close(self) -> None:
        self._writer.close()
        self._sink.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self._sink.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close() if exc_type is None else self.abort()


def _np(arr: pa.Array) -> np.ndarray:
    return arr.to_numpy(zero_copy_only=True)


def read_cache(path: str | Path) -> Iterator[CachedSample]:
    """Samples of a cache file in order; segment ids are read-only views into the memory-mapped file."""
    reader = pa.ipc.open_stream(pa.memory_map(str(path), "r"))
    for batch in reader:
        kind_col = batch.column("seg_kind")
        encoded = EncodedBatch(
            ids=_np(batch.column("ids").flatten()),  # the batch's segments back to back
            seg_kind=_np(kind_col.flatten()),
            seg_len=_np(batch.column("seg_len").flatten()),
            seg_think=_np(batch.column("seg_think").flatten()),
            doc_segs=np.diff(_np(kind_col.offsets)),
            n_tokens=_np(batch.column("n_tokens")),
        )
        names = ("id", "source", "domain", "kind", "problem_key", "correct")  # a cache from before problem_key: None
        meta = [batch.column(c).to_pylist() if c in batch.schema.names else [None] * batch.num_rows for c in names]
        for sample_id, source, domain, kind, key, correct, segs in zip(*meta, encoded.segments()):
            yield CachedSample(sample_id, source, domain, kind, segs, key, correct)
