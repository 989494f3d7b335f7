"""Model configuration of the ZAYA1 trainer: one dataclass, presets, HF `ZayaConfig` conversion.

Field names follow transformers' `ZayaConfig` where one exists, so that weights exchange 1:1. The training-time
deviations from the reference are flags whose defaults reproduce the reference (see `from_scratch`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ATTENTION_BACKENDS = ("auto", "sdpa", "flex", "flash")


@dataclass
class ModelConfig:
    """Shape and behaviour of a ZAYA1 model (CCA attention + top-1 MoE with the ZAYA1 router)."""

    vocab_size: int = 262_272
    hidden_size: int = 2048
    num_layers: int = 40  # blocks; each = CCA attention sub-block + MoE sub-block
    num_attention_heads: int = 8
    num_key_value_heads: int = 2
    head_dim: int = 128
    num_experts: int = 16
    moe_intermediate_size: int = 2048  # expert fc1 is d -> 2 * this ([gate, up]), fc2 this -> d
    router_hidden_size: int = 256
    cca_time0: int = 2  # depthwise conv kernel
    cca_time1: int = 2  # grouped (per-head) conv kernel
    rms_norm_eps: float = 1e-5
    seq_len: int = 4096  # max positions
    rope_theta: float = 10_000.0
    partial_rotary_factor: float = 0.5  # RoPE on the first half of each head
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True
    pad_token_id: int = 0
    bos_token_id: int = 2
    eos_token_id: int = 106

    # Router: the extra "skip" class of the released model (softmax over E + 1, bias frozen at -1).
    router_skip_class: bool = True

    # Training-time deviations; defaults = reference behaviour (what loaded HF weights expect). The presets are
    # training configs and set key_temp_init=1.0; `from_scratch()` also turns on the per-document flags.
    key_temp_init: float = 0.0  # HF placeholder; from-scratch training must start at 1.0 (linear temperature)
    doc_reset: bool = False  # reset conv / value-shift state at document boundaries (needs doc_ids)
    doc_causal: bool = False  # document-causal attention mask (needs doc_ids)
    # How document-causal attention is computed (trainer/attention_backends.py): auto | sdpa | flex | flash.
    # auto = flash-attn varlen when installed on a GPU in bf16/fp16, else flex; sdpa = a dense S x S mask (reference).
    attention_backend: str = "auto"

    # Efficiency knobs (no effect on the math, except fp32_head: fp32 vs autocast dtype for the LM head).
    fp32_head: bool = True  # LM head + cross-entropy in fp32 (reference recipe)
    ce_chunk_tokens: int = 4096  # tokens per chunk of the fused linear + cross-entropy
    activation_checkpointing: bool = False  # recompute each block in backward

    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes carried in checkpoints

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if self.num_key_value_heads * self.head_dim % 2:
            raise ValueError("num_key_value_heads * head_dim must be even (value shift splits it in halves)")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(
                f"attention_backend {self.attention_backend!r}; allowed: {', '.join(map(repr, ATTENTION_BACKENDS))}"
            )
        if self.cca_time0 < 1 or self.cca_time1 < 1:
            raise ValueError(f"cca_time0/cca_time1 must be >= 1, got {self.cca_time0}/{self.cca_time1}")

    @property
    def num_router_classes(self) -> int:
        return self.num_experts + int(self.router_skip_class)

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}; allowed: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def from_scratch(self) -> ModelConfig:
        """The recommended deviations for training from random init: key temperature 1, per-document state."""
        return self.replace(key_temp_init=1.0, doc_reset=True, doc_causal=True)

    # --- transformers interop -------------------------------------------------------------------------------
    def to_hf_dict(self) -> dict[str, Any]:
        """Keyword arguments for transformers' `ZayaConfig` describing the same network."""
        if not self.router_skip_class:
            raise ValueError("the reference ZayaForCausalLM always has the skip router class; router_skip_class=False")
        return {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "num_experts": self.num_experts,
            "num_experts_per_tok": 1,
            "moe_intermediate_size": self.moe_intermediate_size,
            "router_hidden_size": self.router_hidden_size,
            "cca_time0": self.cca_time0,
            "cca_time1": self.cca_time1,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.seq_len,
            "initializer_range": self.initializer_range,
            "tie_word_embeddings": self.tie_word_embeddings,
            "pad_token_id": self.pad_token_id,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "hidden_act": "silu",
            "attention_bias": False,
            "lm_head_bias": False,
            "rope_parameters": {
                "hybrid": {
                    "rope_type": "default",
                    "rope_theta": self.rope_theta,
                    "partial_rotary_factor": self.partial_rotary_factor,
                }
            },
        }

    @classmethod
    def from_hf(cls, hf: Any, **overrides: Any) -> ModelConfig:
        """Build from a transformers `ZayaConfig` (or its dict); only full-attention ("hybrid") layers supported."""
        d = hf if isinstance(hf, dict) else hf.to_dict()

        def need(cond: bool, what: str) -> None:
            if not cond:
                raise ValueError(f"unsupported ZayaConfig: {what}")

        need(d.get("num_experts_per_tok", 1) == 1, f"num_experts_per_tok={d.get('num_experts_per_tok')} (only 1)")
        need(not d.get("attention_bias", False), "attention_bias=True")
        need(not d.get("lm_head_bias", False), "lm_head_bias=True")
        need(d.get("hidden_act", "silu") == "silu", f"hidden_act={d.get('hidden_act')!r} (only 'silu')")
        layer_types = d.get("layer_types") or ["hybrid"]
        need(set(layer_types) == {"hybrid"}, f"layer_types={sorted(set(layer_types))} (only 'hybrid')")
        rope_params = d.get("rope_parameters") or {}
        rope = rope_params.get("hybrid", rope_params)
        need(rope.get("rope_type", "default") == "default", f"rope_type={rope.get('rope_type')!r}")
        eos = d.get("eos_token_id", 106)
        kw: dict[str, Any] = {
            "vocab_size": d["vocab_size"],
            "hidden_size": d["hidden_size"],
            "num_layers": d["num_hidden_layers"],
            "num_attention_heads": d["num_attention_heads"],
            "num_key_value_heads": d["num_key_value_heads"],
            "head_dim": d.get("head_dim") or d["hidden_size"] // d["num_attention_heads"],
            "num_experts": d["num_experts"],
            "moe_intermediate_size": d["moe_intermediate_size"],
            "router_hidden_size": d["router_hidden_size"],
            "cca_time0": d["cca_time0"],
            "cca_time1": d["cca_time1"],
            "rms_norm_eps": d["rms_norm_eps"],
            "seq_len": d["max_position_embeddings"],
            "rope_theta": float(rope.get("rope_theta", 5_000_000.0)),
            "partial_rotary_factor": float(rope.get("partial_rotary_factor", 1.0)),
            "initializer_range": d.get("initializer_range", 0.02),
            "tie_word_embeddings": d.get("tie_word_embeddings", True),
            "pad_token_id": d.get("pad_token_id") if d.get("pad_token_id") is not None else 0,
            "bos_token_id": d.get("bos_token_id") if d.get("bos_token_id") is not None else 2,
            "eos_token_id": (eos[0] if isinstance(eos, list) else eos) if eos is not None else 106,
        }
        kw.update(overrides)
        return cls(**kw)


