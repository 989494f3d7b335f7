"""`reasonpipe export-hf`: a training run's latest checkpoint as a transformers Zaya folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from reasonpipe.trainer.checkpoint import latest_checkpoint
from reasonpipe.trainer.config import ModelConfig
from reasonpipe.trainer.model import ZayaLM


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
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoints/step_*/ under {run}")
    model = ZayaLM(ModelConfig.from_dict(run_cfg["model"]))
    state = torch.load(ckpt / "model.pt", map_location="cpu", weights_only=True)
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    model.load_state_dict({_clean_key(k): v for k, v in state.items()})
    return model.save_hf(out_dir, dtype=dtype)
