"""Decoding speed on CPU: generate() with the DecodeCache vs recomputing the whole sequence every step, and the
cache's size per token against standard attention caches.

    .venv/bin/python bench/decode_speed.py --presets tiny                    # batch 4, prompts <= 128, 64 new
    .venv/bin/python bench/decode_speed.py --presets small --prompt 64 --new 16 --repeat 2

Both sides run the same `generate` (greedy, no stop ids, so every row makes exactly --new tokens) on the same random
prompts of --prompt tokens (left-padded to 4 lengths between prompt/2 and prompt), one intra-op thread, alternating
cached / uncached each repetition. The cached side prefills once then runs one token per row per step; the uncached
side re-runs the model over prompt + generated tokens at every step (what a model without a cache must do). Both
return the same tokens (checked). tokens/s counts generated tokens only and uses the process's CPU time (one
thread: the work done, steadier than wall time on a shared machine); wall seconds are shown too.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from reasonpipe.trainer.config import preset
from reasonpipe.trainer.decode_cache import cache_bytes_per_token
from reasonpipe.trainer.generate import generate
from reasonpipe.trainer.model import ZayaLM


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=["tiny"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    print(f"CPU, {args.threads} thread(s), batch {args.batch}, prompts of {args.prompt // 2}-{args.prompt} tokens "
          f"(left-padded), {args.new} new tokens per row, greedy; median of {args.repeat} (min)\n")  # fmt: skip
    print("| preset | cache | CPU s per generate | wall s | new tokens / CPU s | cached speed-up |")
    print("|---|---|---|---|---|---|")
    for name in args.presets:
        torch.manual_seed(0)
        model = ZayaLM(preset(name)).eval()
        g = torch.Generator().manual_seed(1)
        lengths = torch.linspace(args.prompt // 2, args.prompt, args.batch).long().tolist()
        prompts = [torch.randint(3, model.cfg.vocab_size, (n,), generator=g).tolist() for n in lengths]
        generate(model, prompts, 2)  # warm-up
        cpu: dict[bool, list[float]] = {True: [], False: []}
        wall: dict[bool, list[float]] = {True: [], False: []}
        outputs = {}
        for _ in range(args.repeat):
            for cached in (True, False):
                t0, c0 = time.perf_counter(), time.process_time()
                outputs[cached] = generate(model, prompts, args.new, use_cache=cached)
                cpu[cached].append(time.process_time() - c0)
                wall[cached].append(time.perf_counter() - t0)
        assert outputs[True] == outputs[False], "cached and uncached decoding disagree"
        med = {c: statistics.median(t) for c, t in cpu.items()}
        for cached in (True, False):
            tps = args.batch * args.new / med[cached]
            speed = f"{med[False] / med[True]:.1f}x" if cached else "1.0x"
            print(f"| {name} | {'yes' if cached else 'no'} | {med[cached]:.2f} ({min(cpu[cached]):.2f}) | "
                  f"{statistics.median(wall[cached]):.2f} | {tps:,.0f} | {speed} |")  # fmt: skip

    print("\nDecoding state per cached token (bf16), CCA vs caches without latent compression at the model width")
    print("\n| preset | CCA k/v per token | + per sequence (conv tails, value shift) | GQA | MHA | MHA / CCA |")
    print("|---|---|---|---|---|---|")
    for name in ["tiny", "small", "zaya1-8b"]:
        b = cache_bytes_per_token(preset(name))
        print(f"| {name} | {b['cca_per_token']:,} B | {b['cca_per_sequence']:,} B | {b['gqa_per_token']:,} B | "
              f"{b['mha_per_token']:,} B | {b['mha_per_token'] / b['cca_per_token']:.0f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
