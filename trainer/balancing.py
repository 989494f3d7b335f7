"""Aux-loss-free expert balancing of the ZAYA1 router, as pure in-place updates of fp32 bias buffers.

Per MoE layer, once per optimizer step, with `counts` = tokens routed per expert over the GLOBAL batch (summed over
micro-batches and all-reduced over ranks by the caller):
  p_e = counts_e / sum(counts), g_e = p_e - 1/E
  "pid":  AdamW step on the bias with g as its gradient (weight decay 0): overloaded experts get a lower bias
  "sign": DeepSeek-V3 aux-loss-free, b_e += lr * sign(1/E - p_e)
  "off":  nothing.
The extra "skip" router class (index E, when present) is excluded and kept frozen at -1. Each update is re-centred
(its mean over the experts removed): g sums to zero but AdamW's per-expert normalisation and sign() do not, and an
uncentred update would drift every expert bias up or down against the fixed skip bias (changing how often the skip
class wins). Re-centring keeps the experts' mean bias where it started and changes no expert-vs-expert decision.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch

Mode = Literal["pid", "sign", "off"]
SKIP_BIAS = -1.0


@torch.no_grad()
def update_bias(
    bias: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    counts: torch.Tensor,
    mode: Mode = "pid",
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> None:
    """Update one layer's balancing bias [C] (C = E, or E + 1 with the skip class) in place.

    counts: [E] tokens per routed expert (skip class not included); step: 1-based update count
    (Adam bias correction); exp_avg / exp_avg_sq: the Adam moments, same shape as bias, updated in place.
    """
    if mode not in ("pid", "sign", "off"):
        raise ValueError(f"balancing mode {mode!r}; allowed: 'pid', 'sign', 'off'")
    if step < 1:
        raise ValueError(f"step must be >= 1 (1-based optimizer step), got {step}")
    n_exp = counts.shape[-1]
    if bias.shape[-1] not in (n_exp, n_exp + 1):
        raise ValueError(f"bias has {bias.shape[-1]} classes; expected {n_exp} or {n_exp + 1} for {n_exp} experts")
    if bias.shape[-1] > n_exp:
        bias[n_exp:] = SKIP_BIAS
    total = counts.sum()
    if mode == "off" or total <= 0:
        return
    load = counts.to(device=bias.device, dtype=torch.float32) / total.to(device=bias.device, dtype=torch.float32)
    g = load - 1.0 / n_exp
    if mode == "sign":
        delta = lr * torch.sign(g)
    else:
        beta1, beta2 = betas
        m, v = exp_avg[:n_exp], exp_avg_sq[:n_exp]
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        m_hat = m / (1 - beta1**step)
        v_hat = v / (1 - beta2**step)
        delta = lr * m_hat / (v_hat.sqrt() + eps)
    bias[:n_exp] -= delta - delta.mean()  # overloaded experts down, underloaded up; mean unchanged


def update_model_biases(
    states: Iterable[dict[str, torch.Tensor]], counts: torch.Tensor, step: int, mode: Mode = "pid", **kw: float
) -> None:
    """Apply update_bias to every layer: states = model.balance_state(), counts [n_layers, E] (global sums)."""
    states = list(states)
    if counts.shape[0] != len(states):
        raise ValueError(f"counts has {counts.shape[0]} layers, model has {len(states)} MoE layers")
    for st, c in zip(states, counts):
        update_bias(st["bias"], st["exp_avg"], st["exp_avg_sq"], step, c, mode=mode, **kw)


def balance_metrics(counts: torch.Tensor) -> dict[str, float]:
    """Load-balance summary of counts [n_layers, E] (or [E]): per-layer metrics, then mean and max over layers.

    max_violation = (max load - mean) / mean; cv = std / mean (population std); entropy = H(load) / ln E;
    dead experts = load < 0.1 * mean (summed over layers). Layers with no tokens are skipped.
    """
    c = counts.detach().to(torch.float64).cpu()
    c = c[None] if c.dim() == 1 else c
    c = c[c.sum(-1) > 0]
    n_exp = c.shape[-1]
    if c.shape[0] == 0:
        return {"max_violation": 0.0, "max_violation_max": 0.0, "cv": 0.0, "cv_max": 0.0, "entropy": 1.0,
                "entropy_min": 1.0, "dead_experts": 0.0}  # fmt: skip
    load = c / c.sum(-1, keepdim=True)
    mean = 1.0 / n_exp
    viol = (load.max(-1).values - mean) / mean
    cv = load.std(-1, unbiased=False) / mean
    ent = -(load * load.clamp_min(1e-30).log()).sum(-1) / math.log(n_exp) if n_exp > 1 else torch.ones(c.shape[0])
    dead = (load < 0.1 * mean).sum()
    return {
        "max_violation": viol.mean().item(),
        "max_violation_max": viol.max().item(),
        "cv": cv.mean().item(),
        "cv_max": cv.max().item(),
        "entropy": ent.mean().item(),
        "entropy_min": ent.min().item(),
        "dead_experts": float(dead.item()),
    }
