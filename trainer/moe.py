"""ZAYA1 MoE sub-block: the MLP router (EDA, fp32 softmax, biased top-1) and SwiGLU experts with sorted dispatch.

Parameter and buffer names match transformers' ZayaRouter / ZayaExperts so weights map 1:1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reasonpipe.trainer.config import ModelConfig
from reasonpipe.trainer.layers import RMSNorm


class RouterMLP(nn.Module):
    def __init__(self, dim: int, n_classes: int, eps: float) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, eps)
        self.fc1 = nn.Linear(dim, dim, bias=True)
        self.fc2 = nn.Linear(dim, dim, bias=True)
        self.out_proj = nn.Linear(dim, n_classes, bias=False)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = F.gelu(self.fc1(self.norm(r)))
        return self.out_proj(F.gelu(self.fc2(r)))


class Router(nn.Module):
    """r = down(x) (+ gamma * r_prev: EDA), p = softmax_fp32(MLP(RMSNorm(r))), e = argmax(p + b), gate = p[e].

    `balancing_biases` (fp32 buffer, one per class; the skip class is frozen at -1) only affects the selection.
    `bias_exp_avg` / `bias_exp_avg_sq` hold the Adam moments of the balancing update (trainer/balancing.py).
    """

    def __init__(self, cfg: ModelConfig, use_eda: bool) -> None:
        super().__init__()
        self.num_experts = cfg.num_experts
        self.num_classes = cfg.num_router_classes
        self.down_proj = nn.Linear(cfg.hidden_size, cfg.router_hidden_size, bias=True)
        self.use_eda = use_eda
        if use_eda:
            self.router_states_scale = nn.Parameter(torch.ones(cfg.router_hidden_size))
        self.router_mlp = RouterMLP(cfg.router_hidden_size, self.num_classes, cfg.rms_norm_eps)
        bias = torch.zeros(self.num_classes, dtype=torch.float32)
        if cfg.router_skip_class:
            bias[-1] = -1.0
        self.register_buffer("balancing_biases", bias)
        self.register_buffer("bias_exp_avg", torch.zeros(self.num_classes, dtype=torch.float32))
        self.register_buffer("bias_exp_avg_sq", torch.zeros(self.num_classes, dtype=torch.float32))

    def forward(
        self, x: torch.Tensor, prev: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [N, d] -> gate [N] (0 for skip), expert [N] (skip mapped to 0), r for the next router, counts [E]."""
        r = self.down_proj(x)
        if self.use_eda and prev is not None:
            r = r + prev * self.router_states_scale
        probs = torch.softmax(self.router_mlp(r).float(), dim=-1)
        choice = torch.argmax(probs.detach() + self.balancing_biases, dim=-1)
        gate = probs.gather(-1, choice[:, None])[:, 0]
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=x.device)
        counts = counts.scatter_add(0, choice, torch.ones_like(choice))[: self.num_experts]
        skip = choice >= self.num_experts
        return gate.masked_fill(skip, 0.0), choice.masked_fill(skip, 0), r, counts


