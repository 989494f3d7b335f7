"""One task's packed output: validation routing, packing, shards, per-sample rows and task stats.

`PackedOutput` is the pure core of the `PackWriter` step (no datatrove). For task `rank` it writes, under `folder`:

    train/{rank:05d}-{k:05d}.arrow, val/{rank:05d}-{k:05d}.arrow   shards (ShardWriter), k = task shard
    samples/{rank:05d}.parquet                                      one row per packed sample (SAMPLE_SCHEMA)
    stats/{rank:05d}.json                                           shard stats and packing counters, written last

`finalize_output` (index.py) assembles these task outputs into the final OUTPUT folder.
Whole samples go to validation when a stable hash of (seed, route id) is below `validation_fraction`; the route id
of a mixture copy is its original's id, so a sample and its copies always land in the same split.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from reasonpipe.segments import SEG_REASONING, Segment
from reasonpipe.tokenizer.packing import Packer, PackItem, loss_mask_for
from reasonpipe.tokenizer.shards import Compression, ShardWriter
from reasonpipe.tokenizer.template import assistant_flags
from reasonpipe.tokenizer.vocab import TemplateTokens

SPLITS = ("train", "val")
SAMPLE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("domain", pa.string()),
        ("split", pa.string()),
        ("status", pa.string()),
        ("tokens_before", pa.uint32()),
        ("tokens_after", pa.uint32()),
        ("reasoning_before", pa.uint32()),
        ("reasoning_kept", pa.uint32()),
        ("dropped_thinks", pa.uint16()),
        ("answer_lost", pa.bool_()),  # trim.policy "truncate" only: the cut fell inside the answer
        ("task_shard", pa.int32()),
        ("row", pa.int32()),
    ]
)


def in_validation(route_id: str, fraction: float, seed: int) -> bool:
    """Stable per-sample coin: True for about `fraction` of ids."""
    if fraction <= 0.0:
        return False
    digest = hashlib.blake2b(f"val\x00{seed}\x00{route_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def pack_item(
    sample_id: str,
    segments: Sequence[Segment],
    atomic: bool,
    loss_mask: Literal["all", "assistant"],
    tokens: TemplateTokens,
) -> PackItem:
    """The packer's view of a sample: its tokens, per-token segment codes and loss mask."""
    ids = np.concatenate([s.ids for s in segments]) if len(segments) > 1 else np.asarray(segments[0].ids)
    seg = np.repeat(np.array([s.kind for s in segments], np.uint8), [len(s.ids) for s in segments])
    flags = assistant_flags(segments, tokens) if loss_mask == "assistant" else None
    return PackItem(sample_id, ids, seg, loss_mask_for(seg, loss_mask, flags), atomic)


class _Split:
    def __init__(self, folder: Path, split: str, rank: int, cfg: PackedOutput) -> None:
        self.packer = Packer(cfg.seq_len, cfg.tokens.pad, cfg.buffer_windows, cfg.min_fill_chunk)
        self.writer = ShardWriter(
            folder / split / f"{rank:05d}-{{k:05d}}.arrow", cfg.seq_len, cfg.rows_per_shard, cfg.compression
        )
        self.samples = 0

    def write(self, windows: list) -> None:
        for w in windows:
            self.writer.write(w)


