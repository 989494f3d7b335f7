"""The GPU suite (run by bench/gpu_suite.sh): every figure the trainer's GPU goals need, in one process.

    bash bench/gpu_suite.sh            # one H100 / H200 / MI300X, < 8 minutes
    bash bench/gpu_suite.sh --smoke    # CPU, tiny shapes, seconds: exercises every section (a test runs it)

Sections (each prints a markdown table; a section that fails prints why and the suite goes on):
1. step: forward + backward of the `small` preset at 4K, bf16 autocast: ours (eager and torch.compile'd blocks) vs
   transformers' ZayaForCausalLM (sdpa, experts=grouped_mm, bf16 weights), timed round-robin; ms/step, tokens/s,
   MFU (bench/model_step.py's formula and peak table), peak memory of the step.
2. attention: the model's `attention_backend` values side by side on document-causal windows (~8 documents each).
3. long: the `small` preset at 32K tokens (one window, ~20 documents, doc_causal, backend auto): peak memory, time.
4. experts: the expert compute's share of the step, L x (fwd + bwd of one layer's Experts on the step's tokens,
   routed as the model routes them) / step time.
5. decoding: `trainer.generate` on the `small` preset (what `reasonpipe generate` / `eval` run), bf16 autocast,
   left-padded prompts of 256-512 tokens, 128 new tokens per row (no stop ids: every row makes them all), cached at
   batch 1, 16 and 64 and uncached (the whole sequence recomputed every step) at batch 16; new tokens/s, ms per
   decoding step, peak memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.model_step import flops_per_token, peak_flops, sync, time_interleaved  # noqa: E402
from reasonpipe.trainer.config import ModelConfig, preset  # noqa: E402
from reasonpipe.trainer.hf_interop import rename_to_hf  # noqa: E402
from reasonpipe.trainer.model import ZayaLM  # noqa: E402


@dataclasses.dataclass
class Shape:
    cfg: ModelConfig
    batch: int
    seq: int
    long_seq: int
    steps: int
    warmup: int
    decode_batches: tuple[int, ...]  # section 5: cached batch sizes (the uncached side runs the middle one)
    decode_prompt: int  # longest prompt
    decode_new: int  # new tokens per row


def shape(smoke: bool) -> Shape:
    if smoke:
        return Shape(preset("tiny", vocab_size=512), batch=1, seq=128, long_seq=512, steps=1, warmup=1,
                     decode_batches=(1, 4), decode_prompt=16, decode_new=4)  # fmt: skip
    return Shape(preset("small"), batch=4, seq=4096, long_seq=32768, steps=10, warmup=3,
                 decode_batches=(1, 16, 64), decode_prompt=512, decode_new=128)  # fmt: skip


def batch_for(cfg: ModelConfig, b: int, s: int, docs: int, device: torch.device, seed: int = 0) -> dict:
    """Random ids with `docs` documents per window (position ids restart, doc ids number them), shifted labels."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.vocab_size, (b, s), generator=g)
    starts = torch.sort(torch.randperm(s - 1, generator=g)[: docs - 1] + 1).values
    doc = torch.zeros(s, dtype=torch.long)
    doc[starts] = 1
    doc = doc.cumsum(0)
    first = torch.cat([torch.zeros(1, dtype=torch.long), starts])
    pos = torch.arange(s) - first[doc]
    labels = torch.full_like(ids, -100)
    labels[:, :-1] = ids[:, 1:]
    out = {"input_ids": ids, "labels": labels, "position_ids": pos.expand(b, s), "doc_ids": doc.expand(b, s)}
    return {k: v.to(device) for k, v in out.items()}


def step_fn(model: torch.nn.Module, inputs: dict, amp: bool) -> Callable[[], None]:
    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = model(**inputs)
        out.loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def table(rows: list[list[str]], head: list[str]) -> None:
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()


def section(title: str, fn: Callable[[], None]) -> None:
    print(f"### {title}\n")
    t0 = time.perf_counter()
    try:
        fn()
    except Exception as e:  # a missing backend or an OOM must not hide the other sections
        print(f"section failed: {type(e).__name__}: {e}\n")
        traceback.print_exc(limit=2, file=sys.stdout)
    print(f"({time.perf_counter() - t0:.0f}s)\n")


REF = "transformers (sdpa, experts=grouped_mm)"


def gib(value: float | None, gpu: bool) -> str:
    return f"{value:.2f}" if gpu and value is not None else "n/a"