def _by_group(offs: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(group, slot) of each of n rows sorted by group (offs: int32 cumulative ends) and the largest group size."""
    ends = offs.long()
    sizes = torch.diff(ends, prepend=ends.new_zeros(1))
    group = torch.searchsorted(ends, torch.arange(n, device=offs.device), right=True)
    slot = torch.arange(n, device=offs.device) - (ends - sizes)[group]
    return group, slot, int(sizes.max())


def _padded(x: torch.Tensor, group: torch.Tensor, slot: torch.Tensor, n_groups: int, cap: int) -> torch.Tensor:
    out = x.new_zeros(n_groups, cap, x.shape[1])
    out[group, slot] = x
    return out


@torch.library.custom_op("reasonpipe::grouped_mm_batched", mutates_args=())
def grouped_mm_batched(x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """torch._grouped_mm(x [N, K], w [E, K, M], offs) as one batched matmul: each group's rows are placed in an
    [E, largest group, K] tensor (zero-padded), multiplied by torch.bmm, and gathered back. No loop over groups;
    memory E x largest group x K (the padding grows with load imbalance). A custom op: one opaque node for
    torch.compile (the group size is data-dependent)."""
    group, slot, cap = _by_group(offs, x.shape[0])
    return torch.bmm(_padded(x, group, slot, w.shape[0], cap), w)[group, slot]


@grouped_mm_batched.register_fake
def _(x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape[0], w.shape[-1])


@torch.library.custom_op("reasonpipe::grouped_mm_batched_wgrad", mutates_args=())
def grouped_mm_batched_wgrad(x: torch.Tensor, grad: torch.Tensor, offs: torch.Tensor, n_groups: int) -> torch.Tensor:
    """dL/dw[e] = x_e^T grad_e for the groups of grouped_mm_batched -> [E, K, M] (one batched matmul)."""
    group, slot, cap = _by_group(offs, x.shape[0])
    xp, gp = _padded(x, group, slot, n_groups, cap), _padded(grad, group, slot, n_groups, cap)
    return torch.bmm(xp.transpose(1, 2), gp)


@grouped_mm_batched_wgrad.register_fake
def _(x: torch.Tensor, grad: torch.Tensor, offs: torch.Tensor, n_groups: int) -> torch.Tensor:
    return x.new_empty(n_groups, x.shape[1], grad.shape[1])


def _batched_setup(ctx: Any, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
    x, w, offs = inputs
    ctx.save_for_backward(x, w, offs)


def _batched_backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    x, w, offs = ctx.saved_tensors
    grad = grad.contiguous()
    gx = grouped_mm_batched(grad, w.transpose(-2, -1).contiguous(), offs)
    gw = grouped_mm_batched_wgrad(x, grad, offs, w.shape[0])
    return gx, gw, None


grouped_mm_batched.register_autograd(_batched_backward, setup_context=_batched_setup)


def grouped_mm_ok(x: torch.Tensor, w: torch.Tensor) -> bool:
    """torch._grouped_mm is usable: CPU eager (any float dtype) or bf16 (CUDA/ROCm; also required under compile),
    rows 16-byte aligned."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    if not all(n * x.element_size() % 16 == 0 for n in (w.shape[-1], w.shape[-2])):
        return False
    if x.dtype == torch.bfloat16:
        return x.device.type in ("cpu", "cuda")
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def grouped_mm(x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor, fast: bool = True) -> torch.Tensor:
    """x [N, K] sorted by group, w [E, K, M], offs [E] int32 cumulative ends -> [N, M]: torch._grouped_mm where
    usable (and `fast`), else the sorted-token batched matmul."""
    if fast and grouped_mm_ok(x, w):
        return torch._grouped_mm(x, w, offs=offs)
    return grouped_mm_batched(x, w, offs)


class Experts(nn.Module):
    """E SwiGLU experts stored as 3-D tensors (HF layout): gate_up_proj [E, 2I, d], down_proj [E, d, I].

    Tokens are sorted by expert and each expert runs on one contiguous slice: one `torch._grouped_mm` per matrix
    where available, otherwise one zero-padded batched matmul (`grouped_mm_batched`); no Python loop over experts.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        e, d, i = cfg.num_experts, cfg.hidden_size, cfg.moe_intermediate_size
        self.num_experts = e
        self.gate_up_proj = nn.Parameter(torch.empty(e, 2 * i, d))
        self.down_proj = nn.Parameter(torch.empty(e, d, i))
        self.use_grouped_mm = True  # False forces the batched-matmul op (tests compare both)
        std = cfg.initializer_range
        nn.init.normal_(self.gate_up_proj, std=std)
        nn.init.normal_(self.down_proj, std=std / math.sqrt(2 * cfg.num_layers))

    def forward(self, x: torch.Tensor, idx: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        order = torch.argsort(idx, stable=True)
        xs = x[order]
        counts = torch.zeros(self.num_experts, dtype=torch.long, device=x.device)
        counts = counts.scatter_add(0, idx, torch.ones_like(idx))
        w1, w2 = self.gate_up_proj, self.down_proj
        if torch.is_autocast_enabled(x.device.type):  # _grouped_mm is not autocast-aware
            dt = torch.get_autocast_dtype(x.device.type)
            xs, w1, w2 = xs.to(dt), w1.to(dt), w2.to(dt)
        else:
            xs = xs.to(w1.dtype)
        offs = torch.cumsum(counts, 0).to(torch.int32)
        g, u = grouped_mm(xs, w1.transpose(-2, -1), offs, self.use_grouped_mm).chunk(2, dim=-1)
        ys = grouped_mm((F.silu(g) * u).contiguous(), w2.transpose(-2, -1), offs, self.use_grouped_mm)
        ys = ys * gate[order, None].to(ys.dtype)
        return torch.zeros_like(ys).index_copy(0, order, ys)


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig, use_eda: bool) -> None:
        super().__init__()
        self.gate = Router(cfg, use_eda)
        self.experts = Experts(cfg)

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, S, d] normed -> (output [B, S, d], router state for the next layer, counts [E])."""
        b, s, d = x.shape
        gate, idx, r, counts = self.gate(x.reshape(b * s, d), None if prev is None else prev.reshape(b * s, -1))
        y = self.experts(x.reshape(b * s, d), idx, gate)
        return y.view(b, s, d), r.view(b, s, -1), counts
