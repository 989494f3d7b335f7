"""What content-addressed work keys cost: `plan` with the digest memo (one stat per file) vs without (every byte read).

    python bench/work_keys.py [--files 32] [--mb 8] [--repeats 5]

Writes FILES jsonl files of MB MiB each into a temporary folder, then, interleaved REPEATS times, computes the digests
of all of them (a) with an empty memo (what the first `plan` of a corpus does: read everything), (b) with the memo
of the previous pass (what every later `plan`/`run` does: stat only), and (c) sha256 of the same bytes (the hash we did
not choose). Prints min/median seconds and the ratios; the work differs only in whether file bytes are read and hashed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reasonpipe.pipeline.hashing import HashCache  # noqa: E402


def make_files(folder: Path, files: int, mb: int) -> list[str]:
    line = (json.dumps({"text": "the quick brown fox jumps over the lazy dog " * 20}) + "\n").encode()
    paths = []
    old = time.time() - 3600  # older than the racy window: memoisable
    for i in range(files):
        path = folder / f"part{i:04d}.jsonl"
        with open(path, "wb") as f:
            for _ in range(mb * (1 << 20) // len(line)):
                f.write(line)
        os.utime(path, (old, old))
        paths.append(str(path))
    return paths


def sha256_all(paths: list[str]) -> None:
    for p in paths:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=32)
    ap.add_argument("--mb", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_files(Path(tmp), args.files, args.mb)
        work = Path(tmp, "work")
        work.mkdir()
        times: dict[str, list[float]] = {"cold (xxh3, read all)": [], "memo (stat only)": [], "sha256 (read all)": []}
        for _ in range(args.repeats):
            (work / ".hashes.json").unlink(missing_ok=True)
            start = time.perf_counter()
            cache = HashCache(str(work))
            for p in paths:
                cache.file(p)
            cache.save()
            times["cold (xxh3, read all)"].append(time.perf_counter() - start)
            start = time.perf_counter()
            warm = HashCache(str(work))
            for p in paths:
                warm.file(p)
            times["memo (stat only)"].append(time.perf_counter() - start)
            assert warm.hashed == 0
            start = time.perf_counter()
            sha256_all(paths)
            times["sha256 (read all)"].append(time.perf_counter() - start)
    total = args.files * args.mb
    print(f"{args.files} files, {total} MiB, {args.repeats} interleaved repeats (page cache warm after the first)")
    for name, ts in times.items():
        rate = "" if name.startswith("memo") else f"  ({total / min(ts):,.0f} MiB/s)"
        print(f"  {name:24s} min {min(ts):.4f}s  median {statistics.median(ts):.4f}s{rate}")
    cold, memo, sha = (statistics.median(t) for t in times.values())
    print(f"  memo / cold = {memo / cold:.4f} (cold / memo = {cold / memo:,.0f}x); sha256 / xxh3 = {sha / cold:.2f}x")


if __name__ == "__main__":
    main()