def run_step_section(sh: Shape, device: torch.device, compile_: bool) -> float:
    """Section 1; returns our eager step time (for the expert share)."""
    gpu = device.type == "cuda"
    cfg = sh.cfg
    torch.manual_seed(0)
    ours = ZayaLM(cfg).to(device).train()
    inputs = {k: v for k, v in batch_for(cfg, sh.batch, sh.seq, 1, device).items() if k in ("input_ids", "labels")}
    steps = {"ours (eager)": step_fn(ours, inputs, gpu)}
    if compile_:
        comp = ZayaLM(cfg).to(device).train()
        comp.load_state_dict(ours.state_dict())
        for blk in comp.layers:
            blk.compile()
        steps["ours (compiled blocks)"] = step_fn(comp, inputs, gpu)
    try:
        from transformers import ZayaConfig, ZayaForCausalLM

        ref = ZayaForCausalLM._from_config(ZayaConfig(**cfg.to_hf_dict()), attn_implementation="sdpa",
                                           experts_implementation="grouped_mm",
                                           dtype=torch.bfloat16 if gpu else torch.float32)  # fmt: skip
        ref.load_state_dict(rename_to_hf(ours.state_dict(), cfg), strict=False)
        ref.to(device).train()
        ref_inputs = {"input_ids": inputs["input_ids"], "labels": inputs["input_ids"]}
        steps[REF] = step_fn(ref, ref_inputs, False)
    except ImportError as e:
        print(f"transformers' ZayaForCausalLM unavailable ({e}): reference skipped\n")
    secs, mem = time_interleaved(steps, device, sh.warmup, sh.steps)
    tokens = sh.batch * sh.seq
    fpt, peak = flops_per_token(cfg, sh.seq), peak_flops(device, None)
    base = secs.get(REF)
    rows = []
    for name, s in secs.items():
        mfu = f"{fpt * tokens / s / peak:.1%}" if peak else "n/a"
        speed = f"{base / s:.2f}x" if base else "n/a"
        rows.append([name, f"{s * 1e3:.1f}", f"{tokens / s:,.0f}", mfu, gib(mem.get(name), gpu), speed])
    print(f"`{'tiny' if cfg.hidden_size < 128 else 'small'}` preset, batch {sh.batch} x {sh.seq} tokens, "
          f"{fpt / 1e9:.3f} GFLOP/token, " + ("ours bf16 autocast, reference bf16 weights" if gpu else "fp32 (smoke)")
          + "\n")  # fmt: skip
    table(rows, ["implementation", "ms / step", "tokens / s", "MFU", "step peak GiB", "speed vs transformers"])
    return secs["ours (eager)"]


def backends() -> list[str]:
    field = {f.name: f for f in dataclasses.fields(ModelConfig)}.get("attention_backend")
    if field is None:
        return []
    return ["sdpa", "flex", "flash"]


def run_attention_section(sh: Shape, device: torch.device) -> None:
    names = backends()
    if not names:
        print("ModelConfig has no `attention_backend` field in this build: only the dense sdpa path exists\n")
        names = [None]
    gpu = device.type == "cuda"
    inputs = batch_for(sh.cfg, sh.batch, sh.seq, 8, device)
    steps = {}
    for name in names:
        over = {"doc_causal": True, "doc_reset": True} | ({"attention_backend": name} if name else {})
        try:
            model = ZayaLM(sh.cfg.replace(**over)).to(device).train()
            step_fn(model, inputs, gpu)()  # fails here when the backend is not installed
            steps[name or "sdpa (dense mask)"] = step_fn(model, inputs, gpu)
        except Exception as e:
            print(f"backend {name}: unavailable ({type(e).__name__}: {str(e)[:120]})\n")
    secs, mem = time_interleaved(steps, device, sh.warmup, sh.steps)
    tokens = sh.batch * sh.seq
    rows = [[n, f"{s * 1e3:.1f}", f"{tokens / s:,.0f}", gib(mem.get(n), gpu)] for n, s in secs.items()]
    print(f"doc_causal windows: batch {sh.batch} x {sh.seq} tokens, 8 documents per window\n")
    table(rows, ["attention_backend", "ms / step", "tokens / s", "step peak GiB"])


def run_long_section(sh: Shape, device: torch.device) -> None:
    gpu = device.type == "cuda"
    over = {"doc_causal": True, "doc_reset": True, "seq_len": sh.long_seq}
    if backends():
        over["attention_backend"] = "auto"
    model = ZayaLM(sh.cfg.replace(**over)).to(device).train()
    inputs = batch_for(model.cfg, 1, sh.long_seq, 20, device)
    step = step_fn(model, inputs, gpu)
    step()
    sync(device)
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(sh.steps):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    peak = torch.cuda.max_memory_allocated() / 2**30 if gpu else None
    table([[f"{sh.long_seq:,}", f"{s * 1e3:.0f}", f"{sh.long_seq / s:,.0f}", gib(peak, gpu)]],
          ["tokens (1 window, 20 docs)", "ms / step", "tokens / s", "peak GiB (weights + grads + step)"])  # fmt: skip


