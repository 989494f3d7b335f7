"""datatrove steps of the near-dedup stages (MinHash, problem dedup): sign -> bucket -> verify+cluster -> filter.

1. `GramSignatureWriter` (inline, passes every document on): for each selected document, its gram hashes and LSH band
   keys, written per rank to `sig_dir`: `{rank}.grams` (raw uint64 gram hashes, selected documents in order),
   `{rank}.npz` (`index`: position of the document in the rank's stream, `goff`: gram offsets, `bands`: keys),
   `{rank}.meta.jsonl` (per selected document `[id, key, tag]`: key orders a cluster, tag must match to merge).
2. `LshBuckets` (no input; task t handles bands t, t+T, ...): candidate pairs of documents sharing a band key.
3. `VerifyCluster` (1 task): keeps the candidate pairs whose gram-set Jaccard similarity reaches the threshold (and
   whose tags are equal); visiting documents best first by (key, rank, index), removes each one directly similar to
   `keep` or more kept documents (`greedy_keep`: no removal through chains of removed documents); writes
   `{rank}.json` = `[[index, id, kept_id], ...]` sorted by index.
4. `RemovalFilter` (inline): drops the listed documents (matched by id, so a reader that skips records cannot shift
   them) with a reason and `duplicate_of`.
Document ids across ranks are `rank << 32 | index`; paths are local (or a shared filesystem).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter

from reasonpipe.filters.minhash_core import MinHasher, band_pairs, greedy_keep, jaccard, unique_pairs


def _gid(rank: int, index: np.ndarray) -> np.ndarray:
    return (np.int64(rank) << np.int64(32)) | index.astype(np.int64)


def _ranks(folder: str, suffix: str) -> list[int]:
    return sorted(int(f.removesuffix(suffix)) for f in os.listdir(folder) if f.endswith(suffix))


class GramSignatureWriter(PipelineStep):
    """Sign selected documents (subclasses choose which, their grams, key and tag); forward every document."""

    type = "🫂 - DEDUP"
    name = "🎯 gram signatures"

    def __init__(self, sig_dir: str, bands: int, rows: int, seed: int, batch_size: int = 512):
        super().__init__()
        self.sig_dir, self.batch_size = sig_dir, batch_size
        self.hasher = MinHasher(bands, rows, seed)

    # --- what to sign (override) ---
    def selected(self, doc: Document) -> bool:
        return True

    def grams(self, docs: list[Document]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def meta(self, doc: Document) -> list:
        """`[id, key, tag]`; the default keeps the first document (key empty) and merges any pair (tag None)."""
        return [doc.id, [], None]

    # --- machinery ---
    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        os.makedirs(self.sig_dir, exist_ok=True)
        index: list[np.ndarray] = []
        counts: list[np.ndarray] = []
        bands: list[np.ndarray] = []
        path = os.path.join(self.sig_dir, f"{rank:05d}")
        with open(path + ".grams", "wb") as grams_f, open(path + ".meta.jsonl", "w", encoding="utf-8") as meta_f:
            batch: list[Document] = []
            position = 0
            for doc in data:
                batch.append(doc)
                if len(batch) >= self.batch_size:
                    self._sign(batch, position, grams_f, meta_f, index, counts, bands)
                    position += len(batch)
                    yield from batch
                    batch = []
            self._sign(batch, position, grams_f, meta_f, index, counts, bands)
            yield from batch
        goff = np.zeros(1 + sum(map(len, counts)), dtype=np.int64)
        np.cumsum(np.concatenate(counts or [np.zeros(0, np.int64)]), out=goff[1:])
        np.savez(
            path + ".npz",
            index=np.concatenate(index or [np.zeros(0, np.int64)]),
            goff=goff,
            bands=np.concatenate(bands or [np.zeros((0, self.hasher.bands), np.uint64)]),
        )

    def _sign(self, batch, position, grams_f, meta_f, index, counts, bands) -> None:
        with self.track_time():
            chosen = [i for i, doc in enumerate(batch) if self.selected(doc)]
            self.stat_update("signed", value=len(chosen))
            if not chosen:
                return
            values, offsets = self.grams([batch[i] for i in chosen])
            lens = np.diff(offsets)
            nonempty = np.flatnonzero(lens > 0)  # documents without grams are never compared
            self.stat_update("no_grams", value=len(chosen) - len(nonempty))
            if len(nonempty) == 0:
                return
            sig = self.hasher.signatures(values, offsets)[nonempty]
            grams_f.write(values.astype("<u8").tobytes())  # empty documents contribute no values
            index.append(position + np.asarray(chosen, dtype=np.int64)[nonempty])
            counts.append(lens[nonempty])
            bands.append(self.hasher.band_keys(sig))
            meta_f.writelines(json.dumps(self.meta(batch[chosen[i]])) + "\n" for i in nonempty)


class LshBuckets(PipelineStep):
    """Candidate pairs from LSH bands: task t of T handles bands t, t+T, ...; writes `{t}.npy` (pairs of gids)."""

    type = "🫂 - DEDUP"
    name = "🎯 LSH buckets"

    def __init__(self, sig_dir: str, pairs_dir: str, bands: int):
        super().__init__()
        self.sig_dir, self.pairs_dir, self.bands = sig_dir, pairs_dir, bands

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with self.track_time():
            ranks = _ranks(self.sig_dir, ".npz")
            loaded = [dict(np.load(os.path.join(self.sig_dir, f"{r:05d}.npz"))) for r in ranks]
            ids = np.concatenate([_gid(r, z["index"]) for r, z in zip(ranks, loaded)] or [np.zeros(0, np.int64)])
            band_keys = [z["bands"] for z in loaded]
            found = [np.zeros((0, 2), dtype=np.int64)]
            for band in range(rank, self.bands, world_size):
                keys = np.concatenate([b[:, band] for b in band_keys] or [np.zeros(0, np.uint64)])
                found.append(band_pairs(keys, ids))
            pairs = unique_pairs(np.concatenate(found))
            self.stat_update("candidate_pairs", value=len(pairs))
            os.makedirs(self.pairs_dir, exist_ok=True)
            np.save(os.path.join(self.pairs_dir, f"{rank:05d}.npy"), pairs)
        return
        yield


class _RankSigs:
    """Random access to one rank's stored gram sets and metadata."""

    def __init__(self, sig_dir: str, rank: int):
        path = os.path.join(sig_dir, f"{rank:05d}")
        z = np.load(path + ".npz")
        self.index, self.goff = z["index"], z["goff"]
        size = os.path.getsize(path + ".grams")
        self.grams = np.memmap(path + ".grams", dtype="<u8", mode="r") if size else np.zeros(0, np.uint64)
        with open(path + ".meta.jsonl", encoding="utf-8") as f:
            self.meta_lines = f.read().splitlines()

    def position(self, index: int) -> int:
        return int(np.searchsorted(self.index, index))

    def gram_set(self, pos: int) -> np.ndarray:
        return np.unique(self.grams[self.goff[pos] : self.goff[pos + 1]])

    def meta(self, pos: int) -> list:
        return json.loads(self.meta_lines[pos])


