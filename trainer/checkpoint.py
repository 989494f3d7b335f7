"""Atomic, resumable checkpoints: RUN_DIR/checkpoints/step_NNNNNNN/.

    model.pt        full model state_dict (plain keys, incl. the routers' balancing biases and their Adam moments)
    optimizer.pt    full optimizer state (parameter FQNs as keys: valid for DDP, FSDP2 and a single process)
    trainer.pt      step, scheduler, loader state (consumed samples), balancing step, skipped steps
    rng_<rank>.pt   torch / CUDA / numpy / python RNG states of each rank

All ranks write into checkpoints/.tmp-step_NNNNNNN/ (a shared filesystem under multi-node), then rank 0 renames it
to its final name: a directory named step_* is always complete. Older checkpoints beyond `keep` are removed.
Sharded (FSDP2) states are gathered to full tensors on CPU, so a run can resume with another data-parallel size or
parallelism.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from reasonpipe.trainer import distributed as D

STEP_RE = re.compile(r"^step_(\d{7,})$")
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:07d}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_RE.match(p.name)) and p.is_dir()]
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    rank: int,
    keep: int,
) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint directory."""
    model_sd = get_model_state_dict(model, options=FULL)
    optim_sd = get_optimizer_state_dict(model, optimizer, options=FULL)
    final = step_dir(run_dir, step)
    tmp = final.with_name(f".tmp-{final.name}")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    D.barrier()
    torch.save(rng_state(), tmp / f"rng_{rank}.pt")
    if rank == 0:
        torch.save(model_sd, tmp / "model.pt")
        torch.save(optim_sd, tmp / "optimizer.pt")
        torch.save(trainer_state, tmp / "trainer.pt")
    D.barrier()
    if rank == 0:
        if final.exists():  # a re-run wrote this step before: replace it
            shutil.rmtree(final)
        tmp.rename(final)
        for _, old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    D.barrier()
    return final


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, rank: int) -> dict[str, Any]:
    """Collective: restore model, optimizer and this rank's RNG in place; returns the trainer state."""
    model_sd = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    set_model_state_dict(model, model_sd, options=StateDictOptions(full_state_dict=True))
    optim_sd = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
    set_optimizer_state_dict(model, optimizer, optim_sd, options=StateDictOptions(full_state_dict=True))
    rng = path / f"rng_{rank}.pt"
    set_rng_state(torch.load(rng if rng.exists() else path / "rng_0.pt", weights_only=False))
    return torch.load(path / "trainer.pt", weights_only=False)
