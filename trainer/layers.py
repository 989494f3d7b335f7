"""Small building blocks: fp32 RMSNorm, learned residual scaling, partial rotary embeddings."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32; returns fp32 (autocast casts again for the next matmul)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight.float() * x


class ResidualScaling(nn.Module):
    """ZAYA1 learned residual merge: (h + beta_h) * alpha_h + (res + beta_r) * alpha_r, all in fp32.

    Parameter names match transformers' `ZayaResidualScaling`.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.hidden_states_scale = nn.Parameter(torch.ones(dim))
        self.hidden_states_bias = nn.Parameter(torch.zeros(dim))
        self.residual_scale = nn.Parameter(torch.ones(dim))
        self.residual_bias = nn.Parameter(torch.zeros(dim))

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        h = (h.float() + self.hidden_states_bias.float()) * self.hidden_states_scale.float()
        return h + (residual.float() + self.residual_bias.float()) * self.residual_scale.float()


def rope_cos_sin(
    position_ids: torch.Tensor, rotary_dim: int, theta: float, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape [B, S, rotary_dim] (neox layout: frequencies repeated over both halves)."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=position_ids.device) / rotary_dim)
    )
    freqs = position_ids[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_partial_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on the first cos.shape[-1] dims of x [B, S, H, D]; the rest passes through."""
    rd = cos.shape[-1]
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    x_rot, x_pass = x[..., :rd], x[..., rd:]
    x1, x2 = x_rot[..., : rd // 2], x_rot[..., rd // 2 :]
    rotated = torch.cat((-x2, x1), dim=-1)
    return torch.cat((x_rot * cos + rotated * sin, x_pass), dim=-1)
