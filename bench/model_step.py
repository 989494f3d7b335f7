"""Forward + backward time per training step: our ZayaLM vs transformers' ZayaForCausalLM, same config, weights, batch.

    .venv/bin/python bench/model_step.py                                  # CPU, small shape, < 1 min
    .venv/bin/python bench/model_step.py --shape matmul                   # CPU, d 512, seq 1024: matmul-bound
    .venv/bin/python bench/model_step.py --device cuda --preset small     # GPU: adds tokens/s, MFU, peak memory
    .venv/bin/python bench/model_step.py --device cuda --preset zaya1-8b --layers 4 --batch 2 --seq 4096 --compile

One step = loss on a [batch, seq] batch of random ids + backward (grads zeroed between steps); we report the median of
`--steps` timed steps after `--warmup`. Ours runs its training path (labels -> chunked linear + cross-entropy,
fp32 master weights; on GPU under bf16 autocast). What differs in work: the reference materialises the full
[batch, seq, vocab] logits (upcast to fp32) and then the loss; ours never holds them (each chunk's logits are
recomputed in backward: one extra head matmul forward). The row "ours, full logits" takes the reference's route
(logits, then F.cross_entropy) so the pair compares equal work. The reference runs with attn_implementation="sdpa"
and each experts implementation of transformers' `ExpertsInterface` ("eager": a Python loop over the experts hit,
"batched_mm": per-token gathered weights, far slower here, opt-in; "grouped_mm": torch._grouped_mm, its fastest);
on GPU the reference holds bf16 weights (its native fast path) and fp32 matmuls may use TF32. Both models carry the
same weights, so routing (and expert load) is identical. Steps are timed round-robin across implementations; on CPU
with one intra-op thread by default (--threads), since thread contention on a shared box swamps the comparison, and
in process CPU time (the work done; wall time on a loaded machine mostly measures the other processes).

MFU = flops_per_token * tokens_per_s / peak, with (per token, forward + backward = 3 x forward)
    flops_per_token = 6 * N_mm + 6 * L * n_q * head_dim * S
    N_mm = matmul weights one token touches: fused q/k/v projection, grouped conv taps, o_proj,
           router down/fc1/fc2/out, ONE expert (top-1: fc1 + fc2), LM head (V * d);
           norms, scales, depthwise conv and biases are not counted.
    attention: QK^T and AV are 2 * 2 * n_q * head_dim * S FLOPs per token per layer forward; causal halves that.
peak: dense bf16 of the detected GPU (H100/H200 989, A100 312, MI300X 1307 TFLOP/s) or --peak-tflops.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from reasonpipe.trainer.balancing import balance_metrics
from reasonpipe.trainer.config import ModelConfig, preset
from reasonpipe.trainer.hf_interop import rename_to_hf
from reasonpipe.trainer.model import ZayaLM

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "MI300X": 1307.0, "MI300": 1307.0}


def cpu_config(shape: str) -> ModelConfig:
    if shape == "matmul":  # wide enough that matmuls, not per-op overhead, dominate on a CPU
        return preset("tiny", vocab_size=8192, hidden_size=512, num_layers=2, num_attention_heads=8,
                      num_key_value_heads=2, head_dim=64, num_experts=8, moe_intermediate_size=512,
                      router_hidden_size=128, ce_chunk_tokens=1024)  # fmt: skip
    return preset("tiny", vocab_size=4096, hidden_size=128, num_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, num_experts=8, moe_intermediate_size=128,
                  router_hidden_size=64, ce_chunk_tokens=512)  # fmt: skip


def matmul_params_per_token(cfg: ModelConfig) -> int:
    d, r, hd = cfg.hidden_size, cfg.router_hidden_size, cfg.head_dim
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    attn = (q + 2 * kv) * d + (q + kv) * hd * cfg.cca_time1 + q * d
    router = d * r + 2 * r * r + r * cfg.num_router_classes
    expert = 3 * cfg.moe_intermediate_size * d
    return cfg.num_layers * (attn + router + expert) + cfg.vocab_size * d


def flops_per_token(cfg: ModelConfig, seq: int) -> float:
    return 6.0 * matmul_params_per_token(cfg) + 6.0 * cfg.num_layers * cfg.num_attention_heads * cfg.head_dim * seq


def peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tf in PEAK_TFLOPS.items():
        if key in name:
            return tf * 1e12
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(
    steps_by_name: dict[str, Callable[[], None]], device: torch.device, warmup: int, steps: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per step of each implementation, timed round-robin (one step of each per round) so that
    load changes on a shared machine hit all of them alike; plus each one's peak extra GPU memory (GiB)."""
    times: dict[str, list[float]] = {name: [] for name in steps_by_name}
    mem: dict[str, float] = {}
    clock = time.perf_counter if device.type == "cuda" else time.process_time  # CPU: one thread's work, not load
    for rnd in range(warmup + steps):
        for name, step in steps_by_name.items():
            if not times[name] and rnd > 0 and name not in mem:
                continue  # failed (OOM) in an earlier round
            sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            t0 = clock()
            try:
                step()
                sync(device)
            except torch.OutOfMemoryError:
                times[name] = []
                mem.pop(name, None)
                torch.cuda.empty_cache()
                continue
            dt = clock() - t0
            if device.type == "cuda":
                mem[name] = max(mem.get(name, 0.0), (torch.cuda.max_memory_allocated() - base) / 2**30)
            else:
                mem[name] = 0.0
            if rnd >= warmup:
                times[name].append(dt)
    return {n: statistics.median(t) if t else float("nan") for n, t in times.items()}, mem


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default=None, help="tiny | small | zaya1-8b (default: a CPU shape, see --shape)")
    ap.add_argument(
        "--shape",
        choices=["default", "matmul"],
        default="default",
        help="CPU shape without --preset: d 128 seq 128 (overhead-bound) or d 512 seq 1024 (matmul-bound)",
    )
    ap.add_argument("--layers", type=int, default=None, help="override num_layers (e.g. ZAYA1 width, fewer blocks)")
    ap.add_argument("--vocab", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--seq", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="torch.compile each of our blocks")
    ap.add_argument("--ckpt", action="store_true", help="activation checkpointing in ours")
    ap.add_argument("--bf16-head", action="store_true", help="LM head + CE under autocast instead of fp32")
    ap.add_argument("--hf-experts", default=None, help="comma list of reference experts implementations")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (CPU mode)")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    cfg = preset(args.preset) if args.preset else cpu_config(args.shape)
    over = {"num_layers": args.layers, "vocab_size": args.vocab}
    cfg = cfg.replace(**{k: v for k, v in over.items() if v is not None}, key_temp_init=1.0,
                      activation_checkpointing=args.ckpt, fp32_head=not args.bf16_head)  # fmt: skip
    batch = args.batch or (8 if gpu else 1 if args.shape == "matmul" else 2)
    seq = args.seq or (2048 if gpu else 1024 if args.shape == "matmul" else 128)
    steps = args.steps or (10 if gpu else 3)
    impls = (args.hf_experts or "eager,grouped_mm").split(",")
    if not gpu:
        torch.set_num_threads(args.threads)
    if gpu:  # TF32 for the fp32 LM head / cross-entropy (the trainer sets the same)
        torch.set_float32_matmul_precision("high")

    torch.manual_seed(0)
    ours = ZayaLM(cfg).to(device).train()
    if args.compile:
        for blk in ours.layers:
            blk.compile()
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)
    labels = torch.full_like(ids, -100)
    labels[:, :-1] = ids[:, 1:]
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=gpu)

    def our_step() -> None:
        with amp:
            out = ours(ids, labels=labels)
        out.loss.backward()
        ours.zero_grad(set_to_none=True)

    def our_step_full_logits() -> None:  # the reference's work: full logits, then the loss
        with amp:
            logits = ours(ids).logits
        F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100).backward()
        ours.zero_grad(set_to_none=True)

    with torch.no_grad(), amp:
        balance = balance_metrics(ours(ids[:, :256]).expert_counts)
    tag = ", compiled" if args.compile else ""
    steps_by_name = {f"ours (ZayaLM{tag})": our_step, f"ours, full logits (ZayaLM{tag})": our_step_full_logits}

    try:
        from transformers import ZayaConfig, ZayaForCausalLM
    except ImportError:  # transformers without models.zaya
        impls = []
    hf_state = rename_to_hf(ours.state_dict(), ours.cfg)
    for impl in impls:
        ref = ZayaForCausalLM._from_config(ZayaConfig(**cfg.to_hf_dict()), attn_implementation="sdpa",
                                           experts_implementation=impl,
                                           dtype=torch.bfloat16 if gpu else torch.float32)  # fmt: skip
        ref.load_state_dict(hf_state, strict=False)  # same weights -> same routing
        ref.to(device).train()

        def ref_step(ref: torch.nn.Module = ref) -> None:
            ref(ids, labels=ids).loss.backward()
            ref.zero_grad(set_to_none=True)

        steps_by_name[f"transformers sdpa + experts={impl}" + (" (bf16 weights)" if gpu else "")] = ref_step
    del hf_state
    secs, mem = time_interleaved(steps_by_name, device, args.warmup, steps)
    results = list(secs.items())

    tokens = batch * seq
    fpt = flops_per_token(cfg, seq)
    peak = peak_flops(device, args.peak_tflops)
    ours_s, full_s = results[0][1], results[1][1]
    print(f"device: {torch.cuda.get_device_name(device) if gpu else 'cpu'} | torch {torch.__version__} | "
          f"layers {cfg.num_layers}, d {cfg.hidden_size}, experts {cfg.num_experts}, vocab {cfg.vocab_size} | "
          f"batch {batch} x seq {seq} = {tokens} tokens | {fpt / 1e9:.2f} GFLOP/token | "
          f"router max-violation {balance['max_violation']:.2f}\n")  # fmt: skip
    head = "| implementation | ms / step | tokens / s | time / ours | time / ours, full logits |"
    head += " MFU | step peak GiB |" if gpu else ""
    print(head)
    print("|" + "---|" * head.count(" |"))
    for name, s in results:
        row = f"| {name} | {s * 1e3:.1f} | {tokens / s:,.0f} | {s / ours_s:.2f}x | {s / full_s:.2f}x |"
        if gpu:
            mfu = f"{fpt * tokens / s / peak * 100:.1f}%" if peak else "n/a"
            row += f" {mfu} | {mem.get(name, float('nan')):.1f} |"
        print(row)


if __name__ == "__main__":
    main()
