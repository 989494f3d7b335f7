"""`exact_dedup`: remove documents whose normalised text equals an earlier document's, globally across tasks.

Runs: while the documents are materialized, each task records the 64-bit xxhash of each selected document's
normalised text and its id (`signatures/{rank}.*`, through filters/workfiles.py: any fsspec filesystem), with the
hashes partitioned by hash range into F finder shards; finder task f reads only shard f of every rank (memory
O(documents / F)), keeps the first document of each hash by (rank, position) and lists the others; the filtering
streaming run drops them with reason `duplicate_exact` and `duplicate_of`. The default normalisation (NFKC,
lowercase, collapsed whitespace) keeps digits and operators: "3+4=7" != "3-4=7".
"""

from __future__ import annotations

from array import array

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from pydantic import Field

from reasonpipe.filters.normalize import Normalization, normalize
from reasonpipe.filters.removals import (
    ROW,
    RemovalFilter,
    append_ids,
    gather_signed,
    lookup_ids,
    sig_name,
    signatures_to_read,
    write_removals,
)
from reasonpipe.filters.stage import BuildContext, Chain, Stage, StageOptions, register
from reasonpipe.filters.workfiles import Column, folder, partition_of, write_partitioned


class ExactDedupOptions(StageOptions):
    """Options of the `exact_dedup` stage.

    Attributes:
        normalization: how texts are normalised before hashing (default NFKC + lowercase + collapsed whitespace;
            `strip_punctuation: true` also ignores prose punctuation). Digits and operators are always kept.
        finder_tasks: tasks of the finder run (each handles 1/finder_tasks of the hash range); None = the run's tasks.
    """

    normalization: Normalization = Field(default_factory=Normalization)
    finder_tasks: int | None = Field(None, ge=1)


ID_RECORD = np.dtype([("id", "<i8"), ("nid", "<u4")])  # where a document's id is in {rank}.ids
HASH_ROW = np.dtype([("hash", "<u8"), ("row", "<u4")])


class ExactSignatureWriter(PipelineStep):
    """Record (hash of normalised text, id) of each selected document; forward every document.

    Rows are stream positions (filters/removals.py): every document gets an id record, unselected ones an empty id.
    Memory: 12 bytes per selected document of this rank until the end of the task, when the hashes are written
    partitioned by finder shard (ids are appended to `{rank}.ids` as they come).
    """

    type = "🫂 - DEDUP"
    hoistable = True  # forwards every document, rows are stream positions: may ride an earlier run (runs.Chain)
    name = "💥 exact-dedup signatures"
    _requires_dependencies = ["xxhash"]

    def __init__(self, work_dir: str, norm: Normalization, domains: tuple[str, ...] | None, finder_tasks: int):
        super().__init__()
        self.work_dir, self.norm, self.domains, self.finder_tasks = work_dir, norm, domains, finder_tasks

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from xxhash import xxh64_intdigest

        df = folder(self.work_dir)
        records, ids = Column(df, sig_name(rank, "docs"), ID_RECORD), Column(df, sig_name(rank, "ids"), np.uint8)
        hashes, rows = array("Q"), array("I")  # 12 bytes per selected document
        pending: list[str] = []  # ids not yet written ("" for documents not selected)

        def flush() -> None:
            rec = np.zeros(len(pending), dtype=ID_RECORD)
            rec["id"], rec["nid"] = append_ids(ids, pending)
            records.append(rec)
            pending.clear()

        for position, doc in enumerate(data):
            with self.track_time():
                if self.domains is None or doc.metadata.get("domain") in self.domains:
                    hashes.append(xxh64_intdigest(normalize(doc.text, self.norm).encode("utf-8", "surrogatepass")))
                    rows.append(position)
                    pending.append(doc.id)
                    self.stat_update("signed")
                else:
                    pending.append("")
                if len(pending) >= 4096:
                    flush()
            yield doc
        flush()
        records.close()
        ids.close()
        table = np.zeros(len(hashes), dtype=HASH_ROW)
        table["hash"], table["row"] = np.frombuffer(hashes, dtype=np.uint64), np.frombuffer(rows, dtype=np.uint32)
        shard = partition_of(table["hash"], self.finder_tasks)
        write_partitioned(df, sig_name(rank, "hashes"), table, shard, self.finder_tasks)


class ExactDuplicateFinder(PipelineStep):
    """Finder task f of F: the hashes of shard f from every rank; of equal hashes all but the first (by rank, then
    position) are removed. Memory: the shard's rows (~20 bytes per document / F) and the ids of its duplicates."""

    type = "🫂 - DEDUP"
    name = "💥 exact-dedup finder"

    def __init__(self, work_dir: str, sign_tasks: int, kind: str = "hashes"):
        super().__init__()
        self.work_dir, self.sign_tasks, self.kind = work_dir, sign_tasks, kind

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        df = folder(self.work_dir)
        with self.track_time():
            h, g = gather_signed(df, self.kind, HASH_ROW, "hash", self.sign_tasks, rank)
            order = np.lexsort((g, h))  # within a hash: rank, then position
            h, g = h[order], g[order]
            dup = np.flatnonzero(h[1:] == h[:-1]) + 1
            head = np.ones(len(h), dtype=bool)
            head[dup] = False
            first = g[np.maximum.accumulate(np.where(head, np.arange(len(h)), 0))]  # the kept gid of each row
            ids = lookup_ids(df, ID_RECORD, np.concatenate((g[dup], first[dup])))
            removals: dict[int, list] = {}
            for removed, kept in zip(g[dup].tolist(), first[dup].tolist()):
                removals.setdefault(removed >> 32, []).append([ids[removed], ids[kept], None, int(removed & ROW)])
            self.stat_update("duplicates", value=len(dup))
            write_removals(df, self.sign_tasks, removals, producer=rank)
        return
        yield


@register
class ExactDedupStage(Stage):
    name = "exact_dedup"
    Options = ExactDedupOptions

    def build(self, opts: ExactDedupOptions, ctx: BuildContext, chain: Chain) -> None:
        finders = opts.finder_tasks or ctx.tasks
        chain.add(ExactSignatureWriter(ctx.work_dir, opts.normalization, ctx.domains, finders))
        docs = chain.materialize()
        kind = signatures_to_read(chain, ctx, "exact-dedup", "hashes", HASH_ROW, "hash", finders)
        finder = ExactDuplicateFinder(ctx.work_dir, ctx.tasks, kind)
        chain.add_run("exact-dedup-find", [finder], tasks=finders)
        removal = RemovalFilter(ctx.work_dir, "duplicate_exact", finders, ctx.exclusion_writer())
        chain.continue_from(docs, removal)

    def describe(self, opts: ExactDedupOptions) -> str:
        n = opts.normalization
        return f"xxhash64 of normalised text ({n.unicode}, lowercase={n.lowercase}, no punct={n.strip_punctuation})"
