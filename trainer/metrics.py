"""Training logs: `RUN_DIR/metrics.jsonl` (one JSON object per record) and the console (rich on a TTY, plain lines
otherwise); model FLOPs per token and MFU.

FLOPs per trained token (the formula behind MFU):
    6 * N_active + 6 * L * H * (d_qk + d_v) * S / 2
N_active = matmul weights one token meets: every 2-D weight except the embedding table, one expert's share of the
3-D expert tensors (top-1), plus the LM head (vocab x d, tied or not); the second term is causal attention
(QK^T and AV over S/2 keys on average, forward + backward), H query heads of d_qk = d_v = head_dim, L layers.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reasonpipe.trainer.balancing import balance_metrics

# Dense bf16 peak TFLOP/s (no sparsity) by device-name substring; unknown devices get MFU null.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "MI300X": 1307.0, "MI325X": 1307.0}


def peak_flops(device: torch.device) -> float | None:
    """Peak bf16 FLOP/s of the device (env REASONPIPE_PEAK_TFLOPS overrides), None when unknown or CPU."""
    if os.environ.get("REASONPIPE_PEAK_TFLOPS"):
        return float(os.environ["REASONPIPE_PEAK_TFLOPS"]) * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).upper()
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def active_matmul_params(model: nn.Module) -> int:
    cfg = model.cfg
    n = 0
    for name, p in model.named_parameters():
        if name.startswith(("embed_tokens", "lm_head")) or p.ndim < 2:
            continue
        if "conv" in name.split(".")[-1]:
            n += p.numel()  # grouped conv: one MAC per weight per token
        elif p.ndim == 3:
            n += p.numel() // cfg.num_experts  # one expert per token (top-1)
        else:
            n += p.numel()
    return n + cfg.vocab_size * cfg.hidden_size


def flops_per_token(model: nn.Module, seq_len: int) -> float:
    cfg = model.cfg
    attn = 6 * cfg.num_layers * cfg.num_attention_heads * (2 * cfg.head_dim) * seq_len / 2
    return 6 * active_matmul_params(model) + attn


def memory_gib(device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        return {
            "mem_alloc_gib": torch.cuda.max_memory_allocated(device) / 2**30,
            "mem_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30,
        }
    return {"mem_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def balance_summary(per_layer: list[dict[str, float]]) -> dict[str, float]:
    """Mean and max over layers of each per-layer balance metric (keys balance/<name>_mean, balance/<name>_max)."""
    out: dict[str, float] = {}
    if not per_layer:
        return out
    for key in per_layer[0]:
        vals = [float(m[key]) for m in per_layer]
        out[f"balance/{key}_mean"] = sum(vals) / len(vals)
        out[f"balance/{key}_max"] = max(vals)
    return out


class MetricsLog:
    """Appends records to metrics.jsonl and prints a one-line summary; a no-op on ranks other than 0."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.console = None
        if enabled and sys.stdout.isatty():
            from rich.console import Console

            self.console = Console()

    def truncate(self, step: int) -> None:
        """Keep only the records of steps <= step (a fresh run: none)."""
        if not self.enabled or not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines() if step and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in keep))

    def record(self, rec: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(rec, allow_nan=True) + "\n")
        self.print(self.summary(rec))

    def print(self, text: str) -> None:
        if not self.enabled:
            return
        if self.console is not None:
            self.console.print(text, highlight=False)
        else:
            print(text, flush=True)

    @staticmethod
    def summary(rec: dict[str, Any]) -> str:
        def fmt(key: str, spec: str, label: str | None = None) -> str | None:
            v = rec.get(key)
            if v is None:
                return None
            return f"{label or key} {format(v, spec)}"

        parts = [f"step {rec.get('step')}"]
        for key, spec, label in (
            ("loss", ".4f", None),
            ("eval_loss", ".4f", "eval"),
            ("loss_answer", ".3f", "ans"),
            ("loss_reasoning", ".3f", "rsn"),
            ("lr", ".2e", None),
            ("grad_norm", ".3f", "gnorm"),
            ("tokens_per_s", ",.0f", "tok/s"),
            ("mfu", ".1%", "mfu"),
            ("balance/max_violation_max", ".2f", "maxvio"),
        ):
            s = fmt(key, spec, label)
            if s:
                parts.append(s)
        if rec.get("event"):
            parts.insert(1, str(rec["event"]))
        return " | ".join(parts)


class RouterProbe:
    """Forward hooks on the router MLPs: mean normalised entropy of the router softmax per layer, on the training
    forwards of steps that get logged (`active`); sums stay on the device (no host sync inside the forward)."""

    def __init__(self, model: nn.Module) -> None:  # a ZayaLM
        self.routers = model.routers()
        self.active = False
        self.sums: list[torch.Tensor | float] = [0.0] * len(self.routers)
        self.count = [0] * len(self.routers)
        self.handles = [r.router_mlp.register_forward_hook(self._hook(i)) for i, r in enumerate(self.routers)]

    def _hook(self, i: int) -> Any:
        def hook(_m: nn.Module, _inp: Any, logits: torch.Tensor) -> None:
            if not (self.active and torch.is_grad_enabled()):
                return
            with torch.no_grad():
                p = torch.softmax(logits.float(), -1)
                ent = -(p * p.clamp_min(1e-30).log()).sum(-1) / math.log(p.shape[-1])
                self.sums[i] = self.sums[i] + ent.sum().double()
                self.count[i] += ent.numel()

        return hook

    def per_layer(self, counts: torch.Tensor) -> list[dict[str, float]]:
        """Balance metrics of each layer for the logged step; resets the entropy sums."""
        ent = [float(s) / max(n, 1) for s, n in zip(self.sums, self.count)]
        rows = []
        for i, r in enumerate(self.routers):
            m = balance_metrics(counts[i])
            b = r.balancing_biases[: r.num_experts].detach().float().cpu()
            rows.append({
                "max_violation": m["max_violation"], "cv": m["cv"], "entropy": m["entropy"],
                "dead_experts": m["dead_experts"], "router_entropy": ent[i],
                "bias_mean": b.mean().item(), "bias_std": b.std(unbiased=False).item(), "bias_max": b.max().item(),
            })  # fmt: skip
        self.sums = [0.0] * len(self.routers)
        self.count = [0] * len(self.routers)
        return rows
