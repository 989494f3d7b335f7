"""Speed of `reasonpipe inspect` on ~1 GB of shards (target: default view < 10 s on 2 cores).

Generates a benchmark-scale OUTPUT in a temp dir (tests/outputgen.py: seq_len 4096, random ids in the chat/plain
templates), then times, as subprocesses (imports included), the default view and --validate, next to two baselines
measured in the same run: reading every shard byte once, and sha256 of every shard byte (what --validate must do
at least). Page cache is warm (the files were just written): figures are for a hot cache.

    .venv/bin/python bench/inspect_speed.py [--gb 1.0] [--repeat 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from outputgen import make_synthetic_output  # noqa: E402


def timed(cmd: list[str], repeat: int) -> tuple[float, int]:
    """Best wall time of `repeat` runs of cmd (stdout discarded) and its exit code."""
    best, code = float("inf"), 0
    for _ in range(repeat):
        t = time.perf_counter()
        code = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
        best = min(best, time.perf_counter() - t)
    return best, code


def read_all(files: list[Path], digest: bool) -> float:
    t = time.perf_counter()
    for f in files:
        h = hashlib.sha256() if digest else None
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                if h:
                    h.update(chunk)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gb", type=float, default=1.0, help="shard bytes to generate, in GiB")
    ap.add_argument("--repeat", type=int, default=2, help="runs per timing (best is kept)")
    ap.add_argument("--keep", type=Path, help="write the output here and keep it (default: temp dir, removed)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="inspect_speed_") as tmp:
        out = args.keep or Path(tmp) / "out"
        t = time.perf_counter()
        make_synthetic_output(out, target_bytes=int(args.gb * (1 << 30)))
        gen = time.perf_counter() - t
        files = sorted(out.glob("shards*/*.arrow"))
        size = sum(f.stat().st_size for f in files)
        py = [sys.executable, "-m", "reasonpipe.pipeline.inspect_cli", str(out), "--color", "never"]
        default, c1 = timed(py, args.repeat)
        validate, c2 = timed([*py, "--validate"], args.repeat)
        json_view, _ = timed([*py, "--json"], args.repeat)
        noop, _ = timed([sys.executable, "-c", "import polars, pyarrow, rich, numpy"], args.repeat)
        raw, sha = read_all(files, False), read_all(files, True)
        gib = size / (1 << 30)
        print(
            f"shards: {len(files)} files, {gib:.2f} GiB ({size:,} bytes), generated in {gen:.1f} s;"
            f" cores {os.cpu_count()}"
        )
        print(f"python + imports only        {noop:6.2f} s")
        print(f"default view                 {default:6.2f} s  exit {c1}  ({gib / default:.2f} GiB/s)")
        print(f"default view --json          {json_view:6.2f} s")
        print(f"--validate                   {validate:6.2f} s  exit {c2}  ({gib / validate:.2f} GiB/s)")
        print(f"baseline: read all bytes     {raw:6.2f} s")
        print(f"baseline: sha256 all bytes   {sha:6.2f} s")
        print(f"ratios: default / read-all = {default / raw:.2f}x, validate / sha256-all = {validate / sha:.2f}x")
        print(f"target: default view < 10 s -> {'met' if default < 10 else 'NOT met'}")


if __name__ == "__main__":
    main()
