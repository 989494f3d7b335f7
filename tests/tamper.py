"""Corrupt an output on purpose: shapes the project's writer never makes, for the validator's tests.

`rewrite_shard` edits a shard's columns and re-signs index.json (sha256, bytes, real tokens, totals) so that only
content-level checks (the AP invariant, placements, token ids) can notice the change. The edited shard is written by
the project's own ShardWriter, so its format stays exactly the contract's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from reasonpipe.tokenizer.shards import COLUMNS, ShardWriter, open_shard


def rewrite_shard(out: str | Path, rel_path: str, edit: Callable[[dict], None]) -> None:
    """Rewrite shard `rel_path` of OUTPUT `out` after `edit(cols)` mutates its columns in place; re-sign index.json.
    cols: input_ids / loss_mask / segment as (rows, seq_len) numpy arrays, doc_offsets / sample_ids as lists."""
    out = Path(out)
    path = out / rel_path
    table = open_shard(path)
    seq_len = table.schema.field("input_ids").type.list_size
    cols = {c: table.column(c).combine_chunks().flatten().to_numpy().reshape(-1, seq_len).copy() for c in COLUMNS[:3]}
    cols |= {c: table.column(c).to_pylist() for c in COLUMNS[3:]}
    del table  # release the memory map before the file is replaced
    edit(cols)
    index = json.loads((out / "index.json").read_text())
    tmp = path.with_name(f".{path.name}.rewrite")
    with ShardWriter(tmp, seq_len, compression=index["compression"]) as writer:
        writer.write_batch(cols)
    (stats,) = writer.stats
    tmp.replace(path)
    entry = next(e for e in index["shards"] if e["path"] == rel_path)
    entry.update(rows=stats.rows, tokens=stats.tokens, real_tokens=stats.real_tokens, sha256=stats.sha256)
    entry["bytes"] = stats.bytes
    for split, tot in index["totals"].items():
        tot["real_tokens"] = sum(e["real_tokens"] for e in index["shards"] if e["split"] == split)
        tot["packing_efficiency"] = tot["real_tokens"] / tot["tokens"] if tot["tokens"] else 0.0
    (out / "index.json").write_text(json.dumps(index, sort_keys=True, indent=1))
