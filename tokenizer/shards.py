"""Arrow shards: the contract between the pipeline and the trainer.

A shard is an Arrow IPC *stream* file, one row per training window:

    input_ids   fixed_size_list<uint32>[seq_len]   tokens of the window
    loss_mask   fixed_size_list<uint8>[seq_len]    1 = train on this token
    segment     fixed_size_list<uint8>[seq_len]    0 pad, 1 text, 2 prompt, 3 reasoning, 4 answer, 5 template
    doc_offsets list<uint32>                       start offset of each document in the window (first is 0)
    sample_ids  list<string>                       sample id of each document in the window

Uncompressed shards memory-map zero-copy (pyarrow, `datasets.Dataset.from_file`, polars via `pl.from_arrow`);
`lz4`/`zstd` compression trades that away for size. Files are written to a temporary name and renamed when complete.
Real tokens are the non-pad tokens (segment != 0). This module needs only pyarrow and numpy: the trainer imports it.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

Compression = Literal["lz4", "zstd"] | None
COLUMNS = ("input_ids", "loss_mask", "segment", "doc_offsets", "sample_ids")
BATCH_ROWS = 256  # rows per record batch inside a shard (ShardSet finds a row's batch by division)


def shard_schema(seq_len: int) -> pa.Schema:
    """The fixed schema of a shard with windows of `seq_len` tokens."""
    if seq_len <= 0:
        raise ValueError(f"seq_len must be > 0, got {seq_len}")
    return pa.schema(
        [
            pa.field("input_ids", pa.list_(pa.uint32(), seq_len), nullable=False),
            pa.field("loss_mask", pa.list_(pa.uint8(), seq_len), nullable=False),
            pa.field("segment", pa.list_(pa.uint8(), seq_len), nullable=False),
            pa.field("doc_offsets", pa.list_(pa.uint32()), nullable=False),
            pa.field("sample_ids", pa.list_(pa.string()), nullable=False),
        ],
        metadata={"format": "reasonpipe-shard", "format_version": "1", "seq_len": str(seq_len)},
    )


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ShardStats:
    path: str
    rows: int
    tokens: int
    real_tokens: int
    sha256: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ShardWriter:
    """Writes windows into one or more shards.

    `path` is the shard file; with `rows_per_shard` set it must contain a `{k}` format field (e.g.
    `train/00003-{k:05d}.arrow`) and a new shard k = 0, 1, ... starts every `rows_per_shard` rows.
    Rows come from `write(window)` (any object with the five column attributes, e.g. `packing.Window`) or
    `write_batch(columns)` (a mapping of the five columns; the fixed-size ones as (n, seq_len) arrays).
    `close()` returns the stats of every shard written; nothing is written for zero rows.
    """

    def __init__(
        self,
        path: str | Path,
        seq_len: int,
        rows_per_shard: int | None = None,
        compression: Compression = None,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        self.template = str(path)
        self.multi = "{k" in self.template
        if rows_per_shard is not None and rows_per_shard <= 0:
            raise ValueError(f"rows_per_shard must be > 0, got {rows_per_shard}")
        if rows_per_shard is not None and not self.multi:
            raise ValueError(f"rows_per_shard needs a '{{k}}' field in the shard path, got {self.template!r}")
        if compression not in (None, "lz4", "zstd"):
            raise ValueError(f"compression must be null, 'lz4' or 'zstd', got {compression!r}")
        self.seq_len = seq_len
        self.schema = shard_schema(seq_len)
        self.rows_per_shard = rows_per_shard
        self.batch_rows = batch_rows
        self.options = pa.ipc.IpcWriteOptions(compression=compression)
        self.stats: list[ShardStats] = []
        self._k = 0
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._sink: Any = None
        self._tmp: Path | None = None
        self._rows = 0  # rows in the current shard
        self._real = 0
        self._new_buffer()
        self._closed = False

    # buffering -------------------------------------------------------------------------------------------------
    def _new_buffer(self) -> None:
        n, s = self.batch_rows, self.seq_len
        self._ids = np.zeros((n, s), np.uint32)
        self._mask = np.zeros((n, s), np.uint8)
        self._seg = np.zeros((n, s), np.uint8)
        self._offsets: list[Sequence[int]] = []
        self._sample_ids: list[Sequence[str]] = []
        self._n = 0

    def _room(self) -> int:
        """Rows that still fit in the buffer without crossing a shard boundary."""
        room = self.batch_rows - self._n
        if self.rows_per_shard is not None:
            room = min(room, self.rows_per_shard - self._rows - self._n)
        return room

    def write(self, window: Any) -> None:
        """Append one window (attributes input_ids, loss_mask, segment, doc_offsets, sample_ids)."""
        ids = window.input_ids
        if len(ids) != self.seq_len:
            raise ValueError(f"window has {len(ids)} tokens, shard seq_len is {self.seq_len}")
        i = self._n
        self._ids[i] = ids
        self._mask[i] = window.loss_mask
        self._seg[i] = window.segment
        self._offsets.append(window.doc_offsets)
        self._sample_ids.append(window.sample_ids)
        self._n += 1
        if self._room() == 0:
            self._flush()

    def write_windows(self, windows: Iterable[Any]) -> None:
        for w in windows:
            self.write(w)

    def write_batch(self, columns: Mapping[str, Any]) -> None:
        """Append rows given column-wise: input_ids/loss_mask/segment (n, seq_len), doc_offsets, sample_ids."""
        missing = [c for c in COLUMNS if c not in columns]
        if missing:
            raise ValueError(f"write_batch: missing columns {missing}; expected {list(COLUMNS)}")
        ids = np.asarray(columns["input_ids"])
        if ids.ndim != 2 or ids.shape[1] != self.seq_len:
            raise ValueError(f"write_batch: input_ids must have shape (n, {self.seq_len}), got {ids.shape}")
        mask, seg = np.asarray(columns["loss_mask"]), np.asarray(columns["segment"])
        offsets, sids = list(columns["doc_offsets"]), list(columns["sample_ids"])
        n, start = len(ids), 0
        if not (len(mask) == len(seg) == len(offsets) == len(sids) == n):
            raise ValueError("write_batch: all columns must have the same number of rows")
        while start < n:
            take = min(self._room(), n - start)
            sl, dst = slice(start, start + take), slice(self._n, self._n + take)
            self._ids[dst], self._mask[dst], self._seg[dst] = ids[sl], mask[sl], seg[sl]
            self._offsets.extend(offsets[sl])
            self._sample_ids.extend(sids[sl])
            self._n += take
            start += take
            if self._room() == 0:
                self._flush()

    # output ----------------------------------------------------------------------------------------------------
    def _path(self, k: int) -> Path:
        return Path(self.template.format(k=k)) if self.multi else Path(self.template)

    def _flush(self) -> None:
        n = self._n
        if n == 0:
            return
        if self._writer is None:
            final = self._path(self._k)
            final.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
            self._sink = pa.OSFile(str(self._tmp), "wb")
            self._writer = pa.ipc.new_stream(self._sink, self.schema, options=self.options)
        s = self.seq_len
        batch = pa.record_batch(
            [
                pa.FixedSizeListArray.from_arrays(pa.array(self._ids[:n].reshape(-1)), s),
                pa.FixedSizeListArray.from_arrays(pa.array(self._mask[:n].reshape(-1)), s),
                pa.FixedSizeListArray.from_arrays(pa.array(self._seg[:n].reshape(-1)), s),
                pa.array([list(map(int, o)) for o in self._offsets], pa.list_(pa.uint32())),
                pa.array([list(x) for x in self._sample_ids], pa.list_(pa.string())),
            ],
            schema=self.schema,
        )
        self._writer.write_batch(batch)
        self._rows += n
        self._real += int(np.count_nonzero(self._seg[:n]))
        self._new_buffer()
        if self.rows_per_shard is not None and self._rows >= self.rows_per_shard:
            self._finish_shard()

    def _finish_shard(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._sink.close()
        assert self._tmp is not None
        with open(self._tmp, "rb+") as f:
            os.fsync(f.fileno())
        final = self._path(self._k)
        os.replace(self._tmp, final)
        self.stats.append(
            ShardStats(
                path=str(final),
                rows=self._rows,
                tokens=self._rows * self.seq_len,
                real_tokens=self._real,
                sha256=sha256_file(final),
                bytes=final.stat().st_size,
            )
        )
        self._writer, self._sink, self._tmp = None, None, None
        self._rows, self._real = 0, 0
        self._k += 1

    def close(self) -> list[ShardStats]:
        if not self._closed:
            self._flush()
            self._finish_shard()
            self._closed = True
        return self.stats

    def abort(self) -> None:
        """Drop the shard being written (its temporary file); completed shards stay."""
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            assert self._tmp is not None
            self._tmp.unlink(missing_ok=True)
            self._writer, self._sink, self._tmp = None, None, None
        self._closed = True

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# reading -------------------------------------------------------------------------------------------------------


def open_shard(path: str | Path) -> pa.Table:
    """Memory-map a shard; uncompressed shards are read zero-copy (the table's buffers point into the map)."""
    source = pa.memory_map(str(path), "r")
    return pa.ipc.open_stream(source).read_all()


@dataclass(frozen=True)
class WindowRecord:
    """One window as numpy views into a memory-mapped shard."""

    input_ids: np.ndarray  # uint32 (seq_len,)
    loss_mask: np.ndarray  # uint8 (seq_len,)
    segment: np.ndarray  # uint8 (seq_len,)
    doc_offsets: np.ndarray  # uint32 (documents,)
    sample_ids: list[str]


class _Shard:
    """Numpy views over the record batches of one memory-mapped shard."""

    def __init__(self, path: Path, seq_len: int) -> None:
        table = open_shard(path)
        if table.schema.field("input_ids").type.list_size != seq_len:
            raise ValueError(
                f"{path}: windows of {table.schema.field('input_ids').type.list_size} tokens, expected {seq_len}"
            )
        self.table = table
        self.rows = table.num_rows
        self.batches = table.to_batches()
        self.starts = np.cumsum([0] + [b.num_rows for b in self.batches[:-1]]).tolist()
        sizes = {b.num_rows for b in self.batches[:-1]}
        self.uniform = sizes.pop() if len(sizes) == 1 else None  # all batches but the last have this many rows
        self._cache: dict[int, tuple[np.ndarray, ...]] = {}

    def _views(self, b: int) -> tuple[np.ndarray, ...]:
        views = self._cache.get(b)
        if views is None:
            batch, out = self.batches[b], []
            for name in ("input_ids", "loss_mask", "segment"):
                col = batch.column(name)
                out.append(col.flatten().to_numpy(zero_copy_only=True).reshape(-1, col.type.list_size))
            offs = batch.column("doc_offsets")
            starts = offs.offsets.to_numpy(zero_copy_only=True)
            out.append(starts - starts[0])  # relative to the flattened values
            out.append(offs.flatten().to_numpy(zero_copy_only=True))
            views = self._cache[b] = tuple(out)
        return views

    def locate(self, row: int) -> tuple[int, int]:
        if self.uniform:
            b = min(row // self.uniform, len(self.batches) - 1)
        else:
            b = bisect.bisect_right(self.starts, row) - 1
        return b, row - self.starts[b]

    def window(self, row: int) -> WindowRecord:
        b, r = self.locate(row)
        ids, mask, seg, off_idx, off_val = self._views(b)
        sids = self.batches[b].column("sample_ids")[r].values.to_pylist()
        return WindowRecord(ids[r], mask[r], seg[r], off_val[off_idx[r] : off_idx[r + 1]], sids)

    def column(self, name: str) -> np.ndarray:
        """A fixed-size column of the whole shard as an (rows, seq_len) array (one copy if several batches)."""
        parts = [self._views(b)[("input_ids", "loss_mask", "segment").index(name)] for b in range(len(self.batches))]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class ShardSet:
    """Random access to the windows of one split of an OUTPUT folder (from its index.json).

    `ss[i]` is window i of the split in index order, as numpy views into memory-mapped shards;
    `locate(i)` gives (shard number, row). Shards are opened lazily and kept open.
    """

    def __init__(self, output_dir: str | Path, split: Literal["train", "val"] = "train") -> None:
        self.root = Path(output_dir)
        index_path = self.root / "index.json"
        if not index_path.exists():
            raise FileNotFoundError(f"{index_path} not found: not a reasonpipe output folder")
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.index = index
        self.split = split
        self.seq_len = int(index["seq_len"])
        entries = [s for s in index["shards"] if s["split"] == split]
        self.paths = [self.root / s["path"] for s in entries]
        self.shard_rows = [int(s["rows"]) for s in entries]
        self._init_offsets()

    @classmethod
    def from_paths(cls, paths: Sequence[str | Path], seq_len: int) -> ShardSet:
        """A ShardSet over explicit shard files (row counts read from the files)."""
        self = cls.__new__(cls)
        self.root, self.index, self.split, self.seq_len = None, {}, "train", seq_len
        self.paths = [Path(p) for p in paths]
        self.shard_rows = [open_shard(p).num_rows for p in self.paths]
        self._init_offsets()
        return self

    def _init_offsets(self) -> None:
        self.starts = np.cumsum([0] + self.shard_rows).tolist()
        self._shards: dict[int, _Shard] = {}

    def __len__(self) -> int:
        return self.starts[-1]

    @property
    def num_tokens(self) -> int:
        return len(self) * self.seq_len

    def shard(self, s: int) -> _Shard:
        sh = self._shards.get(s)
        if sh is None:
            sh = self._shards[s] = _Shard(self.paths[s], self.seq_len)
            if sh.rows != self.shard_rows[s]:
                raise ValueError(f"{self.paths[s]}: {sh.rows} rows, index.json says {self.shard_rows[s]}")
        return sh

    def locate(self, i: int) -> tuple[int, int]:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"window {i} out of range for {n} windows")
        s = bisect.bisect_right(self.starts, i) - 1
        return s, i - self.starts[s]

    def __getitem__(self, i: int) -> WindowRecord:
        s, r = self.locate(i)
        return self.shard(s).window(r)

    def __iter__(self) -> Iterator[WindowRecord]:
        for i in range(len(self)):
            yield self[i]
