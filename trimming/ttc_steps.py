"""Datatrove steps of the test-time-compute builders (thin adapters over trimming/rsa.py and trimming/markovian.py).

They run in the pack phase, on documents read from the token cache (`metadata["segments"]`, `problem_key`,
`correct`), and write what they build in the sample-file format of trimming/built.py:

    run "ttc-route" (RSA only):  CacheReader -> RouteTraces(route/)               traces by hash(problem key) % tasks
    run "ttc-build":             [CacheReader -> MarkovianChunks] -> [RSAAggregate(route/)] -> WriteBuilt(built/)
    pack run:                    MixtureSample(token cache + built/) -> AP trim -> pack

Grouping traces by problem is a global step, partitioned: `RouteTraces` sends every trace of a problem to the one task
that owns its key (a stable hash of the key modulo the task count); `RSAAggregate` in task r sees the traces of its
own problems only. Its memory is an index of its partition (key, id, file, row per trace: a few hundred bytes a
trace, so corpus / tasks in all) plus the traces of one problem at a time, memory-mapped: more tasks bound it for any
corpus size. Markovian chunking is per trace and streams; routing holds a small buffer per partition.
"""

from __future__ import annotations

import hashlib
import json
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from reasonpipe.trimming.built import BuiltSample, SampleFile, SampleWriter
from reasonpipe.trimming.markovian import chunk_trace
from reasonpipe.trimming.rsa import Trace, aggregate
from reasonpipe.trimming.tails import EncodedPrompt

RSA, MARKOVIAN = "rsa_aggregate", "markovian_chunks"
VERDICTS = {True: "correct", False: "incorrect", None: "unknown"}


