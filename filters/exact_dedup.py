"""`exact_dedup`: remove documents whose normalised text equals an earlier document's, globally across tasks.

Runs: the 64-bit xxhash of each selected document's normalised text is recorded inline while the documents are
materialized (`{rank}.npz`: hash, position; `{rank}.ids.jsonl`), one task finds the duplicates (the first document by
(rank, position) of each hash is kept), and the filtering streaming run drops the rest with reason `duplicate_exact`.
The default normalisation (NFKC, lowercase, collapsed whitespace) keeps digits and operators: "3+4=7" != "3-4=7".
"""

from __future__ import annotations

import json
import os

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from pydantic import Field

from reasonpipe.filters.minhash_steps import RemovalFilter, write_removals
from reasonpipe.filters.normalize import Normalization, normalize
from reasonpipe.filters.stage import BuildContext, Chain, Stage, StageOptions, register


class ExactDedupOptions(StageOptions):
    """Options of the `exact_dedup` stage.

    Attributes:
        normalization: how texts are normalised before hashing (default NFKC + lowercase + collapsed whitespace;
            `strip_punctuation: true` also ignores prose punctuation). Digits and operators are always kept.
    """

    normalization: Normalization = Field(default_factory=Normalization)


class ExactSignatureWriter(PipelineStep):
    """Record (hash of normalised text, position) of each selected document; forward every document."""

    type = "🫂 - DEDUP"
    name = "💥 exact-dedup signatures"
    _requires_dependencies = ["xxhash"]

    def __init__(self, sig_dir: str, norm: Normalization, domains: tuple[str, ...] | None):
        super().__init__()
        self.sig_dir, self.norm, self.domains = sig_dir, norm, domains

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from xxhash import xxh64_intdigest

        os.makedirs(self.sig_dir, exist_ok=True)
        hashes, positions, ids = [], [], []
        for position, doc in enumerate(data):
            with self.track_time():
                if self.domains is None or doc.metadata.get("domain") in self.domains:
                    hashes.append(xxh64_intdigest(normalize(doc.text, self.norm).encode("utf-8", "surrogatepass")))
                    positions.append(position)
                    ids.append(doc.id)
                    self.stat_update("signed")
            yield doc
        path = os.path.join(self.sig_dir, f"{rank:05d}")
        np.savez(path + ".npz", hash=np.array(hashes, dtype=np.uint64), index=np.array(positions, dtype=np.int64))
        with open(path + ".ids.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(i) + "\n" for i in ids)


class ExactDuplicateFinder(PipelineStep):
    """One task: group equal hashes over all ranks; all but the first (by rank, position) are removed."""

    type = "🫂 - DEDUP"
    name = "💥 exact-dedup finder"

    def __init__(self, sig_dir: str, removals_dir: str):
        super().__init__()
        self.sig_dir, self.removals_dir = sig_dir, removals_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        assert world_size == 1, "ExactDuplicateFinder runs as a single task"
        with self.track_time():
            ranks = sorted(int(f.removesuffix(".npz")) for f in os.listdir(self.sig_dir) if f.endswith(".npz"))
            loaded = [dict(np.load(os.path.join(self.sig_dir, f"{r:05d}.npz"))) for r in ranks]
            hashes = np.concatenate([z["hash"] for z in loaded] or [np.zeros(0, np.uint64)])
            rank_of = np.concatenate([np.full(len(z["hash"]), r) for r, z in zip(ranks, loaded)] or [np.zeros(0)])
            row = np.concatenate([np.arange(len(z["hash"])) for z in loaded] or [np.zeros(0)]).astype(np.int64)
            order = np.lexsort((row, rank_of, hashes))  # within a hash: rank, then position
            h = hashes[order]
            dup = np.flatnonzero(h[1:] == h[:-1]) + 1
            head = np.ones(len(h), dtype=bool)
            head[dup] = False
            first = np.maximum.accumulate(np.where(head, np.arange(len(h)), 0))  # run head of each position
            positions = {r: z["index"] for r, z in zip(ranks, loaded)}
            ids = {r: None for r in ranks}

            def doc_id(r: int, i: int) -> str:
                if ids[r] is None:
                    with open(os.path.join(self.sig_dir, f"{r:05d}.ids.jsonl"), encoding="utf-8") as f:
                        ids[r] = f.read().splitlines()
                return json.loads(ids[r][i])

            removals: dict[int, list] = {r: [] for r in ranks}
            for d in dup.tolist():
                k, f = order[d], order[first[d]]
                r, i = int(rank_of[k]), int(row[k])
                kept = doc_id(int(rank_of[f]), int(row[f]))
                removals[r].append([int(positions[r][i]), doc_id(r, i), kept])
            self.stat_update("duplicates", value=len(dup))
            write_removals(self.removals_dir, removals)
        return
        yield


@register
class ExactDedupStage(Stage):
    name = "exact_dedup"
    Options = ExactDedupOptions
    extra_runs = 2  # the finder, and the filtering streaming run (signatures ride the materialize run)

    def build(self, opts: ExactDedupOptions, ctx: BuildContext, chain: Chain) -> None:
        sig_dir, removals_dir = f"{ctx.work_dir}/signatures", f"{ctx.work_dir}/removals"
        chain.add(ExactSignatureWriter(sig_dir, opts.normalization, ctx.domains))
        folder = chain.materialize()
        chain.add_run("exact-dedup-find", [ExactDuplicateFinder(sig_dir, removals_dir)], tasks=1)
        chain.continue_from(folder, RemovalFilter(removals_dir, "duplicate_exact", ctx.exclusion_writer()))

    def describe(self, opts: ExactDedupOptions) -> str:
        n = opts.normalization
        return f"xxhash64 of normalised text ({n.unicode}, lowercase={n.lowercase}, no punct={n.strip_punctuation})"