class PackedOutput:
    """Packs the samples of task `rank` into train/val shards; see the module doc. Call `close()` once at the end."""

    def __init__(
        self,
        folder: str | Path,
        rank: int,
        seq_len: int,
        tokens: TemplateTokens,
        loss_mask: Literal["all", "assistant"] = "all",
        buffer_windows: int = 64,
        min_fill_chunk: int = 1,
        validation_fraction: float = 0.0,
        seed: int = 0,
        rows_per_shard: int | None = None,
        compression: Compression = None,
    ) -> None:
        if not 0.0 <= validation_fraction < 1.0:
            raise ValueError(f"validation_fraction: got {validation_fraction}, allowed: [0, 1)")
        if loss_mask not in ("all", "assistant"):
            raise ValueError(f"loss_mask: got {loss_mask!r}, allowed: 'all', 'assistant'")
        self.folder, self.rank = Path(folder), rank
        self.seq_len, self.tokens, self.loss_mask = seq_len, tokens, loss_mask
        self.buffer_windows, self.min_fill_chunk = buffer_windows, min_fill_chunk
        self.validation_fraction, self.seed = validation_fraction, seed
        self.rows_per_shard, self.compression = rows_per_shard, compression
        self.splits = {s: _Split(self.folder, s, rank, self) for s in SPLITS}
        self.rows: dict[str, list] = {f.name: [] for f in SAMPLE_SCHEMA}
        self._closed = False

    def add(
        self,
        sample_id: str,
        segments: Sequence[Segment],
        kind: str,
        source: str | None = None,
        domain: str | None = None,
        trim: dict[str, Any] | None = None,
        route_id: str | None = None,
    ) -> str:
        """Pack one sample (chat samples atomic, plain text splittable); returns its split."""
        split = "val" if in_validation(route_id or sample_id, self.validation_fraction, self.seed) else "train"
        atomic = kind == "chat"
        item = pack_item(sample_id, segments, atomic, self.loss_mask, self.tokens)
        n = len(item.ids)
        if atomic and n > self.seq_len:
            raise ValueError(
                f"sample {sample_id!r}: {n} tokens > seq_len {self.seq_len}; AP-trim chat samples to the "
                "context before packing (APTrim with a budget <= seq_len)"
            )
        target = self.splits[split]
        target.write(target.packer.add(item))
        target.samples += 1
        if trim is None:  # not trimmed: a chat sample that fits, or plain text
            reasoning = sum(len(s.ids) for s in segments if s.kind == SEG_REASONING)
            trim = {"status": "fit" if atomic else "plain", "tokens_before": n, "tokens_after": n,
                    "reasoning_before": reasoning, "reasoning_kept": reasoning, "dropped_thinks": 0,
                    "answer_lost": False}  # fmt: skip
        r = self.rows
        r["id"].append(sample_id)
        r["source"].append(source)
        r["domain"].append(domain)
        r["split"].append(split)
        for key in ("status", "tokens_before", "tokens_after", "reasoning_before", "reasoning_kept", "dropped_thinks"):
            r[key].append(trim[key])
        r["answer_lost"].append(bool(trim.get("answer_lost", False)))
        return split

    def close(self) -> dict[str, Any]:
        """Flush the packers, finish the shards, write samples and stats; returns the stats."""
        if self._closed:
            raise RuntimeError("PackedOutput.close() called twice")
        self._closed = True
        stats: dict[str, Any] = {
            "rank": self.rank,
            "seq_len": self.seq_len,
            "compression": self.compression,
            "loss_mask": self.loss_mask,
            "rows_per_shard": self.rows_per_shard,
            "splits": {},
        }
        placements = {}
        for name, sp in self.splits.items():
            sp.write(sp.packer.flush())
            shards = sp.writer.close()
            p = sp.packer
            placements[name] = p.placements
            stats["splits"][name] = {
                "samples": sp.samples,
                "windows": p.windows,
                "tokens": p.windows * self.seq_len,
                "real_tokens": p.real_tokens,
                "pad_tokens": p.pad_tokens,
                "split_documents": p.split_documents,
                "shards": [
                    {**s.to_dict(), "path": Path(s.path).relative_to(self.folder).as_posix(), "k": k}
                    for k, s in enumerate(shards)
                ],
            }
        per_shard = self.rows_per_shard
        for sid, split in zip(self.rows["id"], self.rows["split"]):
            ordinal, _offset = placements[split][sid]
            k, row = divmod(ordinal, per_shard) if per_shard else (0, ordinal)
            self.rows["task_shard"].append(k)
            self.rows["row"].append(row)
        table = pa.Table.from_pydict(self.rows, schema=SAMPLE_SCHEMA)
        write_parquet_atomic(table, self.folder / "samples" / f"{self.rank:05d}.parquet")
        write_json_atomic(self.folder / "stats" / f"{self.rank:05d}.json", stats)
        return stats