def partition_of(problem_key: str, partitions: int) -> int:
    """The task that owns a problem: a stable hash of its key (no dependence on Python's hash seed)."""
    digest = hashlib.blake2b(problem_key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % partitions


def _selected(doc: Document, domains: tuple[str, ...] | None) -> bool:
    return doc.metadata.get("kind") == "chat" and (domains is None or doc.metadata.get("domain") in domains)


def _as_sample(doc: Document, **extra) -> BuiltSample:
    m = doc.metadata
    fields = {k: m.get(k) for k in ("source", "domain", "kind", "problem_key", "correct", "builder")}
    return BuiltSample(doc.id, segments=m["segments"], provenance=m.get("provenance"), **(fields | extra))


CHUNK_SEP = "@chunk"  # chunk k of trace T has id T@chunk<k>


class RouteTraces(PipelineStep):
    """Writes the chat samples of the selected domains to `folder/<partition>/<rank>.arrow` by problem key."""

    name = "🧭 route traces by problem"
    type = "🧪 - TTC"

    def __init__(self, folder: str | Path, partitions: int, domains: list[str] | None = None) -> None:
        super().__init__()
        if partitions <= 0:
            raise ValueError(f"RouteTraces partitions: got {partitions}, must be > 0")
        self.folder, self.partitions = Path(folder), partitions
        self.domains = tuple(domains) if domains else None

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        writers: dict[int, SampleWriter] = {}
        try:
            for doc in data:
                self.stat_update("documents")
                key = doc.metadata.get("problem_key")
                if not _selected(doc, self.domains) or not key:
                    self.stat_update("not_routed")
                    continue
                p = partition_of(key, self.partitions)
                if p not in writers:  # a small buffer per partition: memory ~ partitions x 256 KiB at most
                    writers[p] = SampleWriter(self.folder / f"{p:05d}" / f"{rank:05d}.arrow", batch_tokens=1 << 16)
                writers[p].write(_as_sample(doc))
                self.stat_update("routed")
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        for w in writers.values():
            w.close()
        return
        yield


class RSAAggregate(PipelineStep):
    """Builds the aggregation samples of the problems that task `rank` owns (module doc); passes upstream data on.

    Each sample is a chat document: id `rsa:<problem key>:<j>`, the target's source, domain `output_domain`,
    `metadata["rsa"]` = {problem_key, target, candidates, k, tau, tail_unit, tail_tokens, cut, target_correct,
    candidates_correct}, `builder` "rsa_aggregate", `correct` = the target's verdict.
    """

    name = "🧬 RSA aggregation samples"
    type = "🧪 - TTC"

    def __init__(
        self,
        route_folder: str | Path,
        encoded: EncodedPrompt,
        user_id: int,
        tau: int,
        per_problem: int = 1,
        min_traces: int = 2,
        include_answer: bool = False,
        require_correct: bool = False,
        require_incorrect: bool = False,
        budget: int | None = None,
        seed: int = 0,
        word_starts: list[int] | None = None,
        output_domain: str = RSA,
    ) -> None:
        super().__init__()
        self.route_folder, self.encoded, self.user_id = Path(route_folder), encoded, user_id
        self.options = dict(
            tau=tau, per_problem=per_problem, seed=seed, include_answer=include_answer,
            require_correct=require_correct, require_incorrect=require_incorrect, budget=budget,
        )  # fmt: skip
        self.min_traces, self.output_domain = max(min_traces, encoded.k + 1), output_domain
        self.word_starts = np.asarray(word_starts, dtype=np.uint32) if word_starts else None
        self.tail_unit = "words" if word_starts else "tokens"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        files = [SampleFile(f) for f in sorted((self.route_folder / f"{rank:05d}").glob("*.arrow"))]
        index = sorted(  # (problem key, trace id, file, row): the partition's traces, grouped by problem
            (key, tid, f, row)
            for f, file in enumerate(files)
            for row, (key, tid) in enumerate(zip(file.column("problem_key"), file.column("id")))
        )
        for key, rows in groupby(index, key=itemgetter(0)):
            yield from self._problem(key, list(rows), files)

    def _problem(self, key: str, rows: list, files: list[SampleFile]) -> DocumentsPipeline:
        self.stat_update("problems")
        if len(rows) < self.min_traces:
            self.stat_update("problems_too_few_traces")
            return
        traces, sources = [], {}
        for _, _, f, row in rows:
            s = files[f][row]
            traces.append(Trace(s.id, s.segments, s.correct))
            sources[s.id] = s.source
        samples, skipped = aggregate(
            key, traces, self.encoded, self.user_id, word_starts=self.word_starts, **self.options
        )
        for reason, n in skipped.items():
            if n:
                self.stat_update(f"skipped_{reason}", value=n)
        if not samples:
            self.stat_update("problems_without_sample")
        for j, s in enumerate(samples):
            rsa = {
                "problem_key": key, "target": s.target, "candidates": list(s.candidates), "k": self.encoded.k,
                "tau": self.options["tau"], "tail_unit": self.tail_unit, "tail_tokens": list(s.tail_tokens),
                "cut": list(s.cut), "target_correct": s.target_correct,
                "candidates_correct": list(s.candidates_correct),
            }  # fmt: skip
            self.stat_update("samples")
            self.stat_update(f"targets_{VERDICTS[s.target_correct]}")
            self.stat_update("tail_tokens", value=sum(s.tail_tokens))
            meta = {
                "source": sources[s.target], "domain": self.output_domain, "kind": "chat", "problem_key": key,
                "correct": s.target_correct, "builder": RSA, "rsa": rsa, "segments": s.segments,
                "provenance": json.dumps(rsa, sort_keys=True),
            }  # fmt: skip
            yield Document(text="", id=f"rsa:{key}:{j}", metadata=meta)


class MarkovianChunks(PipelineStep):
    """Turns each trace longer than `context` into its chain of chunk samples (trimming/markovian.py).

    Only the chunks move on (the traces themselves are packed by the pack run). Chunk k of trace T: id `T@chunk<k>`,
    domain `output_domain`, `metadata["chunk"]` = {trace, index, chunks, start, end, context_tokens,
    reasoning_tokens, last}, `builder` "markovian_chunks"; source, problem key and verdict are the trace's.
    A chunk that is not the last ends mid-reasoning: no `</think>`, answer or end of turn.
    """

    name = "⛓️ Markovian chunks"
    type = "🧪 - TTC"

    def __init__(
        self, context: int, carry: int, head: int, domains: list[str] | None = None, output_domain: str = MARKOVIAN
    ) -> None:
        super().__init__()
        if context <= 0 or carry < 0 or head < 0 or carry + head >= context:
            raise ValueError(f"MarkovianChunks: context {context} > carry {carry} + head {head} >= 0 required")
        self.context, self.carry, self.head = context, carry, head
        self.domains, self.output_domain = (tuple(domains) if domains else None), output_domain

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            if not _selected(doc, self.domains):
                continue
            self.stat_update("traces")
            chunks, reason = chunk_trace(doc.metadata["segments"], self.context, self.carry, self.head)
            if reason is not None:
                self.stat_update(f"traces_{reason}")
                continue
            self.stat_update("chains")
            for c in chunks:
                self.stat_update("chunks")
                info = {
                    "trace": doc.id, "index": c.index, "chunks": len(chunks), "start": c.start, "end": c.end,
                    "context_tokens": c.context_tokens, "reasoning_tokens": chunks[-1].end,
                    "last": c.index == len(chunks) - 1,
                }  # fmt: skip
                meta = {k: doc.metadata.get(k) for k in ("source", "problem_key", "correct")}
                meta |= {"domain": self.output_domain, "kind": "chat", "builder": MARKOVIAN, "chunk": info}
                meta |= {"segments": c.segments, "provenance": json.dumps(info, sort_keys=True)}
                yield Document(text="", id=chunk_id(doc.id, c.index), metadata=meta)


class WriteBuilt(PipelineStep):
    """Writes the built samples of task `rank` to `folder/<rank>.arrow` (an empty file when there are none)."""

    name = "💾 write built samples"
    type = "💽 - WRITER"

    def __init__(self, folder: str | Path) -> None:
        super().__init__()
        self.folder = Path(folder)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        writer = SampleWriter(self.folder / f"{rank:05d}.arrow")
        try:
            for doc in data:
                writer.write(_as_sample(doc))
                self.stat_update(f"written_{doc.metadata.get('builder')}")
        except BaseException:
            writer.abort()
            raise
        writer.close()
        return
        yield


def chunk_id(trace_id: str, index: int) -> str:
    return f"{trace_id}{CHUNK_SEP}{index}"


def sampling_key(sample_id: str) -> str:
    """The id mixture sampling decides on: a Markovian chunk's trace (so a chain is kept, dropped or repeated whole),
    any other sample's own id."""
    return sample_id.rpartition(CHUNK_SEP)[0] or sample_id


def built_files(folder: str | Path, rank: int, world_size: int) -> list[Path]:
    """The built-sample files task `rank` reads: files rank, rank + world_size, ... of `folder`, sorted by name."""
    files = sorted(Path(folder).glob("*.arrow"))
    if not files:
        raise FileNotFoundError(f"no built sample files in {folder}; run the ttc-build run first")
    return files[rank::world_size]


def built_document(s: BuiltSample, doc_id: str | None = None, **extra: Any) -> Document:
    """A built sample as the token cache reader makes documents (text "", `metadata["segments"]`), plus `builder`,
    `provenance` (JSON) and `rsa` / `chunk` (its parsed form)."""
    meta = {"source": s.source, "domain": s.domain, "kind": s.kind, "segments": s.segments}
    meta |= {k: v for k in ("problem_key", "correct", "builder", "provenance") if (v := getattr(s, k)) is not None}
    if s.provenance:
        meta["rsa" if s.builder == RSA else "chunk"] = json.loads(s.provenance)
    return Document(text="", id=doc_id or s.id, metadata={**meta, **extra})
