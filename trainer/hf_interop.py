"""Weight exchange with transformers' ZayaForCausalLM (safetensors folders or live models).

Our parameter names mirror the reference except the attention projection, which we keep fused:
    ours  layers.{i}.self_attn.qkv_weight  = cat(q_proj, k_proj, v_proj_current, v_proj_delayed) (rows)
          layers.{i}.self_attn.conv_{dw,gr}_{weight,bias} = qkv_proj.conv_qk_{depthwise,grouped}.{weight,bias}
          layers.{i}.self_attn.temp        = self_attn.qk_norm.temp
everything else is the reference key without the leading "model.". Reading a folder needs only safetensors; the
config is mapped by ModelConfig.from_hf / to_hf_dict. transformers itself is needed only to run the reference.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from trainer.config import ModelConfig
from trainer.model import ZayaLM

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


def to_hf_state_dict(model: ZayaLM) -> dict[str, torch.Tensor]:
    """Our state dict renamed/split to the reference's keys (lm_head omitted when tied, as HF saves it)."""
    return rename_to_hf(model.state_dict(), model.cfg)


def rename_to_hf(named: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Any tensors keyed by our parameter names (weights, grads) -> the reference's keys."""
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


def load_hf(src: str | Path | nn.Module, **overrides: Any) -> ZayaLM:
    """ZayaLM carrying the weights of a ZayaForCausalLM instance or a saved folder (config.json + safetensors).

    `overrides` change ModelConfig fields that do not affect weight shapes (e.g. doc_reset, fp32_head).
    """
    if isinstance(src, nn.Module):
        hf_cfg, sd = src.config.to_dict(), src.state_dict()
    else:
        hf_cfg, sd = _read_folder(Path(src))
    cfg = ModelConfig.from_hf(hf_cfg, **overrides)
    model = ZayaLM(cfg)
    ours = from_hf_state_dict(sd, cfg)
    missing, unexpected = model.load_state_dict(ours, strict=False)
    missing = [k for k in missing if not k.endswith(_NOT_EXPORTED)]
    if missing or unexpected:
        raise KeyError(f"weight mismatch loading ZAYA reference: missing {missing}, unexpected {unexpected}")
    return model


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


def save_hf(model: ZayaLM, out_dir: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write config.json + model.safetensors that `ZayaForCausalLM.from_pretrained(out_dir)` loads."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = to_hf_state_dict(model)
    dtype = dtype or model.head_weight.dtype
    tensors = {
        k: (v.to(dtype) if v.is_floating_point() and not k.endswith("balancing_biases") else v).contiguous().cpu()
        for k, v in sd.items()
    }
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config_dict(model.cfg, dtype), indent=2, sort_keys=True) + "\n")
    return out


def latest_checkpoint(run_dir: str | Path) -> Path:
    ckpts = sorted((Path(run_dir) / "checkpoints").glob("step_*/model.pt"))
    if not ckpts:
        raise FileNotFoundError(f"no checkpoints/step_*/model.pt under {run_dir}")
    return ckpts[-1]


def _clean_key(k: str) -> str:
    changed = True
    while changed:  # torch.compile / DDP wrapper prefixes
        changed = False
        for prefix in ("_orig_mod.", "module."):
            if k.startswith(prefix):
                k, changed = k[len(prefix) :], True
    return k


def export_checkpoint_to_hf(run_dir: str | Path, out_dir: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Latest checkpoint of a run (RUN_DIR/config.json["model"] + checkpoints/step_N/model.pt) -> HF folder."""
    run = Path(run_dir)
    cfg_file = run / "config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"{cfg_file} not found (expected the run's config with key 'model')")
    run_cfg = json.loads(cfg_file.read_text())
    if "model" not in run_cfg:
        raise KeyError(f"{cfg_file} has no key 'model' (found {sorted(run_cfg)})")
    model = ZayaLM(ModelConfig.from_dict(run_cfg["model"]))
    state = torch.load(latest_checkpoint(run), map_location="cpu", weights_only=True)
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    model.load_state_dict({_clean_key(k): v for k, v in state.items()})
    return save_hf(model, out_dir, dtype=dtype)
