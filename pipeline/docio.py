"""Intermediate documents between datatrove runs: one gzipped JSONL file per task rank, on any fsspec filesystem.

Rank r writes `<folder>/<r:05d>.jsonl.gz` and, in the next run, rank r reads exactly that file (datatrove's readers
shard `sorted(files)[rank::n]`, which shifts when a rank wrote nothing). Per-rank document order is preserved, which
the dedup filters rely on. `folder` is a path or URL (`s3://...`, `memory://...`): I/O goes through datatrove's
`DataFolder`, so the workers of a run can share an object store.
"""

from __future__ import annotations

import gzip
import os

import orjson
from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.typeshelper import StatHints


def doc_file(rank: int) -> str:
    return f"{rank:05d}.jsonl.gz"


class DocWriter(PipelineStep):
    """Writes every document to this rank's file (always created, even when empty), atomically, and passes it on."""

    name = "💾 documents"
    type = "💽 - WRITER"

    def __init__(self, folder: DataFolderLike):
        super().__init__()
        self.folder = get_datafolder(folder)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        name = doc_file(rank)
        # its own name per attempt: a retried task never shares its temporary file with a straggler
        tmp = f".{name}.tmp-{os.getpid()}"
        with self.folder.open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as f:
            lines, size = [], 0  # compressed in ~1 MB blocks: one gzip call per document cost ~10 us
            for doc in data:
                lines.append(orjson.dumps({"id": doc.id, "text": doc.text, "metadata": doc.metadata}) + b"\n")
                size += len(lines[-1])
                if size >= 1 << 20:
                    f.write(b"".join(lines))
                    lines, size = [], 0
                self.stat_update("written")
                yield doc
            f.write(b"".join(lines))
        self.folder.mv(tmp, name)


class DocReader(PipelineStep):
    """Reads the documents a `DocWriter` wrote: this rank's file, or every file when `all_ranks` (1-task runs)."""

    name = "📂 documents"
    type = "📖 - READER"

    def __init__(self, folder: DataFolderLike, all_ranks: bool = False):
        super().__init__()
        self.path = folder if isinstance(folder, str) else None  # what the chain matches its writers by
        self.folder, self.all_ranks = get_datafolder(folder), all_ranks

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        names = self.folder.list_files(glob_pattern="*.jsonl.gz") if self.all_ranks else [doc_file(rank)]
        for name in names:
            with self.folder.open(name, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as f:
                for line in f:
                    self.stat_update(StatHints.total)
                    yield Document(**orjson.loads(line))
