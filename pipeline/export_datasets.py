"""`reasonpipe export hf OUT DEST`: the windows of an OUTPUT folder as a Hugging Face `datasets` folder.

DEST is a `DatasetDict` written with `save_to_disk` (`datasets.load_from_disk(DEST)` reads it): split `train` from
shards/ and `validation` from shards-val/ (when the output has validation windows), rows in index order, the shard
columns unchanged (input_ids, loss_mask, segment as fixed-length sequences; doc_offsets; sample_ids). Beside the
splits (in the same folder): `tokenizer.json` and `reasonpipe-export.json` (provenance and row counts).

Memory is bounded: each uncompressed shard is memory-mapped (`Dataset.from_file`, zero-copy) and `save_to_disk`
streams them; lz4/zstd shards are first decompressed batch by batch into uncompressed staging files.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa

from reasonpipe.pipeline.export_io import SourceOutput, open_output, shard_batches, staged_dest, write_marker
from reasonpipe.pipeline.inspect_validate import ShardEntry

SPLIT_NAMES = {"train": "train", "val": "validation"}


def _shard_dataset(src: SourceOutput, entry: ShardEntry, staging: Path):
    """One shard as a memory-mapped `datasets.Dataset`, after checking it against the index."""
    from datasets import Dataset

    batches = shard_batches(src, entry)
    if src.index.compression is None:
        for _ in batches:  # walks the memory-mapped stream: checks length and rows without copying
            pass
        return Dataset.from_file(str(src.root / entry.path))
    path = staging / entry.path.replace("/", "-")  # compressed buffers cannot be mapped: decompress batch by batch
    with pa.OSFile(str(path), "wb") as sink:
        first = next(batches)
        with pa.ipc.new_stream(sink, first.schema) as writer:
            writer.write_batch(first)
            for batch in batches:
                writer.write_batch(batch)
    return Dataset.from_file(str(path))


def export_hf(output: str | Path, dest: str | Path) -> dict[str, Any]:
    """Export OUTPUT's splits to DEST (`DatasetDict.save_to_disk`); returns what `reasonpipe-export.json` records."""
    from datasets import DatasetDict, concatenate_datasets

    src = open_output(output)
    with staged_dest(dest, src) as folder:
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            splits = DatasetDict()
            for split, name in SPLIT_NAMES.items():
                if src.shards(split):
                    splits[name] = concatenate_datasets([_shard_dataset(src, e, staging) for e in src.shards(split)])
            splits.save_to_disk(str(folder))
            del splits  # release the memory maps before the staging copies go
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        shutil.copyfile(src.root / src.index.tokenizer.path, folder / "tokenizer.json")
        rows = {name: sum(s.rows for s in src.shards(split)) for split, name in SPLIT_NAMES.items()}
        info = {
            "kind": "hf",
            **src.provenance(),
            "format": "datasets DatasetDict (save_to_disk)",
            "splits": {name: {"rows": n} for name, n in rows.items() if n},
        }
        write_marker(folder, info)
    return info