class VerifyCluster(PipelineStep):
    """Verify candidate pairs by true Jaccard similarity and choose what to remove (1 task)."""

    type = "🫂 - DEDUP"
    name = "🎯 verify + cluster"

    def __init__(self, sig_dir: str, pairs_dir: str, out_dir: str, threshold: float, keep: int = 1):
        super().__init__()
        self.sig_dir, self.pairs_dir, self.out_dir = sig_dir, pairs_dir, out_dir
        self.threshold, self.keep = threshold, keep

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        assert world_size == 1, "VerifyCluster runs as a single task"
        with self.track_time():
            sigs = {r: _RankSigs(self.sig_dir, r) for r in _ranks(self.sig_dir, ".npz")}
            files = sorted(f for f in os.listdir(self.pairs_dir) if f.endswith(".npy"))
            found = [np.load(os.path.join(self.pairs_dir, f)) for f in files]
            pairs = unique_pairs(np.concatenate(found or [np.zeros((0, 2), dtype=np.int64)]))
            self.stat_update("candidate_pairs", value=len(pairs))
            sets: dict[int, np.ndarray] = {}
            metas: dict[int, list] = {}

            def load(gid: int) -> tuple[np.ndarray, list]:
                if gid not in sets:
                    if len(sets) > 100_000:  # pairs come sorted by their first member: a bounded cache suffices
                        sets.clear()
                    part = sigs[gid >> 32]
                    pos = part.position(gid & 0xFFFFFFFF)
                    sets[gid] = part.gram_set(pos)
                    metas.setdefault(gid, part.meta(pos))
                return sets[gid], metas[gid]

            def similar(a: int, b: int) -> bool:
                set_a, meta_a = load(a)
                set_b, meta_b = load(b)
                return meta_a[2] == meta_b[2] and jaccard(set_a, set_b) >= self.threshold

            edges = [(a, b) for a, b in pairs.tolist() if similar(a, b)]
            self.stat_update("verified_pairs", value=len(edges))
            self.stat_update("rejected_pairs", value=len(pairs) - len(edges))

            removals: dict[int, list] = {r: [] for r in sigs}
            order = {g: (metas[g][1], g) for g in metas}
            for gid, kept in greedy_keep(edges, order, self.keep, similar).items():
                removals[gid >> 32].append([gid & 0xFFFFFFFF, metas[gid][0], metas[kept][0]])
                self.stat_update("to_remove")
            write_removals(self.out_dir, removals)
        return
        yield


