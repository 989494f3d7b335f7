"""What the trainer's start-up shard check costs per GiB: sizes + schema only vs sizes + schema + sha256.

    .venv/bin/python bench/verify_shards.py --mib 512 --repeat 3

Writes ~`--mib` MiB of synthetic shards (bench/train_small.synthetic_output) into a temporary folder and times
trainer.verify.verify_outputs both ways, interleaved, `--repeat` times; prints min / median seconds per GiB. The
file cache is warm after the first pass (a training node reading from a network filesystem is slower: the hash
itself is the floor this measures).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="hashing threads (default min(8, cores))")
    args = ap.parse_args(argv)

    from bench.train_small import synthetic_output
    from reasonpipe.trainer.verify import verify_outputs

    seq = 4096
    windows = max(8, args.mib * 2**20 // (seq * 6))  # ~6 bytes per token (uint32 id + mask + segment)
    tmp = Path(tempfile.mkdtemp(prefix="verify_shards_"))
    try:
        root = synthetic_output(tmp / "data", 32768, seq, windows)
        index = json.loads((root / "index.json").read_text())
        outputs = [("bench", root, index)]
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeat):
            for sha in (False, True):
                problems, rep = verify_outputs(outputs, sha256=sha, threads=args.threads)
                assert not problems, problems
                times[sha].append(rep.seconds / (rep.bytes / 2**30))
        gib = rep.bytes / 2**30
        print(f"{rep.shards} shards, {gib:.2f} GiB; seconds per GiB (min / median of {args.repeat}):")
        for sha, label in ((False, "sizes + schema"), (True, "sizes + schema + sha256")):
            t = times[sha]
            print(f"  {label:24s} {min(t):.3f} / {statistics.median(t):.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
