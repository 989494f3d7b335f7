"""datatrove steps of the near-dedup stages (MinHash, problem dedup): sign -> buckets -> verify -> cluster -> filter.

Every step reads and writes its work folder through `filters/workfiles.py` (any fsspec filesystem), and no task holds
data for the whole corpus:

1. `GramSignatureWriter` (inline in the streaming run, T tasks; passes every document on): for each document of
   rank r, in `signatures/`: a record (`{r}.docs`, empty for a document not signed: where its grams, marks and id
   are, whether marks are checked, its order key and problem key), its sorted distinct gram hashes (`{r}.grams`), its
   marks (`{r}.marks`: numbers and LaTeX commands, with their multiplicity), its id (`{r}.ids`), and its LSH band keys
   partitioned by bucket task (`{r}.bands.*`: task p gets the (band, key) pairs whose hash falls in its range).
2. `LshBuckets` (N tasks): task p reads only partition p of every rank's band file; documents sharing a (band, key)
   are candidate pairs, routed to a verify task by a hash of the pair (`pairs/{p}.*`).
3. `VerifyPairs` (V tasks): task v reads the pairs routed to it from every bucket task (each pair exactly once, however
   many bands found it), reads the records and gram sets of their documents by range, and keeps the pairs whose true
   gram-set Jaccard similarity reaches the threshold and whose marks agree (`edges/{v}.npy`), vectorised: one sorted
   table and one sorted lookup per chunk of pairs (`pair_intersections`), no Python object per pair.
4. `ClusterRemovals` (V tasks): union-find over the verified edges only gives connected groups; task c takes the
   groups whose smallest member hashes to c, visits their documents best first by (order key, rank, row) and removes
   each one similar to `keep` or more kept documents (`greedy_keep`: no removal through chains of removed documents).
   With `relabel`, every document of a group gets the group's smallest problem key. Writes `removals/{r}/{c}.json`
   per rank: `[[id, kept_id | None, new_problem_key | None, row], ...]`.
5. `RemovalFilter` (inline in the streaming run that continues from the documents): drops the listed documents of its
   rank (matched by id) with a reason and `duplicate_of`, and sets the new problem keys.

Document ids across ranks are `gid = rank << 32 | row` (row: the document's position in its rank's stream, signed or
not: filters/removals.py). When the signers of several dedup stages ride one streaming run, the buckets of a later
stage read them without the rows an earlier one removed (`DropRemovedRows`), so each stage sees exactly the documents
the previous ones kept.
"""

from __future__ import annotations

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolder
from datatrove.pipeline.base import PipelineStep

from reasonpipe.filters.minhash_core import (
    MinHasher,
    band_pairs,
    components,
    distinct_per_text,
    greedy_keep,
    mix64,
    multiset_hashes,
    pair_intersections,
    unique_pairs,
)
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
from reasonpipe.filters.workfiles import (
    Column,
    folder,
    partition_of,
    read_npy,
    read_partition,
    read_rows,
    read_spans,
    write_npy,
    write_partitioned,
)

U64 = np.uint64
RECORD = np.dtype(
    [
        ("gram", "<i8"),  # first row of the document's grams in {r}.grams
        ("ngram", "<u4"),
        ("mark", "<i8"),  # first row of its marks in {r}.marks
        ("nmark", "<u4"),
        ("checked", "u1"),  # 1: its marks must agree with the other document's for a pair to be a duplicate
        ("key", "<i8", (3,)),  # order key: smaller is better (kept first)
        ("pkey", "<u8"),  # problem key (problem dedup)
        ("id", "<i8"),  # first byte of its id in {r}.ids
        ("nid", "<u4"),
    ]
)
BAND = np.dtype([("key", "<u8"), ("row", "<u4")])
PAIR = np.dtype([("a", "<i8"), ("b", "<i8")])
_SPAN_FIELDS = {"grams": ("gram", "ngram"), "marks": ("mark", "nmark")}  # a record's (first row, length) fields
_CHUNK = 1 << 21  # gram hashes per verification chunk (~100 MB of work arrays)


