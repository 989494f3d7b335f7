"""Long-context memory and time: one forward + backward of the `tiny` preset, doc_causal + doc_reset on, one window
of ~20 packed documents, dense-mask reference ("sdpa") vs the flex path, at 4K / 16K / 32K tokens.

    .venv/bin/python bench/long_context.py                          # 4K, 16K, 32K; dense up to 16K
    .venv/bin/python bench/long_context.py --seq 4096 16384 32768 --dense-max 32768

Each (seq_len, backend) runs in a fresh subprocess (so peak RSS is its own), one after the other in interleaved
order, on CPU with one intra-op thread. A run builds the model and the window, records its resident memory, runs
one untimed warm-up step at 1K tokens, then the measured step: peak RSS (ru_maxrss) minus the RSS before it is the
step's memory; its time is process CPU time (one thread). Both sides do the same model work and differ only in
attention: the dense side builds the [S, S] bool mask (and its intermediates) and runs SDPA over all S x S pairs;
flex keeps only the 128 x 128 tiles that hold a same-document pair (CPU: slabs of 512 queries through SDPA,
recomputed in backward).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def doc_lengths(s: int, n_docs: int, seed: int) -> list[int]:
    """n_docs random document lengths summing to s (each >= 1)."""
    g = torch.Generator().manual_seed(seed)
    cuts = torch.randperm(s - 1, generator=g)[: n_docs - 1].add(1).sort().values.tolist()
    bounds = [0, *cuts, s]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def worker(seq: int, backend: str, docs: int) -> dict[str, float]:
    from reasonpipe.trainer.config import preset
    from reasonpipe.trainer.model import ZayaLM

    torch.manual_seed(0)
    cfg = preset("tiny", seq_len=seq, attention_backend=backend).from_scratch()
    model = ZayaLM(cfg).train()

    def step(s: int) -> None:
        lengths = doc_lengths(s, docs, seed=s)
        doc = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))[None]
        pos = torch.cat([torch.arange(n) for n in lengths])[None]
        ids = torch.randint(0, cfg.vocab_size, (1, s))
        labels = torch.cat([ids[:, 1:], torch.full((1, 1), -100)], 1)
        model(ids, position_ids=pos, doc_ids=doc, labels=labels).loss.backward()
        model.zero_grad(set_to_none=True)

    step(1024)  # warm-up
    base = rss_bytes()
    t0 = time.process_time()  # one thread: the step's work, not the machine's load
    step(seq)
    secs = time.process_time() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": secs, "step_gib": (peak - base) / 2**30, "peak_gib": peak / 2**30}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq", type=int, nargs="+", default=[4096, 16384, 32768])
    ap.add_argument("--docs", type=int, default=20)
    ap.add_argument("--dense-max", type=int, default=16384, help="largest seq_len for the dense reference")
    ap.add_argument("--worker", nargs=2, metavar=("SEQ", "BACKEND"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.worker:
        print(json.dumps(worker(int(args.worker[0]), args.worker[1], args.docs)))
        return

    rows = []
    for seq in args.seq:
        for backend in ("sdpa", "flex"):
            if backend == "sdpa" and seq > args.dense_max:
                rows.append((seq, backend, None))
                continue
            cmd = [sys.executable, __file__, "--worker", str(seq), backend, "--docs", str(args.docs)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                rows.append((seq, backend, None))
                continue
            rows.append((seq, backend, json.loads(out.stdout.strip().splitlines()[-1])))
            print(f"  {seq:>6} {backend:<5} {rows[-1][2]}", file=sys.stderr, flush=True)

    print(f"tiny preset, 1 window, {args.docs} documents, doc_causal + doc_reset, forward + backward, CPU, 1 thread\n")
    print("| seq_len | backend | step CPU s | step memory GiB | step memory / token KiB | peak RSS GiB |")
    print("|---|---|---|---|---|---|")
    for seq, backend, r in rows:
        if r is None:
            print(f"| {seq:,} | {backend} | not run | | | |")
        else:
            kib = r["step_gib"] * 2**20 / seq
            cells = f"{r['seconds']:.1f} | {r['step_gib']:.2f} | {kib:.1f} | {r['peak_gib']:.2f}"
            print(f"| {seq:,} | {backend} | {cells} |")


if __name__ == "__main__":
    main()
