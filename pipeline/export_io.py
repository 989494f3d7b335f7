"""What the exports share: the OUTPUT folder they read (validated) and the destination folder they replace.

`open_output` checks index.json against the shard contract's schema, the tokenizer's sha256 and that every indexed
shard exists; `shard_batches` streams one shard's record batches (memory-mapped) after checking its window length and
row count against the index. Every problem is an `ExportError` that names the file and the fix.

`staged_dest` builds an export in `DEST.partial` beside DEST and renames it into place once complete, so an
interrupted export (Ctrl-C, a crash, a bad shard half-way) leaves DEST as it was. A destination is replaced only if it
is empty or holds `reasonpipe-export.json` (written last by every export): an export never deletes a folder it did not
write.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from reasonpipe.pipeline.inspect_validate import IndexModel, ShardEntry
from reasonpipe.tokenizer.index import tool_version
from reasonpipe.tokenizer.shards import sha256_file

MARKER = "reasonpipe-export.json"


class ExportError(Exception):
    """A problem with the user's OUTPUT or DEST folder; the message names the file and what to do."""


@dataclass(frozen=True)
class SourceOutput:
    root: Path
    index: IndexModel
    index_sha256: str

    @property
    def seq_len(self) -> int:
        return self.index.seq_len

    def shards(self, split: str) -> list[ShardEntry]:
        return [s for s in self.index.shards if s.split == split]

    def provenance(self) -> dict[str, Any]:
        """Where an export came from: recorded in its marker file."""
        return {
            "source": str(self.root.resolve()),
            "source_index_sha256": self.index_sha256,
            "source_name": self.index.name,
            "tool_version": tool_version(),
            "seq_len": self.seq_len,
            "tokenizer": self.index.tokenizer.model_dump(),
        }


def open_output(path: str | Path) -> SourceOutput:
    """The OUTPUT folder at `path`, its index validated; raises ExportError naming what is wrong."""
    root = Path(path)
    index_path = root / "index.json"
    if not index_path.is_file():
        raise ExportError(
            f"{root}: no index.json, so not a reasonpipe output folder (make one with `reasonpipe run MANIFEST`)"
        )
    try:
        raw = json.loads(index_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{index_path}: not valid JSON ({e}); re-run `reasonpipe run` to rewrite it") from None
    try:
        index = IndexModel.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc']))}: {err['msg']} (found {err.get('input')!r})" for err in e.errors()
        )
        raise ExportError(f"{index_path}: {problems}; check it with `reasonpipe inspect {root} --validate`") from None
    if not index.shards:
        raise ExportError(f"{index_path}: lists no shards, so there is nothing to export")
    tok = root / index.tokenizer.path
    if not tok.is_file():
        raise ExportError(f"{tok}: missing (index.json lists it); the output folder is incomplete")
    if sha256_file(tok) != index.tokenizer.sha256:
        raise ExportError(
            f"{tok}: sha256 differs from index.json's tokenizer.sha256: these shards were not made with this "
            "tokenizer; restore it or re-run `reasonpipe run`"
        )
    for s in index.shards:
        if not (root / s.path).is_file():
            raise ExportError(f"{root / s.path}: missing (index.json lists it); re-run `reasonpipe run` to rebuild it")
    return SourceOutput(root, index, sha256_file(index_path))


def shard_batches(src: SourceOutput, entry: ShardEntry) -> Iterator[pa.RecordBatch]:
    """The record batches of one indexed shard, memory-mapped, after checking its window length and row count."""
    path = src.root / entry.path
    try:
        reader = pa.ipc.open_stream(pa.memory_map(str(path), "r"))
        size = reader.schema.field("input_ids").type.list_size
    except (pa.ArrowInvalid, OSError, KeyError, AttributeError) as e:
        raise ExportError(
            f"{path}: not a readable shard ({e}); check it with `reasonpipe inspect --validate`"
        ) from None
    if size != src.seq_len:
        raise ExportError(f"{path}: windows of {size} tokens, index.json says seq_len {src.seq_len}")
    rows = 0
    try:
        for batch in reader:
            rows += batch.num_rows
            yield batch
    except (pa.ArrowInvalid, OSError) as e:
        raise ExportError(f"{path}: unreadable after {rows} rows ({e}); the shard is damaged") from None
    if rows != entry.rows:
        raise ExportError(f"{path}: {rows} rows, index.json says {entry.rows}; the shard does not match its index")


def _is_ours_or_empty(folder: Path) -> bool:
    return (folder / MARKER).is_file() or not any(folder.iterdir())


@contextmanager
def staged_dest(dest: str | Path, source: SourceOutput) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces `dest` (see the module doc); on any error it goes."""
    dest = Path(dest).absolute()
    src = source.root.resolve()
    if dest.resolve() == src or dest.resolve() in src.parents:
        raise ExportError(f"{dest}: is the output folder or contains it; export to a new folder")
    if dest.exists() and (not dest.is_dir() or not _is_ours_or_empty(dest)):
        raise ExportError(
            f"{dest}: exists and is not an earlier reasonpipe export (no {MARKER}); choose a new or empty folder"
        )
    partial = dest.with_name(dest.name + ".partial")
    if partial.exists():  # an interrupted export of ours: it holds the marker written when it was started
        if not partial.is_dir() or not _is_ours_or_empty(partial):
            raise ExportError(f"{partial}: exists and is not a reasonpipe staging folder; remove or rename it")
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    (partial / MARKER).write_text('{"complete": false}\n', encoding="utf-8")
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    old = dest.with_name(dest.name + f".old-{os.getpid()}")
    if dest.exists():
        dest.rename(old)
    partial.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def write_marker(folder: Path, info: dict[str, Any]) -> None:
    """The export's description, written last (its presence marks a complete export)."""
    text = json.dumps({**info, "complete": True}, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    (folder / MARKER).write_text(text, encoding="utf-8")