class GramSignatureWriter(PipelineStep):
    """Sign selected documents (subclasses choose which, their grams, marks and keys); forward every document.

    Memory: one batch of documents, plus this rank's band keys (12 bytes per band per signed document) until the
    end of the task, when they are written partitioned by bucket task.
    """

    type = "🫂 - DEDUP"
    hoistable = True  # forwards every document, rows are stream positions: may ride an earlier run (runs.Chain)
    name = "🎯 gram signatures"
    _requires_dependencies = ["xxhash"]

    def __init__(self, work_dir: str, bands: int, rows: int, seed: int, bucket_tasks: int, batch_size: int = 512):
        super().__init__()
        self.work_dir, self.bucket_tasks, self.batch_size = work_dir, bucket_tasks, batch_size
        self.hasher = MinHasher(bands, rows, seed)
        # per-band salts: equal keys in different bands are different buckets
        self.band_salt = mix64(np.arange(1, bands + 1, dtype=np.uint64) * U64(0x9E3779B97F4A7C15))

    # --- what to sign (override) ---
    def selected(self, doc: Document) -> bool:
        return True

    def grams(self, docs: list[Document]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def marks(self, doc: Document) -> list[str] | None:
        """Tokens that must agree between two duplicates (None: no such check for this document)."""
        return None

    def key(self, doc: Document) -> tuple[int, int, int]:
        """Order key: of similar documents the smallest key is kept (ties: the earliest by rank, position)."""
        return (0, 0, 0)

    def problem_key(self, doc: Document) -> int:
        return 0

    # --- machinery ---
    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        df = folder(self.work_dir)
        cols = {
            kind: Column(df, sig_name(rank, kind), dtype)
            for kind, dtype in (("docs", RECORD), ("grams", np.uint64), ("marks", np.uint64), ("ids", np.uint8))
        }
        bands: list[np.ndarray] = []
        batch: list[Document] = []
        for doc in data:
            batch.append(doc)
            if len(batch) >= self.batch_size:
                self._sign(batch, cols, bands)
                yield from batch
                batch = []
        self._sign(batch, cols, bands)
        yield from batch
        for col in cols.values():
            col.close()
        rows = np.concatenate(bands) if bands else np.zeros(0, dtype=BAND)
        part = partition_of(rows["key"], self.bucket_tasks)
        write_partitioned(df, sig_name(rank, "bands"), rows, part, self.bucket_tasks)

    def _sign(self, batch: list[Document], cols: dict[str, Column], bands: list[np.ndarray]) -> None:
        """One record per document of `batch` (rows are stream positions; a document not signed gets an empty
        record and is never compared), and the band keys of the signed ones."""
        with self.track_time():
            rec = np.zeros(len(batch), dtype=RECORD)
            picked = np.array([i for i, doc in enumerate(batch) if self.selected(doc)], dtype=np.int64)
            self.stat_update("signed", value=len(picked))
            if len(picked):
                values, offsets = distinct_per_text(*self.grams([batch[i] for i in picked]))
                lens = np.diff(offsets)
                nonempty = np.flatnonzero(lens > 0)  # documents without grams are never compared
                self.stat_update("no_grams", value=len(picked) - len(nonempty))
                picked = picked[nonempty]
            if len(picked):
                docs = [batch[i] for i in picked]
                rec["ngram"][picked] = lens[nonempty]
                rec["gram"][picked] = cols["grams"].append(values) + offsets[:-1][nonempty]
                marks = [self.marks(doc) for doc in docs]
                checked = np.array([m is not None for m in marks], dtype=bool)
                hashed, mark_offsets = multiset_hashes([m for m in marks if m is not None])
                start = cols["marks"].append(hashed)
                rec["checked"][picked], rec["nmark"][picked[checked]] = checked, np.diff(mark_offsets)
                rec["mark"][picked[checked]] = start + mark_offsets[:-1]
                rec["key"][picked] = [self.key(doc) for doc in docs]
                rec["pkey"][picked] = [self.problem_key(doc) for doc in docs]
                rec["id"][picked], rec["nid"][picked] = append_ids(cols["ids"], [doc.id for doc in docs])
                keys = mix64(self.hasher.band_keys(self.hasher.signatures(values, offsets)[nonempty]) ^ self.band_salt)
                out = np.zeros(keys.size, dtype=BAND)
                out["key"] = keys.ravel()
                out["row"] = np.repeat((cols["docs"].rows + picked).astype(np.uint32), keys.shape[1])
                bands.append(out)
            cols["docs"].append(rec)


class LshBuckets(PipelineStep):
    """Candidate pairs from LSH bands. Task p of N reads partition p of every rank's band keys, so its memory is
    ~12 bytes x bands x documents / N; it writes its pairs partitioned by the verify task that owns them."""

    type = "🫂 - DEDUP"
    name = "🎯 LSH buckets"

    def __init__(self, work_dir: str, sign_tasks: int, verify_tasks: int, kind: str = "bands"):
        super().__init__()
        self.work_dir, self.sign_tasks, self.verify_tasks = work_dir, sign_tasks, verify_tasks
        self.kind = kind  # "bands-kept": without the rows earlier dedup stages remove (removals.DropRemovedRows)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        df = folder(self.work_dir)
        with self.track_time():
            pairs = band_pairs(*gather_signed(df, self.kind, BAND, "key", self.sign_tasks, rank))
            self.stat_update("candidate_pairs", value=len(pairs))
            rows = np.zeros(len(pairs), dtype=PAIR)
            rows["a"], rows["b"] = pairs[:, 0], pairs[:, 1]
            owner = partition_of(pair_hash(pairs), self.verify_tasks)
            write_partitioned(df, f"pairs/{rank:05d}", rows, owner, self.verify_tasks)
        return
        yield


def pair_hash(pairs: np.ndarray) -> np.ndarray:
    a, b = pairs[:, 0].astype(np.uint64), pairs[:, 1].astype(np.uint64)
    return mix64(mix64(a) ^ b)


def similar_enough(inter, na, nb, threshold: float):
    """Whether sets of sizes `na`, `nb` sharing `inter` members reach Jaccard `threshold` (arrays or numbers)."""
    return inter >= threshold * (na + nb - inter)


def marks_agree(shared, ma, mb, marks: str):
    """Whether mark sets of sizes `ma`, `mb` sharing `shared` agree: "contained" (the smaller within the other) or
    "equal" (arrays or numbers)."""
    return shared == np.minimum(ma, mb) if marks == "contained" else (shared == ma) & (ma == mb)


class SignedDocs:
    """Random access to signed documents by gid: records, gram sets and marks, read by range (nothing whole)."""

    def __init__(self, df: DataFolder):
        self.df = df
        self._files: dict = {}  # columns opened once by `span` (plain reads: no mapped pages held)

    def __enter__(self) -> SignedDocs:
        return self

    def __exit__(self, *exc) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def records(self, gids: np.ndarray) -> np.ndarray:
        """Records of sorted distinct gids, in that order."""
        ranks, parts = gids >> 32, []
        for rank in np.unique(ranks).tolist():
            parts.append(read_rows(self.df, sig_name(rank, "docs"), RECORD, gids[ranks == rank] & ROW))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=RECORD)

    def sets(self, gids: np.ndarray, rec: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """Gram sets (`kind` "grams") or mark sets ("marks") of sorted distinct gids with records `rec`,
        concatenated in that order, and their offsets."""
        start, length = _SPAN_FIELDS[kind]
        ranks, parts = gids >> 32, []
        for rank in np.unique(ranks).tolist():  # gids are sorted: ranks come in order, each one contiguous
            at = ranks == rank
            parts.append(read_spans(self.df, sig_name(rank, kind), np.uint64, rec[start][at], rec[length][at])[0])
        offsets = np.zeros(len(gids) + 1, dtype=np.int64)
        np.cumsum(rec[length], out=offsets[1:])
        return (np.concatenate(parts) if parts else np.zeros(0, np.uint64)), offsets

    def span(self, gid: int, rec: np.void, kind: str) -> np.ndarray:
        """One document's sorted gram set (`kind` "grams") or mark set ("marks"), given its record."""
        start, length = _SPAN_FIELDS[kind]
        name, lo, n = sig_name(gid >> 32, kind), int(rec[start]), int(rec[length])
        if n == 0:
            return np.zeros(0, dtype=np.uint64)
        if name not in self._files:
            self._files[name] = self.df.open(name, "rb")
        f = self._files[name]
        f.seek(lo * 8)
        return np.frombuffer(f.read(n * 8), dtype=np.uint64)

    def similar(self, a: int, b: int, rec_a: np.void, rec_b: np.void, threshold: float, marks: str) -> bool:
        """`verify` for one pair (gids `a`, `b` with their records), without the batch machinery: the greedy pass
        asks this one pair at a time (~0.1 ms against ~2 ms for a one-pair `verify`)."""
        ga, gb = self.span(a, rec_a, "grams"), self.span(b, rec_b, "grams")
        if not similar_enough(len(np.intersect1d(ga, gb, assume_unique=True)), len(ga), len(gb), threshold):
            return False
        if not (rec_a["checked"] or rec_b["checked"]):
            return True
        ma, mb = self.span(a, rec_a, "marks"), self.span(b, rec_b, "marks")
        return bool(marks_agree(len(np.intersect1d(ma, mb, assume_unique=True)), len(ma), len(mb), marks))

    def verify(self, pairs: np.ndarray, threshold: float, marks: str) -> tuple[np.ndarray, np.ndarray]:
        """For `(P, 2)` gid pairs: (similar enough, and marks agree) masks. `marks`: "contained" (one document's
        marks all occur in the other's) or "equal"; only checked when either document's record asks for it."""
        nodes = np.unique(pairs)
        rec = self.records(nodes)
        a, b = np.searchsorted(nodes, pairs[:, 0]), np.searchsorted(nodes, pairs[:, 1])
        volume = rec["ngram"][a].astype(np.int64) + rec["ngram"][b]
        similar = np.zeros(len(pairs), dtype=bool)
        agree = np.ones(len(pairs), dtype=bool)
        chunk = np.cumsum(volume) // _CHUNK  # chunks of ~_CHUNK gram hashes (a bigger pair alone)
        for sel in np.split(np.arange(len(pairs)), np.flatnonzero(np.diff(chunk)) + 1):
            if len(sel) == 0:
                continue
            local, inv = np.unique(np.concatenate((a[sel], b[sel])), return_inverse=True)
            la, lb = inv[: len(sel)], inv[len(sel) :]
            values, offsets = self.sets(nodes[local], rec[local], "grams")
            inter = pair_intersections(values, offsets, la, lb)
            na, nb = rec["ngram"][a[sel]].astype(np.int64), rec["ngram"][b[sel]].astype(np.int64)
            similar[sel] = similar_enough(inter, na, nb, threshold)
            check = (rec["checked"][a[sel]] | rec["checked"][b[sel]]).astype(bool)
            if check.any():
                values, offsets = self.sets(nodes[local], rec[local], "marks")
                shared = pair_intersections(values, offsets, la, lb)
                ma, mb = rec["nmark"][a[sel]].astype(np.int64), rec["nmark"][b[sel]].astype(np.int64)
                agree[sel] = ~check | marks_agree(shared, ma, mb, marks)
        return similar, agree


class VerifyPairs(PipelineStep):
    """Verify the candidate pairs routed to this task by true Jaccard similarity (and marks); write the verified ones.

    Memory: the distinct pairs routed here and their documents' records (O(pairs / V)), plus one chunk of gram sets.
    """

    type = "🫂 - DEDUP"
    name = "🎯 verify pairs"

    def __init__(self, work_dir: str, bucket_tasks: int, threshold: float, marks: str = "contained"):
        super().__init__()
        self.work_dir, self.bucket_tasks, self.threshold, self.marks = work_dir, bucket_tasks, threshold, marks

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        df = folder(self.work_dir)
        with self.track_time():
            found = [read_partition(df, f"pairs/{p:05d}", PAIR, rank) for p in range(self.bucket_tasks)]
            rows = np.concatenate(found) if found else np.zeros(0, dtype=PAIR)
            pairs = unique_pairs(np.stack([rows["a"], rows["b"]], axis=1))
            similar, agree = SignedDocs(df).verify(pairs, self.threshold, self.marks)
            edges = pairs[similar & agree]
            self.stat_update("candidate_pairs", value=len(pairs))
            self.stat_update("verified_pairs", value=len(edges))
            self.stat_update("rejected_pairs", value=len(pairs) - len(edges))
            self.stat_update("rejected_marks", value=int(np.sum(similar & ~agree)))
            write_npy(df, f"edges/{rank:05d}.npy", edges)
        return
        yield


class ClusterRemovals(PipelineStep):
    """Choose what to remove from the verified pairs; task c of C handles the connected groups owned by c.

    Every task reads the verified edges (16 bytes each) and labels their groups (vectorised union-find over the pairs
    only); task c then orders, clusters and looks up ids for the documents of its own groups. Memory: ~50 bytes per
    verified pair, plus records, ids and the greedy pass for 1/C of them; nothing per document of the corpus.
    """

    type = "🫂 - DEDUP"
    name = "🎯 cluster"

    def __init__(
        self,
        work_dir: str,
        sign_tasks: int,
        verify_tasks: int,
        threshold: float,
        marks: str = "contained",
        keep: int = 1,
        relabel: bool = False,
    ):
        super().__init__()
        self.work_dir, self.sign_tasks, self.verify_tasks = work_dir, sign_tasks, verify_tasks
        self.threshold, self.marks, self.keep, self.relabel = threshold, marks, keep, relabel

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        df = folder(self.work_dir)
        with self.track_time():
            found = [read_npy(df, f"edges/{v:05d}.npy") for v in range(self.verify_tasks)]
            edges = np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)
            nodes, dense = np.unique(edges, return_inverse=True)
            dense = dense.reshape(-1, 2)
            group = components(dense, len(nodes))
            owner = partition_of(mix64(nodes[group].astype(np.uint64)), world_size)
            mine = np.flatnonzero(owner == rank)  # nodes of the groups this task owns (increasing: nodes stay sorted)
            local = np.full(len(nodes), -1, dtype=np.int64)
            local[mine] = np.arange(len(mine))
            nodes, group = nodes[mine], local[group[mine]]
            dense = local[dense[owner[dense[:, 0]] == rank]]  # an edge never leaves its group
            del edges, found, owner, local

            with SignedDocs(df) as docs:
                rec = docs.records(nodes)
                key = rec["key"]
                order = np.empty(len(nodes), dtype=np.int64)
                order[np.lexsort((nodes, key[:, 2], key[:, 1], key[:, 0]))] = np.arange(len(nodes))

                def similar(i: int, j: int) -> bool:
                    return docs.similar(int(nodes[i]), int(nodes[j]), rec[i], rec[j], self.threshold, self.marks)

                state = greedy_keep(dense, order, self.keep, similar)
            removed = np.flatnonzero(state >= 0)
            new_key, changed = rec["pkey"], np.zeros(len(nodes), dtype=bool)
            if self.relabel and len(nodes):  # every member of a group gets its smallest problem key
                smallest = np.full(len(nodes), np.iinfo(np.uint64).max, dtype=np.uint64)
                np.minimum.at(smallest, group, rec["pkey"])
                new_key = smallest[group]
                changed = new_key != rec["pkey"]
            touched = np.flatnonzero(changed | (state >= 0))
            ids = lookup_ids(df, RECORD, nodes[np.concatenate((touched, state[removed]))])
            rows: dict[int, list] = {}
            for i in touched.tolist():
                kept = ids[int(nodes[state[i]])] if state[i] >= 0 else None
                label = f"{int(new_key[i]):016x}" if changed[i] else None
                rows.setdefault(int(nodes[i] >> 32), []).append([ids[int(nodes[i])], kept, label, int(nodes[i] & ROW)])
            self.stat_update("to_remove", value=len(removed))
            self.stat_update("relabeled", value=int(changed.sum()))
            write_removals(df, self.sign_tasks, rows, producer=rank)
        return
        yield


