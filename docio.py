"""Intermediate documents between datatrove runs: one zstd-compressed JSONL file per task rank, on any fsspec
filesystem.

Rank r writes `<folder>/<r:05d>.jsonl.zst` (zstd frames of ~1 MB of lines: `zstdcat` reads it) and, in the next run,
rank r reads exactly that file (datatrove's readers shard `sorted(files)[rank::n]`, which shifts when a rank wrote
nothing). Per-rank document order is preserved, which the dedup filters rely on. `folder` is a path or URL
(`s3://...`, `memory://...`): I/O goes through datatrove's `DataFolder`, so the workers of a run can share an object
store. zstd at level 1 compresses these files 3x faster than gzip at level 1 and decompresses them 2x faster, a
little smaller (measured on the dedup pass's documents).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO

import orjson
import zstandard
from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolder, DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.typeshelper import StatHints

DOC_GLOB = "*.jsonl.zst"
FRAME_BYTES = 1 << 20


def doc_file(rank: int) -> str:
    return f"{rank:05d}.jsonl.zst"


def doc_line(doc_id: str, text: str, metadata: dict) -> bytes:
    return orjson.dumps({"id": doc_id, "text": text, "metadata": metadata}) + b"\n"


class FrameWriter:
    """Lines into a zstd stream, compressed a frame of ~`frame_bytes` at a time (a compressor call per line costs
    ~10 us). `flush()` writes what is left."""

    def __init__(self, raw: BinaryIO, frame_bytes: int = FRAME_BYTES):
        self.raw, self.frame_bytes, self.lines, self.size = raw, frame_bytes, [], 0
        self.compressor = zstandard.ZstdCompressor(level=1)

    def write(self, line: bytes) -> None:
        self.lines.append(line)
        self.size += len(line)
        if self.size >= self.frame_bytes:
            self.flush()

    def flush(self) -> None:
        if self.lines:
            self.raw.write(self.compressor.compress(b"".join(self.lines)))
        self.lines, self.size = [], 0


def zstd_lines(raw: BinaryIO, block: int = 1 << 18) -> Iterator[bytes]:
    """The lines (without their newline) of a zstd stream of one or more frames, decompressed a block at a time.
    Memory: one `block` of input and the part of a frame it holds (a `FrameWriter` frame is ~1 MB of lines). A stream
    cut off inside a frame raises `EOFError` (zstandard's stream reader would end quietly)."""
    zstd = zstandard.ZstdDecompressor()
    inflate, fed, pending, rest = zstd.decompressobj(), False, b"", b""
    while True:
        if not pending:
            pending = raw.read(block)
            if not pending:
                break
        data = inflate.decompress(pending)
        fed = True
        if inflate.eof:  # a frame ends: what follows is the next frame
            pending, inflate, fed = inflate.unused_data, zstd.decompressobj(), False
        else:
            pending = b""
        if data:
            lines = (rest + data).split(b"\n")
            rest = lines.pop()
            yield from lines
    if fed:
        raise EOFError("zstd stream ended inside a frame (a truncated file)")
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
        with self.folder.open(tmp, "wb") as raw:
            out = FrameWriter(raw)
            for doc in data:
                out.write(doc_line(doc.id, doc.text, doc.metadata))
                self.stat_update("written")
                yield doc
            out.flush()
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
        names = self.folder.list_files(glob_pattern=DOC_GLOB) if self.all_ranks else [doc_file(rank)]
        for name in names:
            for doc in read_docs(self.folder, name):
                self.stat_update(StatHints.total)
                yield doc


def read_docs(folder: DataFolder, name: str) -> Iterator[Document]:
    """The documents of one file a `DocWriter` (or the same format) wrote, streamed."""
    with folder.open(name, "rb") as raw:
        for line in zstd_lines(raw):
            yield Document(**orjson.loads(line))
