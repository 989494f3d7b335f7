"""Training throughput of the real trainer loop (loader, forward/backward, optimizer, balancing, logging).

    .venv/bin/python bench/train_small.py --preset tiny --steps 10 --seq-len 256 --micro-batch 4     # CPU, seconds
    .venv/bin/python bench/train_small.py --preset small --steps 50 --seq-len 4096 --micro-batch 8  # one GPU
    torchrun --nproc_per_node=8 bench/train_small.py --preset small --steps 50 --parallel fsdp      # a node

Runs `trainer.train` on `--data OUTPUT` or, without it, on synthetic shards (Zipf-distributed random tokens in
documents of random length, written to a temporary folder with tokenizer.shards.ShardWriter). Prints the median
tokens/s and MFU over the steps after `--warmup`, peak memory and the last loss. MFU uses trainer.metrics'
flops_per_token (6 x active matmul params + causal attention) and the device's peak bf16 FLOP/s
(H100/H200 989, MI300X/MI325X 1307 TFLOP/s; set REASONPIPE_PEAK_TFLOPS for other devices).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def synthetic_output(root: Path, vocab: int, seq_len: int, windows: int, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, models

    from reasonpipe.tokenizer.shards import ShardWriter, sha256_file

    rng = np.random.default_rng(seed)
    ids = np.minimum(rng.zipf(1.2, size=(windows, seq_len)), vocab - 1).astype(np.uint32)
    offsets = [np.unique(np.concatenate([[0], rng.integers(1, seq_len, size=rng.integers(0, 4))])) for _ in ids]
    seg = np.full((windows, seq_len), 1, np.uint8)
    cols = {"input_ids": ids, "loss_mask": np.ones_like(seg), "segment": seg, "doc_offsets": offsets,
            "sample_ids": [[f"syn:{i}:{j}" for j in range(len(o))] for i, o in enumerate(offsets)]}  # fmt: skip
    with ShardWriter(root / "shards/{k:05d}.arrow", seq_len, rows_per_shard=max(1, windows // 4)) as w:
        w.write_batch(cols)
    shards = [{**s.to_dict(), "path": str(Path(s.path).relative_to(root)), "split": "train"} for s in w.stats]
    # a word-level tokenizer over the synthetic ids (t0 = bos, t1 = eos, t2 = pad), so the run folder records one
    Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0")).save(str(root / "tokenizer.json"))
    tokenizer = {"path": "tokenizer.json", "sha256": sha256_file(root / "tokenizer.json"), "vocab_size": vocab,
                 "special_ids": {"bos": 0, "eos": 1, "pad": 2}}  # fmt: skip
    index = {"format_version": 1, "name": "synthetic", "seq_len": seq_len, "compression": None,
             "tokenizer": tokenizer, "shards": shards}  # fmt: skip
    (root / "index.json").write_text(json.dumps(index, sort_keys=True))
    return root


def loader_tokens_per_s(data: str, seq_len: int, global_batch: int, seconds: float = 2.0) -> float:
    """Tokens/s of the shard loader alone (order, memory-mapped reads, collation) building the same global batches."""
    from reasonpipe.trainer.loader import ShardLoader, Source

    loader = ShardLoader([Source.open(data)], seq_len, global_batch, global_batch, seed=1)
    loader.next_global_batch()  # open the shards
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += sum(b.num_tokens for b in loader.next_global_batch())
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--data", help="reasonpipe OUTPUT folder (default: synthetic shards)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5, help="steps excluded from the medians")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--accum", type=int, default=1, help="micro-batches per rank per optimizer step")
    ap.add_argument("--vocab", type=int, default=32768, help="vocab of the synthetic shards")
    ap.add_argument("--optimizer", choices=["adamw", "muon"], default="adamw")
    ap.add_argument("--parallel", choices=["ddp", "fsdp"], default="ddp")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--activation-checkpointing", action="store_true")
    ap.add_argument("--doc-causal", action="store_true", help="document-causal attention (dense mask)")
    ap.add_argument("--out", help="run directory (default: a temporary one)")
    args = ap.parse_args(argv)

    from reasonpipe.trainer import train as T

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    tmp = Path(tempfile.mkdtemp(prefix="train_small_")) if args.out is None else Path(args.out)
    data = args.data
    if data is None:
        data = str(tmp / "data")
        windows = max(64, world * args.micro_batch * args.accum * (args.steps + 1))
        if rank == 0 and not (tmp / "data/index.json").exists():
            synthetic_output(tmp / "data", args.vocab, args.seq_len, windows)
        if world > 1:  # the other ranks wait for rank 0's shards
            while not (tmp / "data/index.json").exists():
                time.sleep(0.5)
    model = {"preset": args.preset, "activation_checkpointing": args.activation_checkpointing}
    if args.doc_causal:
        model["doc_causal"] = True
    cfg = {
        "model": model,
        "train": {
            "steps": args.steps,
            "seq_len": args.seq_len,
            "micro_batch": args.micro_batch,
            "global_batch_tokens": args.seq_len * args.micro_batch * args.accum * world,
            "optimizer": {"name": args.optimizer, "lr": 1e-3},
            "schedule": {"kind": "constant", "warmup_steps": 0},
            "parallel": args.parallel,
            "compile": args.compile,
            "log_every": 1,
            "checkpoint_every": 10**9,
            "keep_checkpoints": 1,
        },
    }
    cfg_path = tmp / f"bench_config_{rank}.json"
    cfg_path.write_text(json.dumps(cfg))
    run_dir = tmp / "run"
    code = T.main(["--data", data, "--config", str(cfg_path), "--out", str(run_dir)])
    if code or rank:
        sys.exit(code)
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if "tokens_per_s" in r and r["step"] > args.warmup] or [r for r in recs if "loss" in r]
    tps = statistics.median(r["tokens_per_s"] for r in steps)
    mfu = [r["mfu"] for r in steps if r.get("mfu") is not None]
    mem = {k: v for k, v in steps[-1].items() if k.startswith("mem_")}
    start = recs[0]
    print(f"\n== bench/train_small: preset {args.preset}, {start['params'] / 1e6:.1f}M params, world {world}, "
          f"seq {args.seq_len}, micro-batch {args.micro_batch} x accum {args.accum}, {args.optimizer}, "
          f"compile {args.compile}, backend {start['backend']}")  # fmt: skip
    print(f"tokens/s (median after {args.warmup} warmup steps): {tps:,.0f}  (per rank {tps / world:,.0f})")
    print(f"MFU: {statistics.median(mfu):.1%}" if mfu else "MFU: n/a (unknown peak FLOP/s for this device)")
    print(
        f"flops/token: {start['flops_per_token'] / 1e9:.3f} GFLOP | memory: "
        + ", ".join(f"{k} {v:.2f}" for k, v in mem.items())
    )
    print(f"loss: first {steps[0]['loss']:.4f} -> last {steps[-1]['loss']:.4f}")
    load_tps = loader_tokens_per_s(data, args.seq_len, args.micro_batch * args.accum * world)
    print(f"loader: {load_tps:,.0f} tokens/s on one process = {load_tps / tps:,.1f}x the trainer's consumption")
    if args.out is None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
