"""One task's packed output: validation routing, packing, shards, per-sample rows and task stats.

`PackedOutput` is the pure core of the `PackWriter` step (no datatrove). For task `rank` it writes, under `folder`:

    train/{rank:05d}-{k:05d}.arrow, val/{rank:05d}-{k:05d}.arrow   shards (ShardWriter), k = task shard
    samples/{rank:05d}.parquet                                      one row per packed sample (SAMPLE_SCHEMA), written
                                                                    as samples get their window (placement order)
    stats/{rank:05d}.json                                           shard stats and packing counters, written last

`finalize_output` (index.py) assembles these task outputs into the final OUTPUT folder; the task stats carry the
sums it needs (trim counts and tokens, tokens per domain and source), so it never loads all samples at once.

Whole samples go to validation when a stable hash of (seed, route key) is below `validation_fraction`. The route key
of a chat sample is its `problem_key` (every trace of one problem, and of a near-duplicate problem group, shares it:
no problem lands in both splits); of a plain document (or a sample without a key) its id, or for a mixture copy its
original's id. A sample and its copies therefore always land in the same split.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
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
ROWS_PER_GROUP = 65536  # samples/ rows written at once (a parquet row group)
TRIM_SUMS = ("tokens_before", "tokens_after", "reasoning_before", "reasoning_kept", "dropped_thinks", "answer_lost")
SAMPLE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("domain", pa.string()),
        ("upstream_id", pa.string()),
        ("problem_key", pa.string()),
        ("copy_of", pa.string()),
        ("split", pa.string()),
        ("status", pa.string()),
        ("tokens_before", pa.uint32()),
        ("tokens_after", pa.uint32()),
        ("reasoning_before", pa.uint32()),
        ("reasoning_kept", pa.uint32()),
        ("dropped_thinks", pa.uint16()),
        ("answer_lost", pa.bool_()),  # trim.policy "truncate" only: the cut fell inside the answer
        ("builder", pa.string()),  # test-time-compute builder of the sample (null: a sample of the corpus)
        ("provenance", pa.string()),  # its JSON provenance (RSA: target and candidates; chunk: trace and token range)
        ("task_shard", pa.int32()),
        ("row", pa.int32()),
    ]
)


def in_validation(route_key: str, fraction: float, seed: int) -> bool:
    """Stable per-key coin: True for about `fraction` of keys."""
    if fraction <= 0.0:
        return False
    digest = hashlib.blake2b(f"val\x00{seed}\x00{route_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


def route_key(sample_id: str, kind: str, problem_key: str | None = None, copy_of: str | None = None) -> str:
    """What validation routing hashes: a chat sample's problem key, else the id of the original sample."""
    return problem_key if kind == "chat" and problem_key else copy_of or sample_id


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
    copy_of: str | None = None,
) -> PackItem:
    """The packer's view of a sample: its tokens, per-token segment codes and loss mask (and what it copies)."""
    ids = np.concatenate([s.ids for s in segments]) if len(segments) > 1 else np.asarray(segments[0].ids)
    seg = np.repeat(np.array([s.kind for s in segments], np.uint8), [len(s.ids) for s in segments])
    flags = assistant_flags(segments, tokens) if loss_mask == "assistant" else None
    mask = loss_mask_for(seg, loss_mask, flags)
    if any(s.context for s in segments):  # context segments (Markovian carry-over) never carry loss
        mask[np.repeat([s.context for s in segments], [len(s.ids) for s in segments])] = 0
    return PackItem(sample_id, ids, seg, mask, atomic, copy_of)


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
    """Packs the samples of task `rank` into train/val shards; see the module doc. Call `close()` once at the end.

    Memory: the packers' bounded buffers, the samples/ rows of the samples still in them, and one row group."""

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
        self._pass = 0  # mixture pass of the samples being added (copy number)
        # samples/ rows stream out as their samples are placed: only those still in a packer's buffer wait here
        self._pending: dict[str, dict[str, Any]] = {}
        self._rows: list[dict[str, Any]] = []
        self._samples_path = self.folder / "samples" / f"{rank:05d}.parquet"
        self._samples_path.parent.mkdir(parents=True, exist_ok=True)
        self._samples_tmp = self._samples_path.with_name(f".{self._samples_path.name}.tmp-{os.getpid()}")
        self._samples = pq.ParquetWriter(self._samples_tmp, SAMPLE_SCHEMA)
        # what finalize_output sums over tasks: trim statuses and token sums of chat samples, tokens per group
        self.status: Counter = Counter()
        self.trim_sums: Counter = Counter()
        self.tokens_by: dict[str, Counter] = {"domain": Counter(), "source": Counter()}
        self._closed = False

    def add(
        self,
        sample_id: str,
        segments: Sequence[Segment],
        kind: str,
        source: str | None = None,
        domain: str | None = None,
        trim: dict[str, Any] | None = None,
        copy_of: str | None = None,
        copy: int = 0,
        problem_key: str | None = None,
        upstream_id: str | None = None,
        builder: str | None = None,
        provenance: str | None = None,
    ) -> str:
        """Pack one sample (chat samples atomic, plain text splittable); returns its split.

        `copy_of`: the original of a mixture copy (routing, and the packer keeps them in different windows);
        `copy`: its copy number, which is its mixture pass: a new pass first closes the open windows, so copies land
        in later windows than their originals; `problem_key`: a chat sample's problem (routing); `upstream_id`: the
        record's own id (provenance)."""
        if sample_id in self._pending:
            raise ValueError(f"sample {sample_id!r} added twice to one task's output; sample ids must be unique")
        if copy > self._pass:
            self._pass = copy
            for sp in self.splits.values():
                self._placed(sp, sp.packer.close_open())
        key = route_key(sample_id, kind, problem_key, copy_of)
        split = "val" if in_validation(key, self.validation_fraction, self.seed) else "train"
        atomic = kind == "chat"
        item = pack_item(sample_id, segments, atomic, self.loss_mask, self.tokens, copy_of)
        n = len(item.ids)
        if atomic and n > self.seq_len:
            raise ValueError(
                f"sample {sample_id!r}: {n} tokens > seq_len {self.seq_len}; AP-trim chat samples to the "
                "context before packing (APTrim with a budget <= seq_len)"
            )
        target = self.splits[split]
        if trim is None:  # not trimmed: a chat sample that fits, or plain text
            reasoning = sum(len(s.ids) for s in segments if s.kind == SEG_REASONING)
            trim = {"status": "fit" if atomic else "plain", "tokens_before": n, "tokens_after": n,
                    "reasoning_before": reasoning, "reasoning_kept": reasoning, "dropped_thinks": 0,
                    "answer_lost": False}  # fmt: skip
        row = {"id": sample_id, "source": source, "domain": domain, "upstream_id": upstream_id}
        row |= {"problem_key": problem_key, "copy_of": copy_of, "split": split, "status": trim["status"]}
        row |= {"builder": builder, "provenance": provenance}
        self._pending[sample_id] = row | {name: trim[name] for name in TRIM_SUMS}
        self._placed(target, target.packer.add(item))
        target.samples += 1
        self.status[trim["status"]] += 1
        if atomic:
            self.trim_sums.update({name: trim[name] for name in TRIM_SUMS})
        self.tokens_by["domain"][str(domain)] += trim["tokens_after"]
        self.tokens_by["source"][str(source)] += trim["tokens_after"]
        return split

    def _placed(self, sp: _Split, windows: list) -> None:
        """Write finished windows, and the samples/ rows of the samples that now have a window."""
        sp.write(windows)
        for sid, (ordinal, _offset) in sp.packer.take_placements().items():
            k, row = divmod(ordinal, self.rows_per_shard) if self.rows_per_shard else (0, ordinal)
            self._rows.append(self._pending.pop(sid) | {"task_shard": k, "row": row})
        if len(self._rows) >= ROWS_PER_GROUP:
            self._write_rows()

    def _write_rows(self) -> None:
        if self._rows:
            self._samples.write_table(pa.Table.from_pylist(self._rows, schema=SAMPLE_SCHEMA))
            self._rows = []

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
            "status": dict(sorted(self.status.items())),
            "trim_sums": {name: self.trim_sums[name] for name in TRIM_SUMS},
            "tokens_by": {by: dict(sorted(c.items())) for by, c in self.tokens_by.items()},
            "splits": {},
        }
        for name, sp in self.splits.items():
            self._placed(sp, sp.packer.flush())
            shards = sp.writer.close()
            p = sp.packer
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
        assert not self._pending, f"samples never placed: {list(self._pending)[:3]}"
        self._write_rows()
        self._samples.close()
        os.replace(self._samples_tmp, self._samples_path)
        write_json_atomic(self.folder / "stats" / f"{self.rank:05d}.json", stats)
        return stats
