"""Sample files of the test-time-compute builders: tokenised samples with per-segment flags and provenance.

The builders route traces to problem partitions and write the samples they build in this format (one Arrow IPC
stream per task, written through a temporary file renamed when complete), one row per sample:

    id, source, domain, kind, problem_key     string
    correct                                    bool (null: unknown)
    builder                                    string: "rsa_aggregate" | "markovian_chunks" (null for routed traces)
    provenance                                 string: JSON (metadata.rsa / metadata.chunk)
    ids                                        list<uint32>  the sample's tokens (segments back to back)
    seg_kind, seg_len, seg_think, seg_context  list<uint8>, list<uint32>, list<int16>, list<bool> per segment

Reading memory-maps the file (`SampleFile`: random access by row): segment ids are read-only views into it, so a task
holds only what it looks at.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from reasonpipe.segments import Segment

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("problem_key", pa.string()),
        pa.field("correct", pa.bool_()),
        pa.field("builder", pa.string()),
        pa.field("provenance", pa.string()),
        pa.field("ids", pa.list_(pa.uint32())),
        pa.field("seg_kind", pa.list_(pa.uint8())),
        pa.field("seg_len", pa.list_(pa.uint32())),
        pa.field("seg_think", pa.list_(pa.int16())),
        pa.field("seg_context", pa.list_(pa.bool_())),
    ],
    metadata={"format": "reasonpipe-built-samples", "format_version": "1"},
)
META = ("id", "source", "domain", "kind", "problem_key", "correct", "builder", "provenance")


@dataclass(frozen=True)
class BuiltSample:
    id: str
    source: str | None
    domain: str | None
    kind: str | None
    segments: list[Segment]
    problem_key: str | None = None
    correct: bool | None = None
    builder: str | None = None
    provenance: str | None = None  # JSON


def _lists(lengths: Sequence[int], values: np.ndarray, type_: pa.DataType) -> pa.Array:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=type_))


def to_batch(samples: Sequence[BuiltSample]) -> pa.RecordBatch:
    segs = [s.segments for s in samples]
    flat = [seg for ss in segs for seg in ss]
    per_sample = [len(ss) for ss in segs]
    ids = np.concatenate([seg.ids for seg in flat]) if flat else np.zeros(0, np.uint32)
    columns = [pa.array([getattr(s, c) for s in samples], SCHEMA.field(c).type) for c in META]
    columns += [
        _lists([sum(len(seg.ids) for seg in ss) for ss in segs], ids, pa.uint32()),
        _lists(per_sample, np.array([seg.kind for seg in flat], np.uint8), pa.uint8()),
        _lists(per_sample, np.array([len(seg.ids) for seg in flat], np.uint32), pa.uint32()),
        _lists(per_sample, np.array([seg.think for seg in flat], np.int16), pa.int16()),
        _lists(per_sample, np.array([seg.context for seg in flat], bool), pa.bool_()),
    ]
    return pa.record_batch(columns, schema=SCHEMA)


class SampleWriter:
    """Buffers samples and writes them in batches to `path` (temporary file renamed on `close()`; nothing on error)."""

    def __init__(self, path: str | Path, batch_tokens: int = 1 << 22) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self._sink = pa.OSFile(str(self.tmp), "wb")
        self._writer = pa.ipc.new_stream(self._sink, SCHEMA)
        self._buffer: list[BuiltSample] = []
        self._tokens, self.batch_tokens = 0, batch_tokens
        self.rows = 0

    def write(self, sample: BuiltSample) -> None:
        self._buffer.append(sample)
        self._tokens += sum(len(s.ids) for s in sample.segments)
        if self._tokens >= self.batch_tokens:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self._writer.write_batch(to_batch(self._buffer))
            self.rows += len(self._buffer)
            self._buffer, self._tokens = [], 0

    def close(self) -> None:
        self.flush()
        self._writer.close()
        self._sink.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self._sink.close()
        self.tmp.unlink(missing_ok=True)


class _Batch:
    """One record batch of a sample file as flat numpy views, so that reading a sample is slicing."""

    def __init__(self, batch: pa.RecordBatch) -> None:
        self.batch, self.rows = batch, batch.num_rows
        self.ids = batch.column("ids").flatten().to_numpy(zero_copy_only=True)
        kind_col = batch.column("seg_kind")
        offsets = kind_col.offsets.to_numpy()
        self.bounds = offsets - offsets[0]  # segments of sample i: bounds[i]:bounds[i + 1]
        self.kinds = kind_col.flatten().to_numpy().tolist()
        self.thinks = batch.column("seg_think").flatten().to_numpy().tolist()
        self.context = batch.column("seg_context").flatten().to_numpy(zero_copy_only=False).tolist()
        self.ends = np.cumsum(batch.column("seg_len").flatten().to_numpy(), dtype=np.int64).tolist()
        self._meta: list[list] | None = None

    def sample(self, i: int) -> BuiltSample:
        if self._meta is None:
            self._meta = [self.batch.column(c).to_pylist() for c in META]
        a, b = int(self.bounds[i]), int(self.bounds[i + 1])
        starts = [self.ends[a - 1] if a else 0, *self.ends[a : b - 1]]
        segs = [
            Segment(self.kinds[j], self.ids[s : self.ends[j]], self.thinks[j], self.context[j])
            for j, s in zip(range(a, b), starts)
        ]
        m = [col[i] for col in self._meta]
        return BuiltSample(m[0], m[1], m[2], m[3], segs, *m[4:])


class SampleFile:
    """A sample file, memory-mapped, with random access by row: `len`, `file[row]`, iteration, `column(name)`."""

    def __init__(self, path: str | Path) -> None:
        self.batches = [_Batch(b) for b in pa.ipc.open_stream(pa.memory_map(str(path), "r"))]
        self.first = np.cumsum([0] + [b.rows for b in self.batches])  # first row of each batch

    def __len__(self) -> int:
        return int(self.first[-1])

    def __getitem__(self, row: int) -> BuiltSample:
        k = int(np.searchsorted(self.first, row, side="right")) - 1
        return self.batches[k].sample(row - int(self.first[k]))

    def __iter__(self) -> Iterator[BuiltSample]:
        for b in self.batches:
            for i in range(b.rows):
                yield b.sample(i)

    def column(self, name: str) -> list:
        return [v for b in self.batches for v in b.batch.column(name).to_pylist()]


def read_samples(path: str | Path) -> Iterator[BuiltSample]:
    yield from SampleFile(path)
