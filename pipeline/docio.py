"""Intermediate documents between datatrove runs: one gzipped JSONL file per task rank.

Rank r writes `<folder>/<r:05d>.jsonl.gz` and, in the next run, rank r reads exactly that file (datatrove's readers
shard `sorted(files)[rank::n]`, which shifts when a rank wrote nothing). Per-rank document order is preserved, which
datatrove's dedup filters rely on (they address documents by their index within a rank).
"""

from __future__ import annotations

import gzip
import os

import orjson
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.typeshelper import StatHints


def doc_file(folder: str, rank: int) -> str:
    return os.path.join(folder, f"{rank:05d}.jsonl.gz")


class DocWriter(PipelineStep):
    """Writes every document to this rank's file (always created, even when empty), atomically, and passes it on."""

    name = "💾 documents"
    type = "💽 - WRITER"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        os.makedirs(self.folder, exist_ok=True)
        path = doc_file(self.folder, rank)
        # its own name per attempt: a retried task never shares its temporary file with a straggler
        tmp = os.path.join(self.folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
        with gzip.open(tmp, "wb", compresslevel=1) as f:
            for doc in data:
                f.write(orjson.dumps({"id": doc.id, "text": doc.text, "metadata": doc.metadata}) + b"\n")
                self.stat_update("written")
                yield doc
        os.replace(tmp, path)


class DocReader(PipelineStep):
    """Reads the documents a `DocWriter` wrote: this rank's file, or every file when `all_ranks` (1-task runs)."""

    name = "📂 documents"
    type = "📖 - READER"

    def __init__(self, folder: str, all_ranks: bool = False):
        super().__init__()
        self.folder, self.all_ranks = folder, all_ranks

    def _paths(self, rank: int) -> list[str]:
        if self.all_ranks:
            return sorted(os.path.join(self.folder, f) for f in os.listdir(self.folder) if f.endswith(".jsonl.gz"))
        return [doc_file(self.folder, rank)]

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for path in self._paths(rank):
            with gzip.open(path, "rb") as f:
                for line in f:
                    self.stat_update(StatHints.total)
                    yield Document(**orjson.loads(line))
