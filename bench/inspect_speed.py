"""Speed of `reasonpipe inspect` on ~1 GB of shards (target: default view < 10 s on 2 cores).

Generates a benchmark-scale OUTPUT in a temp dir with the project's own writer (`PackedOutput`: best-fit packing,
shards, samples/; `finalize_output`: the output folder and index.json), fed random token ids in the chat template
(prompt, reasoning, answer: chat samples atomic, some trimmed) and plain documents, seq_len 4096: tokenising ~1 GB of
text would take minutes, and inspect reads tokens, not text. Then times, as subprocesses (imports included), the
default view and --validate, next to two baselines measured in the same run: reading every shard byte once, and
sha256 of every shard byte (what --validate must do at least). Page cache is warm (the files were just written):
figures are for a hot cache.

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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reasonpipe.segments import SEG_ANSWER, SEG_PROMPT, SEG_REASONING, SEG_TEMPLATE, SEG_TEXT, Segment  # noqa: E402
from reasonpipe.tokenizer.index import finalize_output  # noqa: E402
from reasonpipe.tokenizer.vocab import resolve_template, save_tokenizer, train_tokenizer  # noqa: E402
from reasonpipe.tokenizer.writer import PackedOutput  # noqa: E402

WORDS = "the of a to is in we that let so number sum prime proof step check then therefore answer equation".split()


def synthetic_output(out: Path, target_bytes: int, seq_len: int = 4096, tasks: int = 2, seed: int = 0) -> None:
    """~target_bytes of shards written by PackedOutput (one per task) and assembled by finalize_output."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, 50)) for _ in range(200)]
    tok = train_tokenizer(texts, 600)
    tok_path = save_tokenizer(tok, out / "work" / "tokenizer.json")
    sp, vocab = resolve_template(tok), tok.get_vocab_size()
    ids = lambda n: rng.integers(9, vocab, n, dtype=np.uint32)  # noqa: E731 - random non-special ids
    t = lambda *x: Segment(SEG_TEMPLATE, np.array(x, np.uint32))  # noqa: E731
    per_task = target_bytes // tasks // (seq_len * 6)  # a window is ~6 bytes per token (ids, mask, segment)
    for rank in range(tasks):
        packed = PackedOutput(out / "work" / "pack", rank, seq_len, sp, validation_fraction=0.02, seed=seed,
                              rows_per_shard=2048)  # fmt: skip
        tokens, i = 0, 0
        while tokens < per_task * seq_len * 0.98:  # packing leaves a few pads
            sid = f"gen/part-{rank}.jsonl:{i}"
            if i % 3 == 2:  # plain text: splittable
                segs = [t(sp.bos), Segment(SEG_TEXT, ids(int(rng.integers(200, 3000)))), t(sp.eos)]
                packed.add(sid, segs, "text", "fineweb", "web")
            else:  # chat: atomic, the reasoning cut to fit the window as AP trimming does
                p, r, a = (int(x) for x in rng.integers([20, 50, 5], [400, 6000, 200]))
                keep = min(r, seq_len - p - a - 8)
                segs = [t(sp.bos, sp.user), Segment(SEG_PROMPT, ids(p)), t(sp.end_turn, sp.assistant, sp.think_open),
                        Segment(SEG_REASONING, ids(keep)), t(sp.think_close), Segment(SEG_ANSWER, ids(a)),
                        t(sp.end_turn, sp.eos)]  # fmt: skip
                n = sum(len(s.ids) for s in segs)
                trim = {"status": "trimmed" if keep < r else "fit", "tokens_before": n + r - keep, "tokens_after": n,
                        "reasoning_before": r, "reasoning_kept": keep, "dropped_thinks": 0}  # fmt: skip
                packed.add(sid, segs, "chat", ["openthoughts", "numina"][i % 2], ["reasoning", "math"][i % 2], trim)
            tokens += sum(len(s.ids) for s in segs)
            i += 1
        packed.close()
    stages = [{"label": "read", "stage": "read", "read": i, "kept": i, "rejected": {}, "duplicates": 0, "extra": {}}]
    extra = {"name": "bench", "trim": {"context": seq_len, "policy": "tail"}, "stages": stages}
    finalize_output(out / "work" / "pack", out, tok_path, extra)


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
        synthetic_output(out, target_bytes=int(args.gb * (1 << 30)))
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
