"""Shards checked against their index.json before step 0, so a bad shard fails the run at start, named.

Always: every shard listed (train and val) exists, has the size index.json records, and its Arrow schema is the shard
contract's for the index's seq_len (a few bytes read). By default also its sha256 (`--no-verify` skips it): files are
hashed in a thread pool (hashlib releases the GIL), and under torchrun each rank hashes every world-th shard, so the
start-up cost is the data size / (ranks x disk bandwidth); BENCHMARKS.md has the cost per GB on one process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from reasonpipe.tokenizer.shards import sha256_file, shard_schema

MAX_LISTED = 10  # problems named in the error message


@dataclass
class VerifyReport:
    shards: int
    bytes: int
    hashed_bytes: int
    seconds: float


def shard_problem(root: Path, entry: dict[str, Any], seq_len: int) -> str | None:
    """What is wrong with one shard's file (missing, size, schema), or None; no hashing."""
    path = root / entry["path"]
    if not path.is_file():
        return f"{path}: missing"
    size = path.stat().st_size
    if size != entry["bytes"]:
        return f"{path}: {size} bytes, index.json says {entry['bytes']} (truncated or rewritten)"
    try:
        with pa.memory_map(str(path)) as src:
            schema = pa.ipc.open_stream(src).schema
    except (pa.ArrowInvalid, OSError) as e:
        return f"{path}: not an Arrow IPC stream ({e})"
    got = {f.name: f.type for f in schema}
    bad = [f"{f.name} is {got.get(f.name, 'missing')}, expected {f.type}" for f in shard_schema(seq_len)
           if got.get(f.name) != f.type]  # fmt: skip
    if bad:
        return f"{path}: not the shard schema for seq_len {seq_len}: {'; '.join(bad)}"
    return None


def verify_outputs(
    outputs: Sequence[tuple[str, Path, dict[str, Any]]],
    sha256: bool = True,
    rank: int = 0,
    world: int = 1,
    threads: int | None = None,
) -> tuple[list[str], VerifyReport]:
    """Problems (one line per bad shard) and what was checked. outputs: (name, local folder, its index)."""
    t0 = time.perf_counter()
    items = [(name, root, e, int(index["seq_len"])) for name, root, index in outputs for e in index["shards"]]
    problems = [p for _, root, e, seq in items if (p := shard_problem(root, e, seq))]
    hashed = 0
    if sha256 and not problems:
        mine = items[rank::world]
        hashed = sum(e["bytes"] for _, _, e, _ in mine)
        with ThreadPoolExecutor(threads or min(8, os.cpu_count() or 1), thread_name_prefix="verify") as pool:
            digests = list(pool.map(lambda it: sha256_file(it[1] / it[2]["path"]), mine))
        problems = [
            f"{root / e['path']}: sha256 {got[:12]}... differs from index.json's {e['sha256'][:12]}... (damaged)"
            for (_, root, e, _), got in zip(mine, digests)
            if got != e["sha256"]
        ]
    report = VerifyReport(len(items), sum(e["bytes"] for _, _, e, _ in items), hashed, time.perf_counter() - t0)
    return problems, report


def format_problems(problems: Sequence[str]) -> str:
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return (
        "shards do not match their index.json:\n  "
        + "\n  ".join(problems[:MAX_LISTED])
        + more
        + "\nre-run the pipeline that wrote them (it resumes and rewrites what is missing), or check the copy"
    )