def write_removals(out_dir: str, removals: dict[int, list]) -> None:
    """`{rank}.json` = `[[index, id, kept_id], ...]` sorted by index, written atomically."""
    os.makedirs(out_dir, exist_ok=True)
    for r, rows in removals.items():
        path = os.path.join(out_dir, f"{r:05d}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(sorted(rows), f)
        os.replace(path + ".tmp", path)


class RemovalFilter(BaseFilter):
    """Drop the documents listed for this rank in `removals_dir/{rank}.json`, tagging `duplicate_of`."""

    name = "🫂 remove duplicates"

    def __init__(self, removals_dir: str, reason: str, exclusion_writer=None):
        super().__init__(exclusion_writer=exclusion_writer)
        self.removals_dir, self.reason = removals_dir, reason
        self._removed: dict[str, str] = {}

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        path = os.path.join(self.removals_dir, f"{rank:05d}.json")
        self._removed = {}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                self._removed = {doc_id: kept for _, doc_id, kept in json.load(f)}
        yield from super().run(data, rank, world_size)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        kept = self._removed.get(doc.id)
        if kept is None:
            return True
        doc.metadata["filter_reason"] = self.reason
        doc.metadata["duplicate_of"] = kept
        return False, self.reason


def build_lsh_dedup(chain, ctx, signer_cls, opts, name: str, reason: str, bucket_tasks: int, keep: int = 1) -> None:
    """The runs shared by the MinHash stages: signatures ride the materialising run, then LSH buckets, then one
    verify + cluster task, then a streaming run that removes what it chose (`reason`) and continues the pipeline."""
    sig_dir, pairs_dir, removals_dir = (f"{ctx.work_dir}/{d}" for d in ("signatures", "pairs", "removals"))
    seed = ctx.seed if opts.seed is None else opts.seed
    chain.add(signer_cls(sig_dir, opts, seed, ctx.domains))
    folder = chain.materialize()
    chain.add_run(f"{name}-buckets", [LshBuckets(sig_dir, pairs_dir, opts.buckets)], tasks=bucket_tasks)
    cluster = VerifyCluster(sig_dir, pairs_dir, removals_dir, opts.jaccard_threshold, keep=keep)
    chain.add_run(f"{name}-cluster", [cluster], tasks=1)
    chain.continue_from(folder, RemovalFilter(removals_dir, reason, ctx.exclusion_writer()))
