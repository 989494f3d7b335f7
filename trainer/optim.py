"""Optimisers and learning-rate schedules of the trainer.

AdamW: decoupled weight decay on matrices (ndim >= 2, embeddings included), none on vectors (norms, biases, scales).
Muon (option): momentum SGD whose update of each weight matrix is orthogonalised by a Newton-Schulz iteration and
rescaled to AdamW's update RMS (0.2 * sqrt(max(rows, cols)), "Muon is scalable", Moonlight) so the AdamW learning rate
carries over. Muon takes the Linear weights and the 3-D expert tensors (one matrix per expert, batched); embeddings,
the LM head, convolutions and vectors stay on AdamW. Under FSDP2 a sharded matrix is gathered for the iteration.
Schedules map an optimizer step to a multiplier of the base lr: linear warmup, then cosine or WSD
(warmup-stable-decay, linear decay over the last `decay_fraction` of the steps) down to `min_lr_ratio`, or constant.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

NS_COEFFS = (3.4445, -4.7750, 2.0315)  # quintic Newton-Schulz coefficients (Keller Jordan's Muon)


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately orthogonalise the last two dims of g (U V^T of its SVD), batched over leading dims."""
    a, b, c = NS_COEFFS
    x = g.to(torch.bfloat16) if g.is_cuda else g.float()
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        m = x @ x.mT
        x = a * x + (b * m + c * m @ m) @ x
    return (x.mT if tall else x).to(g.dtype)


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _like(full: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """`full` laid out like `ref` (a DTensor shard when ref is one)."""
    if hasattr(ref, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full, ref.device_mesh, ref.placements, src_data_rank=None)
    return full


class MuonAdamW(torch.optim.Optimizer):
    """Muon on groups with `use_muon=True`, AdamW on the others (one optimizer, one state dict)."""

    def __init__(self, groups: list[dict[str, Any]], lr: float, betas: tuple[float, float], eps: float,
                 weight_decay: float, momentum: float = 0.95, ns_steps: int = 5) -> None:  # fmt: skip
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        ns_steps=ns_steps, use_muon=False)  # fmt: skip
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                p.mul_(1 - lr * wd)
                if group["use_muon"]:
                    buf = state.setdefault("momentum_buffer", torch.zeros_like(p))
                    mu = group["momentum"]
                    buf.mul_(mu).add_(p.grad)
                    u = p.grad.add(buf, alpha=mu)  # Nesterov
                    o = newton_schulz(_full(u), group["ns_steps"])
                    scale = 0.2 * math.sqrt(max(o.shape[-2], o.shape[-1]))
                    p.add_(_like(o, p), alpha=-lr * scale)
                else:
                    b1, b2 = group["betas"]
                    if not state:
                        state["step"] = torch.zeros((), dtype=torch.float32)
                        state["exp_avg"] = torch.zeros_like(p)
                        state["exp_avg_sq"] = torch.zeros_like(p)
                    state["step"] += 1
                    t = float(state["step"])
                    state["exp_avg"].lerp_(p.grad, 1 - b1)
                    state["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                    denom = (state["exp_avg_sq"] / (1 - b2**t)).sqrt_().add_(group["eps"])
                    p.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - b1**t))


def muon_params(model: nn.Module) -> set[int]:
    """ids of the parameters Muon owns: weight matrices (2-D, and 3-D stacks of expert matrices), except the
    embeddings, the LM head and convolution kernels (named embed*/lm_head*/conv*)."""
    ids: set[int] = set()
    for name, p in model.named_parameters():
        leaf = name.split(".")
        if p.ndim in (2, 3) and not any(part.startswith(("embed", "lm_head", "conv")) for part in leaf):
            ids.add(id(p))
    return ids


def param_groups(model: nn.Module, weight_decay: float, muon: bool) -> list[dict[str, Any]]:
    """Decay / no-decay (and Muon / AdamW) groups; every trainable parameter is in exactly one group."""
    use_muon = muon_params(model) if muon else set()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        key = (id(p) in use_muon, p.ndim >= 2)
        groups.setdefault(key, []).append(p)
    return [
        {"params": ps, "use_muon": m, "weight_decay": weight_decay if decay else 0.0}
        for (m, decay), ps in sorted(groups.items())
    ]


def build_optimizer(model: nn.Module, cfg: Any) -> torch.optim.Optimizer:
    """cfg: the train.optimizer section (name, lr, betas, eps, weight_decay, momentum, ns_steps)."""
    groups = param_groups(model, cfg.weight_decay, cfg.name == "muon")
    if cfg.name == "adamw":
        for g in groups:
            g.pop("use_muon")
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)  # foreach on GPU
    return MuonAdamW(groups, cfg.lr, tuple(cfg.betas), cfg.eps, cfg.weight_decay, cfg.momentum, cfg.ns_steps)


def lr_multiplier(step: int, kind: str, warmup: int, total: int, min_ratio: float, decay_fraction: float) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total - warmup - 1))  # min_ratio at the last step
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "wsd":
        decay_steps = max(1, round(decay_fraction * total))
        start = total - decay_steps
        if step < start:
            return 1.0
        return 1.0 - (1.0 - min_ratio) * min(1.0, (step - start + 1) / decay_steps)
    raise ValueError(f"unknown schedule {kind!r}; allowed: constant, cosine, wsd")


class Schedule:
    """Sets each group's lr from its base lr and the multiplier; state = the next step."""

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str, warmup: int, total: int, min_ratio: float,
                 decay_fraction: float) -> None:  # fmt: skip
        self.optimizer = optimizer
        self.kind, self.warmup, self.total = kind, warmup, total
        self.min_ratio, self.decay_fraction = min_ratio, decay_fraction
        for g in optimizer.param_groups:
            g.setdefault("base_lr", g["lr"])
        self.step_num = 0

    def apply(self) -> float:
        """Set the lr for the coming optimizer step; returns the multiplier."""
        m = lr_multiplier(self.step_num, self.kind, self.warmup, self.total, self.min_ratio, self.decay_fraction)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * m
        return m

    def advance(self) -> None:
        self.step_num += 1

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step_num, "kind": self.kind, "warmup": self.warmup, "total": self.total}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_num = int(state["step"])


def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Global grad norm (DTensor-aware via torch's implementation); clips when max_norm > 0."""
    params = [p for p in params if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    return _full(norm)
