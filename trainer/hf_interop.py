"""Weight exchange with transformers' ZayaForCausalLM (safetensors folders or live models).

Our parameter names mirror the reference except the attention projection, which we keep fused:
    ours  layers.{i}.self_attn.qkv_weight  = cat(q_proj, k_proj, v_proj_current, v_proj_delayed) (rows)
          layers.{i}.self_attn.conv_{dw,gr}_{weight,bias} = qkv_proj.conv_qk_{depthwise,grouped}.{weight,bias}
          layers.{i}.self_attn.temp        = self_attn.qk_norm.temp
everything else is the reference key without the leading "model.". Reading a folder needs only safetensors; the
config is mapped by ModelConfig.from_hf / to_hf_dict. transformers itself is needed only to run the reference.
This module converts state dicts and configs only; `ZayaLM.from_hf` / `ZayaLM.save_hf` (trainer/model.py) build on it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from reasonpipe.trainer.config import ModelConfig

_ATTN = "self_attn.qkv_proj."
_RENAMES = {  # our suffix -> reference suffix (inside model.layers.{i}.self_attn.)
    "conv_dw_weight": "qkv_proj.conv_qk_depthwise.weight",
    "conv_dw_bias": "qkv_proj.conv_qk_depthwise.bias",
    "conv_gr_weight": "qkv_proj.conv_qk_grouped.weight",
    "conv_gr_bias": "qkv_proj.conv_qk_grouped.bias",
    "temp": "qk_norm.temp",
}
_QKV = ("q_proj", "k_proj", "v_proj_current", "v_proj_delayed")
_NOT_EXPORTED = ("bias_exp_avg", "bias_exp_avg_sq")  # our balancing moments (training state only)
_LAYER = re.compile(r"^layers\.(\d+)\.self_attn\.(\w+)$")


def _qkv_sizes(cfg: ModelConfig) -> list[int]:
    kv = cfg.num_key_value_heads * cfg.head_dim
    return [cfg.num_attention_heads * cfg.head_dim, kv, kv // 2, kv // 2]


def rename_to_hf(named: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Any tensors keyed by our parameter names (weights, grads) -> the reference's keys (lm_head omitted when tied,
    as HF saves it, because ours has no lm_head then)."""
    out: dict[str, torch.Tensor] = {}
    for key, t in named.items():
        if key.endswith(_NOT_EXPORTED):
            continue
        m = _LAYER.match(key)
        if m and m.group(2) == "qkv_weight":
            base = f"model.layers.{m.group(1)}.{_ATTN}"
            for name, part in zip(_QKV, t.split(_qkv_sizes(cfg), dim=0)):
                out[f"{base}{name}.weight"] = part
        elif m and m.group(2) in _RENAMES:
            out[f"model.layers.{m.group(1)}.self_attn.{_RENAMES[m.group(2)]}"] = t
        elif key.startswith("lm_head."):
            out[key] = t
        else:
            out[f"model.{key}"] = t
    return out


def from_hf_state_dict(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The reference's state dict in our key space (inverse of to_hf_state_dict)."""
    sd = dict(sd)
    out: dict[str, torch.Tensor] = {}
    for i in range(cfg.num_layers):
        base = f"model.layers.{i}.{_ATTN}"
        out[f"layers.{i}.self_attn.qkv_weight"] = torch.cat([sd.pop(f"{base}{n}.weight") for n in _QKV], dim=0)
        for ours, theirs in _RENAMES.items():
            out[f"layers.{i}.self_attn.{ours}"] = sd.pop(f"model.layers.{i}.self_attn.{theirs}")
    for key, t in sd.items():
        if key.startswith("model."):
            out[key[len("model.") :]] = t
        elif key == "lm_head.weight":
            if not cfg.tie_word_embeddings:
                out[key] = t
        else:
            raise KeyError(f"unexpected reference weight {key!r}")
    return out


def _read_folder(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    config = json.loads((path / "config.json").read_text())
    index = path / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    )
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(str(path / f)))
    return config, sd


def read_hf(src: str | Path | nn.Module, **overrides: Any) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(our config, the weights in our key space) of a ZayaForCausalLM instance or a saved folder.

    `overrides` change ModelConfig fields that do not affect weight shapes (e.g. doc_reset, fp32_head).
    """
    if isinstance(src, nn.Module):
        hf_cfg, sd = src.config.to_dict(), src.state_dict()
    else:
        hf_cfg, sd = _read_folder(Path(src))
    cfg = ModelConfig.from_hf(hf_cfg, **overrides)
    return cfg, from_hf_state_dict(sd, cfg)


def check_loaded(missing: list[str], unexpected: list[str]) -> None:
    """Raise unless `load_state_dict(strict=False)` matched every weight (our balancing moments may be missing)."""
    missing = [k for k in missing if not k.endswith(_NOT_EXPORTED)]
    if missing or unexpected:
        raise KeyError(f"weight mismatch loading ZAYA reference: missing {missing}, unexpected {unexpected}")


def hf_config_dict(cfg: ModelConfig, dtype: torch.dtype) -> dict[str, Any]:
    d = cfg.to_hf_dict()
    d.update(
        model_type="zaya",
        architectures=["ZayaForCausalLM"],
        layer_types=["hybrid"] * cfg.num_layers,
        dtype=str(dtype).removeprefix("torch."),
        num_experts_per_tok=1,
        use_cache=True,
    )
    return d


def write_hf(state: dict[str, torch.Tensor], cfg: ModelConfig, out_dir: str | Path, dtype: torch.dtype) -> Path:
    """Write config.json + model.safetensors (our state dict, renamed) that `ZayaForCausalLM.from_pretrained` loads."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.to(dtype) if v.is_floating_point() and not k.endswith("balancing_biases") else v).contiguous().cpu()
        for k, v in rename_to_hf(state, cfg).items()
    }
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config_dict(cfg, dtype), indent=2, sort_keys=True) + "\n")
    return out