def tiny(vocab_size: int = 512, **overrides: Any) -> ModelConfig:
    """CPU tests: trains in seconds. 4 blocks, d=64, 4 experts."""
    kw: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        num_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_experts=4,
        moe_intermediate_size=64,
        router_hidden_size=32,
        seq_len=512,
        key_temp_init=1.0,
        ce_chunk_tokens=256,
    )
    kw.update(overrides)
    return ModelConfig(**kw)


def small(vocab_size: int = 32_768, **overrides: Any) -> ModelConfig:
    """One GPU: ~0.18B total / ~0.036B active parameters (0.16B / 0.02B without embeddings), ZAYA1 ratios."""
    kw: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=512,
        num_layers=12,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=64,
        num_experts=16,
        moe_intermediate_size=512,
        router_hidden_size=128,
        seq_len=4096,
        key_temp_init=1.0,
    )
    kw.update(overrides)
    return ModelConfig(**kw)


def zaya1_8b(**overrides: Any) -> ModelConfig:
    """The published ZAYA1-8B shape (4K-context phase: rope theta 10k), initialised for training (T = 1)."""
    kw: dict[str, Any] = dict(key_temp_init=1.0)
    kw.update(overrides)
    return ModelConfig(**kw)


def zaya1_8b_32k(**overrides: Any) -> ModelConfig:
    """ZAYA1-8B for the 32K midtraining phase: rope theta 1M, 32,768 positions. Theta is the ZAYA1-8B technical
    report's (arXiv 2605.05365: 10k at 4K, 1M at 32K, 5M at 131K); no public config of the 32K-phase checkpoint was
    found, so max positions is that phase's context length."""
    return zaya1_8b(**{"rope_theta": 1_000_000.0, "seq_len": 32_768, **overrides})


def zaya1_8b_131k(**overrides: Any) -> ModelConfig:
    """ZAYA1-8B for the 131K phase: rope theta 5M, 131,072 positions, as the released Zyphra/ZAYA1-8B config.json
    and transformers' ZayaConfig defaults (max_position_embeddings=131072, rope_theta=5_000_000)."""
    return zaya1_8b(**{"rope_theta": 5_000_000.0, "seq_len": 131_072, **overrides})


PRESETS = {"tiny": tiny, "small": small, "zaya1-8b": zaya1_8b, "zaya1-8b-32k": zaya1_8b_32k,
           "zaya1-8b-131k": zaya1_8b_131k}  # fmt: skip


def preset(name: str, **overrides: Any) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; allowed: {sorted(PRESETS)}")
    return PRESETS[name](**overrides)
