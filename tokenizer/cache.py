"""The tokenised corpus cache: samples encoded once as segments, re-trimmable to any context later.

One Arrow IPC stream file per task, one row per sample:

    id, source, domain, kind   string
    n_tokens                   uint32          tokens of the whole sample
    ids                        list<uint32>    the sample's tokens (its segments concatenated)
    seg_kind                   list<uint8>     SEG_* code of each segment
    seg_len                    list<uint32>    tokens of each segment
    seg_think                  list<int16>     think-block index of each segment (-1: none)

Reading memory-maps the file: segment ids are read-only numpy views into it. No datatrove here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from trimming.core import Segment

CACHE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("kind", pa.string()),
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


def _list_array(lengths: Sequence[int], values: np.ndarray, type_: pa.DataType) -> pa.Array:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=type_))


def cache_batch(meta: Sequence[tuple[str, Any, Any, Any]], segments: Sequence[Sequence[Segment]]) -> pa.RecordBatch:
    """A record batch of samples: `meta` = (id, source, domain, kind) per sample, `segments` its segment list."""
    flat = [s for segs in segments for s in segs]
    seg_lens = np.fromiter((len(s.ids) for s in flat), dtype=np.uint32, count=len(flat))
    per_doc_segs = [len(segs) for segs in segments]
    bounds = np.zeros(len(segments) + 1, dtype=np.int64)
    np.cumsum(per_doc_segs, out=bounds[1:])
    cum = np.zeros(len(flat) + 1, dtype=np.int64)
    np.cumsum(seg_lens, out=cum[1:])
    n_tokens = (cum[bounds[1:]] - cum[bounds[:-1]]).astype(np.uint32)
    ids = np.concatenate([s.ids for s in flat]).astype(np.uint32, copy=False) if flat else np.zeros(0, np.uint32)
    kinds = np.fromiter((s.kind for s in flat), dtype=np.uint8, count=len(flat))
    thinks = np.fromiter((s.think for s in flat), dtype=np.int16, count=len(flat))
    cols = list(zip(*meta)) if meta else [(), (), (), ()]
    return pa.record_batch(
        [
            pa.array(cols[0], pa.string()),
            pa.array(cols[1], pa.string()),
            pa.array(cols[2], pa.string()),
            pa.array(cols[3], pa.string()),
            pa.array(n_tokens),
            _list_array(n_tokens, ids, pa.uint32()),
            _list_array(per_doc_segs, kinds, pa.uint8()),
            _list_array(per_doc_segs, seg_lens, pa.uint32()),
            _list_array(per_doc_segs, thinks, pa.int16()),
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

    def write(self, meta: Sequence[tuple[str, Any, Any, Any]], segments: Sequence[Sequence[Segment]]) -> None:
        if meta:
            self._writer.write_batch(cache_batch(meta, segments))
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
        ids = _np(batch.column("ids").flatten())  # the batch's segments back to back
        seg_off = _np(kind_col.offsets)
        seg_off = (seg_off - seg_off[0]).tolist()
        kinds = _np(kind_col.flatten()).tolist()
        lens = _np(batch.column("seg_len").flatten())
        thinks = _np(batch.column("seg_think").flatten()).tolist()
        meta = [batch.column(c).to_pylist() for c in ("id", "source", "domain", "kind")]
        starts = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=starts[1:])
        starts = starts.tolist()
        for r in range(batch.num_rows):
            segs = [
                Segment(kinds[j], ids[starts[j] : starts[j + 1]], thinks[j]) for j in range(seg_off[r], seg_off[r + 1])
            ]
            yield CachedSample(meta[0][r], meta[1][r], meta[2][r], meta[3][r], segs)
