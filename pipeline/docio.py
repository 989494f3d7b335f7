"""Intermediate documents between datatrove runs: one gzipped JSONL file per task rank, on any fsspec filesystem.

Rank r writes `<folder>/<r:05d>.jsonl.gz` and, in the next run, rank r reads exactly that file (datatrove's readers
shard `sorted(files)[rank::n]`, which shifts when a rank wrote nothing). Per-rank document order is preserved, which
the dedup filters rely on. `folder` is a path or URL (`s3://...`, `memory://...`): I/O goes through datatrove's
`DataFolder`, so the workers of a run can share an object store.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import orjson
from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolder, DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.typeshelper import StatHints


def doc_file(rank: int) -> str:
    return f"{rank:05d}.jsonl.gz"


def gzip_lines(raw: BinaryIO, block: int = 1 << 18, most: int = 1 << 22) -> Iterator[bytes]:
    """The lines (without their newline) of a gzip stream of one or more members, decompressed a block at a time:
    `GzipFile`'s line iterator costs ~4x more per document. Memory: one `block` of input and at most `most` bytes
    of output at once. A stream cut off inside a member raises `EOFError`, as `GzipFile` does."""
    inflate, fed, pending, rest = zlib.decompressobj(wbits=31), False, b"", b""
    while True:
        if not pending:
            pending = raw.read(block)
            if not pending:
                break
        data = inflate.decompress(pending, most)
        fed = True
        if inflate.eof:  # a member ends: what follows is the next member
            pending, inflate, fed = inflate.unused_data, zlib.decompressobj(wbits=31), False
        else:
            pending = inflate.unconsumed_tail
        if data:
            lines = (rest + data).split(b"\n")
            rest = lines.pop()
            yield from lines
    if fed:
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")
    if rest:
        yield rest


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
            for doc in read_docs(self.folder, name):
                self.stat_update(StatHints.total)
                yield doc


def read_docs(folder: DataFolder, name: str) -> Iterator[Document]:
    """The documents of one file a `DocWriter` (or the same format) wrote, streamed."""
    with folder.open(name, "rb") as raw:
        for line in gzip_lines(raw):
            yield Document(**orjson.loads(line))