def build_lsh_dedup(chain, ctx, signer, opts, name: str, reason: str, marks: str, keep: int = 1, relabel=False):
    """The runs shared by the MinHash stages: the signer (built by the caller) rides the materialising run, then LSH
    buckets, verification, clustering, and a streaming run that removes what they chose (`reason`)."""
    tasks = ctx.tasks
    bucket_tasks, verify_tasks = signer.bucket_tasks, opts.verify_tasks or tasks
    chain.add(signer)
    docs = chain.materialize()
    kind = signatures_to_read(chain, ctx, name, "bands", BAND, "key", bucket_tasks)
    buckets = LshBuckets(ctx.work_dir, tasks, verify_tasks, kind)
    chain.add_run(f"{name}-buckets", [buckets], tasks=bucket_tasks)
    verify = VerifyPairs(ctx.work_dir, bucket_tasks, opts.jaccard_threshold, marks)
    chain.add_run(f"{name}-verify", [verify], tasks=verify_tasks)
    cluster = ClusterRemovals(ctx.work_dir, tasks, verify_tasks, opts.jaccard_threshold, marks, keep, relabel)
    chain.add_run(f"{name}-cluster", [cluster], tasks=verify_tasks)
    chain.continue_from(docs, RemovalFilter(ctx.work_dir, reason, verify_tasks, ctx.exclusion_writer(), relabel))
