"""Work files of the global dedup steps on any filesystem datatrove supports (a `DataFolder`: a local path, `file://`,
`s3://`, `memory://`, ...), so tasks on different machines can share an object store instead of a POSIX mount.

Three kinds of file, all little-endian numpy data:
- an `.npy` array (`write_npy` / `read_npy`): small things read whole (partition offsets, verified edges);
- a *column*: a raw file of one dtype appended in batches (`Column`), read back by rows or spans (`read_spans`)
  without loading the file: memory-mapped when local, coalesced byte-range reads otherwise;
- a *partitioned* file (`write_partitioned` / `read_partition`): one producer's rows sorted by partition, plus an index
  of partition offsets, so consumer p reads only its byte range of every producer's file.
Whole-file writes go to a temporary name and are renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import io

import numpy as np
from datatrove.io import DataFolder, get_datafolder

from reasonpipe.filters.minhash_core import segment_indices

_GAP = 1 << 16  # remote reads: byte ranges closer than this are fetched as one request


def folder(path: str | DataFolder) -> DataFolder:
    """The `DataFolder` of a path or URL (pass-through for a DataFolder)."""
    return get_datafolder(path)


def write_bytes(df: DataFolder, name: str, data: bytes) -> None:
    """Write a whole file atomically (temporary name, then rename)."""
    with df.open(name + ".tmp", "wb") as f:
        f.write(data)
    df.mv(name + ".tmp", name)


def write_npy(df: DataFolder, name: str, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    write_bytes(df, name, buf.getvalue())


def read_npy(df: DataFolder, name: str) -> np.ndarray:
    if not df.exists(name):
        raise FileNotFoundError(f"{df.resolve_paths(name)} is missing: the run that writes it did not complete")
    with df.open(name, "rb") as f:
        return np.load(io.BytesIO(f.read()), allow_pickle=False)


class Column:
    """Appends arrays of one dtype to a raw file; `append` returns the row where the batch starts."""

    def __init__(self, df: DataFolder, name: str, dtype: np.dtype):
        self.dtype, self.rows = np.dtype(dtype), 0
        self._file = df.open(name, "wb")

    def append(self, values: np.ndarray) -> int:
        start = self.rows
        values = np.ascontiguousarray(values, dtype=self.dtype)
        self._file.write(values.tobytes())
        self.rows += len(values)
        return start

    def close(self) -> None:
        self._file.close()


def read_spans(
    df: DataFolder, name: str, dtype: np.dtype, starts: np.ndarray, lens: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows `starts[i] : starts[i] + lens[i]` of a column, concatenated in the order given, and their offsets."""
    dtype = np.dtype(dtype)
    starts, lens = np.asarray(starts, dtype=np.int64), np.asarray(lens, dtype=np.int64)
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    if offsets[-1] == 0:
        return np.zeros(0, dtype=dtype), offsets
    if df.is_local():  # memory-map: the page cache serves repeated reads, nothing is loaded whole
        mm = np.memmap(df.resolve_paths(name), dtype=dtype, mode="r")
        return np.asarray(mm[segment_indices(starts, lens)]), offsets
    # remote: fetch merged byte ranges (spans sorted by start, neighbours closer than _GAP merged), then gather
    nonempty = np.flatnonzero(lens > 0)
    order = nonempty[np.argsort(starts[nonempty], kind="stable")]
    lo, hi = starts[order], starts[order] + lens[order]
    reach = np.maximum.accumulate(hi)
    new_block = np.ones(len(order), dtype=bool)
    new_block[1:] = (lo[1:] - reach[:-1]) * dtype.itemsize > _GAP
    block = np.cumsum(new_block) - 1
    block_lo = lo[new_block]
    block_hi = np.maximum.reduceat(hi, np.flatnonzero(new_block))
    chunks = df.cat_ranges(
        [name] * len(block_lo),
        (block_lo * dtype.itemsize).tolist(),
        (block_hi * dtype.itemsize).tolist(),
        on_error="raise",
    )
    buffer = np.frombuffer(b"".join(chunks), dtype=dtype)
    sizes = block_hi - block_lo
    block_at = np.cumsum(sizes) - sizes  # where each block starts in the buffer
    where = np.zeros(len(starts), dtype=np.int64)
    where[order] = block_at[block] + (lo - block_lo[block])
    return buffer[segment_indices(where, lens)], offsets


def read_rows(df: DataFolder, name: str, dtype: np.dtype, rows: np.ndarray) -> np.ndarray:
    """The given rows of a column (any order, repeats allowed)."""
    return read_spans(df, name, dtype, rows, np.ones(len(rows), dtype=np.int64))[0]


def write_partitioned(df: DataFolder, name: str, rows: np.ndarray, part: np.ndarray, parts: int) -> None:
    """`name.bin`: `rows` sorted by `part` (stable); `name.idx.npy`: where each of the `parts` partitions starts."""
    order = np.argsort(part, kind="stable")
    write_bytes(df, name + ".bin", np.ascontiguousarray(rows[order]).tobytes())
    write_npy(df, name + ".idx.npy", np.searchsorted(part[order], np.arange(parts + 1)))


def read_partition(df: DataFolder, name: str, dtype: np.dtype, part: int) -> np.ndarray:
    """The rows of partition `part` of a file written by `write_partitioned`."""
    bounds = read_npy(df, name + ".idx.npy")
    start, end = int(bounds[part]), int(bounds[part + 1])
    return read_spans(df, name + ".bin", dtype, np.array([start]), np.array([end - start]))[0]


def partition_of(keys: np.ndarray, parts: int) -> np.ndarray:
    """Hash-range partition of uniformly distributed uint64 keys: the top 32 bits scaled to [0, parts)."""
    return (((keys >> np.uint64(32)) * np.uint64(parts)) >> np.uint64(32)).astype(np.int64)
