"""The shared end of the dedup stages: document ids in their work files, removal lists, and the filter applying them.

A signing step gives each document of rank r a row (its position in the rank's stream, selected or not) and a global
id `gid = r << 32 | row`; it appends the document's id to `signatures/{r}.ids` and a record with the id's position to
`signatures/{r}.docs`, so a later step looks up the ids of just the documents it removes. The steps that decide write
`removals/{r}/{producer}.json` = `[[id, kept_id | None, new_problem_key | None, row], ...]` for every rank;
`RemovalFilter`, in the next streaming run, applies rank r's lists.

Signers of consecutive dedup stages ride one streaming run (pipeline/runs.py `Chain.materialize`), so they number the
same documents alike: before a later stage's global steps, `DropRemovedRows` takes the rows the earlier stages remove
out of its signatures, which gives the result of running the stages one after the other without reading the documents
again in between.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolder
from datatrove.pipeline.base import PipelineStep

from reasonpipe.filters.base import CountingFilter
from reasonpipe.filters.workfiles import (
    Column,
    folder,
    partition_of,
    read_npy,
    read_partition,
    read_rows,
    read_spans,
    write_bytes,
    write_partitioned,
)

ROW = np.int64(0xFFFFFFFF)  # gid & ROW: the row within its rank


def gid_of(rank: int, rows: np.ndarray) -> np.ndarray:
    return (np.int64(rank) << np.int64(32)) | rows.astype(np.int64)


def sig_name(rank: int, kind: str) -> str:
    return f"signatures/{rank:05d}.{kind}"


def gather_signed(
    df: DataFolder, kind: str, dtype: np.dtype, field: str, sign_tasks: int, part: int
) -> tuple[np.ndarray, np.ndarray]:
    """Partition `part` of every signing task's `kind` file: its `field` column and the rows' gids, concatenated in
    signing-task order (memory: this partition's rows of every signer)."""
    values, gids = [np.zeros(0, np.uint64)], [np.zeros(0, np.int64)]
    for r in range(sign_tasks):
        rows = read_partition(df, sig_name(r, kind), dtype, part)
        values.append(rows[field])
        gids.append(gid_of(r, rows["row"]))
    return np.concatenate(values), np.concatenate(gids)


def removal_lists(work_dir: str | DataFolder, producers: int, rank: int) -> Iterator[list]:
    """The rows `[id, kept_id, new_key, row]` a dedup stage's `producers` tasks wrote for `rank`."""
    df = folder(work_dir)
    for p in range(producers):
        name = f"removals/{rank:05d}/{p:04d}.json"
        if not df.exists(name):
            path = df.resolve_paths(name)
            raise FileNotFoundError(f"{path} is missing: the dedup runs before this one did not complete")
        with df.open(name, "rb") as f:
            yield from json.load(f)


def removed_rows(stages: Sequence, rank: int) -> np.ndarray:
    """Rows of `rank` that the `(work_dir, producers)` stages remove (relabelled-only rows stay)."""
    rows = [row for work_dir, producers in stages for _, kept, _, row in removal_lists(work_dir, producers, rank)
            if kept is not None]  # fmt: skip
    return np.array(rows, dtype=np.int64)


class DropRemovedRows(PipelineStep):
    """Task r of T: this stage's `kind` signatures of rank r without the rows that earlier dedup stages remove (`skip`:
    their `(work_dir, producers)`; their signers rode the same run), written partitioned as `{kind}-kept`. Reads the
    originals and writes a new file, so a re-run task does the same again. Memory: rank r's rows and removals."""

    type = "🫂 - DEDUP"
    name = "🫂 drop removed rows"

    def __init__(self, work_dir: str, kind: str, dtype: np.dtype, key: str, parts: int, skip: Sequence):
        super().__init__()
        self.work_dir, self.kind, self.dtype, self.key, self.parts, self.skip = work_dir, kind, dtype, key, parts, skip

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        df = folder(self.work_dir)
        with self.track_time():
            name = sig_name(rank, self.kind)
            rows = read_spans(df, name + ".bin", self.dtype, np.array([0]), read_npy(df, name + ".idx.npy")[-1:])[0]
            keep = ~np.isin(rows["row"], removed_rows(self.skip, rank))
            rows = rows[keep]
            write_partitioned(df, f"{name}-kept", rows, partition_of(rows[self.key], self.parts), self.parts)
            self.stat_update("dropped_rows", value=int(np.sum(~keep)))
        return
        yield


def signatures_to_read(chain, ctx, run_name: str, kind: str, dtype: np.dtype, key: str, parts: int) -> str:
    """The `kind` signatures a dedup stage's global steps read: as its signer wrote them, or, when the signer rode
    the run of earlier dedup stages (`chain.pending_removals()`), `{kind}-kept` made by a `{run_name}-drop-removed`
    run added here."""
    if not (skip := chain.pending_removals()):
        return kind
    drop = DropRemovedRows(ctx.work_dir, kind, dtype, key, parts, skip)
    chain.add_run(f"{run_name}-drop-removed", [drop], tasks=ctx.tasks)
    return f"{kind}-kept"


def lookup_ids(df: DataFolder, record_dtype: np.dtype, gids: np.ndarray) -> dict[int, str]:
    """{gid: document id} for the given gids, from the records (`{r}.docs`: fields `id`, `nid`) and `{r}.ids`."""
    out: dict[int, str] = {}
    gids = np.unique(gids)
    for rank in np.unique(gids >> 32).tolist():
        mine = gids[(gids >> 32) == rank]
        rec = read_rows(df, sig_name(rank, "docs"), record_dtype, mine & ROW)
        blob, off = read_spans(df, sig_name(rank, "ids"), np.uint8, rec["id"], rec["nid"])
        raw = blob.tobytes()
        for g, lo, hi in zip(mine.tolist(), off[:-1].tolist(), off[1:].tolist()):
            out[g] = raw[lo:hi].decode("utf-8", "surrogatepass")
    return out


def append_ids(ids: Column, doc_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Append document ids (UTF-8) to an ids column; returns each one's first byte and length."""
    raw = [i.encode("utf-8", "surrogatepass") for i in doc_ids]
    lens = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
    start = ids.append(np.frombuffer(b"".join(raw), dtype=np.uint8))
    return start + np.cumsum(lens) - lens, lens


def write_removals(df: DataFolder, ranks: int, rows: dict[int, list], producer: int = 0) -> None:
    """`removals/{rank}/{producer}.json` for every rank (empty lists included): `[[id, kept_id, new_key, row], ...]`
    (`row`: the document's position in its rank's stream)."""
    for rank in range(ranks):
        write_bytes(df, f"removals/{rank:05d}/{producer:04d}.json", json.dumps(sorted(rows.get(rank, []))).encode())


class RemovalFilter(CountingFilter):
    """Drop the documents listed for this rank in `removals/{rank}/*.json` (from `producers` tasks), tagging
    `duplicate_of`; rows without a kept id only relabel `problem_key`. Memory: this rank's rows."""

    name = "🫂 remove duplicates"

    def __init__(self, work_dir: str, reason: str, producers: int = 1, exclusion_writer=None, relabels: bool = False):
        super().__init__(exclusion_writer=exclusion_writer)
        self.work_dir, self.reason, self.producers = work_dir, reason, producers
        self.relabels = relabels  # whether it may rewrite `problem_key` (a later signer must then see its output)
        self._rows: dict[str, tuple[str | None, str | None]] = {}

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        lists = removal_lists(self.work_dir, self.producers, rank)
        self._rows = {doc_id: (kept, key) for doc_id, kept, key, _ in lists}
        yield from super().run(data, rank, world_size)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        row = self._rows.get(doc.id)
        if row is None:
            return True
        kept, key = row
        if key is not None:
            doc.metadata["problem_key"] = key
            self.stat_update("relabeled")
        if kept is None:
            return True
        doc.metadata["filter_reason"] = self.reason
        doc.metadata["duplicate_of"] = kept
        return False, self.reason