def run_experts_section(sh: Shape, device: torch.device, step_s: float) -> None:
    """L x (experts fwd + bwd on the step's tokens, routed by layer 0's router) / step time."""
    gpu = device.type == "cuda"
    model = ZayaLM(sh.cfg).to(device).train()
    n, d = sh.batch * sh.seq, sh.cfg.hidden_size
    x = torch.randn(n, d, device=device) * 0.5
    with torch.no_grad():
        gate, idx, _, _ = model.layers[0].mlp.gate(x, None)
    experts = model.layers[0].mlp.experts
    xg = x.clone().requires_grad_()

    def one() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=gpu):
            y = experts(xg, idx, gate)
        y.float().sum().backward()

    secs, _ = time_interleaved({"experts": one}, device, sh.warmup, sh.steps)
    share = sh.cfg.num_layers * secs["experts"] / step_s
    table([[f"{secs['experts'] * 1e3:.2f}", str(sh.cfg.num_layers), f"{step_s * 1e3:.1f}", f"{share:.1%}"]],
          ["one layer's experts fwd+bwd ms", "layers", "our step ms", "expert share of the step"])  # fmt: skip


def run_decoding_section(sh: Shape, device: torch.device) -> None:
    """Cached `generate` at each batch size and uncached at the middle one, timed round-robin."""
    from reasonpipe.trainer.generate import generate

    gpu = device.type == "cuda"
    torch.manual_seed(0)
    model = ZayaLM(sh.cfg).to(device).eval()
    g = torch.Generator().manual_seed(1)
    biggest = max(sh.decode_batches)
    lengths = torch.randint(sh.decode_prompt // 2, sh.decode_prompt + 1, (biggest,), generator=g).tolist()
    prompts = [torch.randint(3, sh.cfg.vocab_size, (n,), generator=g).tolist() for n in lengths]

    def run(batch: int, cached: bool) -> Callable[[], None]:
        def one() -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=gpu):
                generate(model, prompts[:batch], sh.decode_new, use_cache=cached)

        return one

    mid = sh.decode_batches[len(sh.decode_batches) // 2]
    sides = {(b, True): run(b, True) for b in sh.decode_batches} | {(mid, False): run(mid, False)}
    secs, mem = time_interleaved({f"{b}|{c}": fn for (b, c), fn in sides.items()}, device, sh.warmup, sh.steps)
    rows = []
    for b, cached in sides:
        name = f"{b}|{cached}"
        s = secs.get(name, float("nan"))
        if s != s:  # NaN: out of memory
            rows.append([str(b), "yes" if cached else "no", "OOM", "", "", ""])
            continue
        rows.append([str(b), "yes" if cached else "no", f"{s:.2f}", f"{b * sh.decode_new / s:,.0f}",
                     f"{s / sh.decode_new * 1e3:.1f}", gib(mem.get(name), gpu)])  # fmt: skip
    uncached, cached = (secs.get(f"{mid}|{c}", float("nan")) for c in (False, True))
    if uncached == uncached and cached == cached:  # neither ran out of memory
        print(f"cached vs uncached at batch {mid}: **{uncached / cached:.1f}x**\n")
    print(f"`{'tiny' if sh.cfg.hidden_size < 128 else 'small'}` preset, prompts {sh.decode_prompt // 2}-"
          f"{sh.decode_prompt} tokens (left-padded), {sh.decode_new} new tokens per row, greedy, "
          + ("bf16 autocast" if gpu else "fp32 (smoke)") + "\n")  # fmt: skip
    table(rows, ["batch", "cache", "s per generate", "new tokens / s", "ms per decoding step", "peak GiB"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny shapes: exercise every section in seconds")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    args = ap.parse_args(argv)
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.smoke:
        print("no GPU: run with --smoke for the CPU exercise of this suite")
        return 2
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    else:
        torch.set_num_threads(1)
    sh = shape(args.smoke)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (smoke)"
    print(f"## reasonpipe GPU suite: {name}, torch {torch.__version__}\n")
    step_s: list[float] = []
    section("1. forward + backward: ours vs transformers",
            lambda: step_s.append(run_step_section(sh, device, not (args.smoke or args.no_compile))))  # fmt: skip
    section("2. attention backends (document-causal)", lambda: run_attention_section(sh, device))
    section(f"3. long context: {sh.long_seq:,} tokens", lambda: run_long_section(sh, device))
    if step_s:
        section("4. expert compute share", lambda: run_experts_section(sh, device, step_s[0]))
    section("5. decoding (generate, eval)", lambda: run_decoding_section(sh, device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
