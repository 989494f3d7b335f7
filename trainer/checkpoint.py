"""Sharded, atomic, verified checkpoints: RUN_DIR/checkpoints/step_NNNNNNN/, written with torch.distributed.checkpoint.

    .metadata, __R_K.distcp   DCP: {"model": model state, "optim": optimizer state tensors}; every rank writes and
                              reads its own shards (FSDP2: DTensor shards; DDP / one process: rank 0's tensors)
    trainer.json              step, balancing step, skipped steps, scheduler, loader state, model config, world size
    rng/<rank>.json           torch / CUDA / numpy / python RNG states of each rank
    manifest.json             every file above with its size and sha256 (each rank hashes the files it wrote);
                              written last

Atomic: all ranks write into checkpoints/.tmp-step_NNNNNNN/ (a shared filesystem under multi-node), then rank 0
renames it: a folder named step_* is complete. `verify` checks a folder against its manifest (sizes always, sha256
split over the ranks), so `--resume` skips a truncated or damaged checkpoint for the newest sound one.
Resharding: DCP reads any saved layout into any live one, so a run resumes with another number of ranks or another
parallelism, and one process (export-hf) reads a checkpoint written by many.
Safe to load: tensors are read with `torch.load(weights_only=True)` (DCP's reader) and everything else is JSON. DCP's
`.metadata` is a pickle; it is read with an unpickler that admits only DCP's own metadata classes, torch dtypes and
sizes, and the load planner refuses non-tensor entries (DCP would unpickle them, unrestricted), so a
crafted checkpoint is refused, never executed.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import re
import shutil
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import CheckpointException, FileSystemReader
from torch.distributed.checkpoint import metadata as dcp_md
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from reasonpipe.tokenizer.shards import sha256_file
from reasonpipe.trainer import distributed as D

STEP_RE = re.compile(r"^step_(\d{7,})$")
MANIFEST = "manifest.json"


class CheckpointError(ValueError):
    """A checkpoint folder is incomplete, damaged or unsafe; the message names the folder and the file."""


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


# --- safe reading ----------------------------------------------------------------------------------------------


_DCP_CLASSES = {
    ("torch.distributed.checkpoint.metadata", n)
    for n in (
        "Metadata",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "TensorProperties",
        "ChunkStorageMetadata",
        "MetadataIndex",
        "StorageMeta",
        "_MEM_FORMAT_ENCODING",
    )  # fmt: skip
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),  # maps a layout name ("torch.strided") to the torch.layout
    ("torch", "Size"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("collections", "OrderedDict"),
}


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP's .metadata admitting only the classes DCP writes there (and torch dtypes)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module, name) in _DCP_CLASSES:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name} (not a DCP metadata class)")


class SafeReader(FileSystemReader):
    """FileSystemReader whose .metadata is read with the allowlist unpickler; tensor data is read by DCP itself
    with `torch.load(weights_only=True)`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> dcp_md.Metadata:
        path = Path(self.path) / ".metadata"
        with open(path, "rb") as f:
            try:
                md = _MetadataUnpickler(f).load()
            except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as e:
                raise CheckpointError(f"{path}: refused ({e})") from None
        if not isinstance(md, dcp_md.Metadata):
            raise CheckpointError(f"{path}: not DCP metadata (found {type(md).__name__})")
        for key, entry in md.state_dict_metadata.items():
            if not isinstance(entry, dcp_md.TensorStorageMetadata):
                raise CheckpointError(f"{path}: entry {key!r} is not a tensor; our checkpoints hold tensors only")
        if getattr(md, "storage_meta", None) is None:
            md.storage_meta = dcp_md.StorageMeta()
        md.storage_meta.load_id = self.load_id
        return md


class TensorOnlyPlanner(DefaultLoadPlanner):
    """DefaultLoadPlanner that never unpickles a byte entry (DCP would unpickle it, unrestricted)."""

    def load_bytes(self, read_item: Any, value: Any) -> None:
        raise CheckpointError(f"checkpoint entry {read_item.dest_index.fqn!r} is not a tensor: refused")


@contextlib.contextmanager
def _one_process_quietly() -> Iterator[None]:
    """DCP warns on every save/load outside a process group that it assumes one process: we mean it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


def load_tensors(path: Path, state: dict[str, Any]) -> None:
    """Fill the tensors of `state` (nested dicts of tensors / DTensors) from the DCP checkpoint at `path`, in place.

    The metadata is checked first (allowlist, tensors only), so a refusal is a CheckpointError naming the file."""
    reader = SafeReader(path)
    reader.read_metadata()
    try:
        with _one_process_quietly():
            dcp.load(state, storage_reader=reader, planner=TensorOnlyPlanner(), no_dist=not D.in_group())
    except CheckpointException as e:
        raise CheckpointError(f"{path}: cannot be loaded ({str(e).strip().splitlines()[-1]})") from None


# --- verification ------------------------------------------------------------------------------------------------


def file_entries(folder: Path, files: list[Path], threads: int = 8) -> dict[str, dict[str, Any]]:
    """{relative path: {bytes, sha256}} of `files` (hashed in a thread pool)."""
    with ThreadPoolExecutor(threads) as pool:
        digests = list(pool.map(sha256_file, files))
    return {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": d} for p, d in zip(files, digests)}


def write_manifest(folder: Path, known: dict[str, dict[str, Any]] | None = None) -> None:
    """folder/manifest.json over every file in `folder`; `known` entries (hashed by the ranks that wrote them) are
    taken as they are, the rest are hashed here."""
    known = dict(known or {})
    rest = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST]
    known.update(file_entries(folder, [p for p in rest if str(p.relative_to(folder)) not in known]))
    (folder / MANIFEST).write_text(json.dumps({"files": known}, indent=1, sort_keys=True) + "\n")


def verify(folder: Path, hash_share: tuple[int, int] | None = (0, 1), threads: int = 8) -> str | None:
    """None when `folder` matches its manifest, else what is wrong (naming the file). Sizes are always checked;
    `hash_share` = (rank, world): this rank hashes every world-th file (None: no hashing)."""
    man = folder / MANIFEST
    if not man.exists():
        return f"{man.name} missing (the checkpoint was never completed, or predates sharded checkpoints)"
    try:
        files = json.loads(man.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        return f"{man.name} unreadable ({e})"
    for rel, want in sorted(files.items()):
        p = folder / rel
        if not p.is_file():
            return f"{rel} missing"
        if p.stat().st_size != want["bytes"]:
            return f"{rel} has {p.stat().st_size} bytes, the manifest says {want['bytes']} (truncated?)"
    if hash_share is None:
        return None
    rank, world = hash_share
    mine = sorted(files)[rank::world]
    with ThreadPoolExecutor(threads) as pool:
        digests = list(pool.map(lambda rel: sha256_file(folder / rel), mine))
    for rel, got in zip(mine, digests):
        if got != files[rel]["sha256"]:
            return f"{rel} does not match its sha256 in the manifest (damaged)"
    return None


def verify_all_ranks(folder: Path, env: D.DistEnv) -> str | None:
    """Collective verify: every rank checks sizes and hashes its share; a problem seen by any rank is returned."""
    problem = verify(folder, (env.rank, env.world_size))
    found = D.all_gather_object(problem)
    return next((p for p in found if p), None)


# --- RNG (JSON) --------------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state().tolist(),
        "numpy": [np_state[0], np_state[1].tolist(), *map(float, np_state[2:])],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in cuda])


# --- save / load -------------------------------------------------------------------------------------------------


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def _optim_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], list[Any]]:
    """(optimizer state keyed by parameter FQN: tensors only, param_groups). Initialises an empty state."""
    osd = get_optimizer_state_dict(model, optimizer)
    for fqn, st in osd["state"].items():
        bad = [k for k, v in st.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise TypeError(f"optimizer state of {fqn} holds non-tensors {bad}: cannot checkpoint it safely")
    return osd["state"], osd["param_groups"]


def reshard(model: nn.Module) -> None:
    """FSDP2 keeps the root's parameters unsharded after a forward without backward (eval): register the shards
    again, so the state dicts see the sharded parameters the optimizer holds."""
    for m in model.modules():
        if hasattr(m, "reshard") and hasattr(m, "unshard"):  # an FSDPModule
            m.reshard()


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    env: D.DistEnv,
    keep: int,
) -> Path:
    """Collective: every rank calls it and writes its own shards. Returns the final checkpoint directory."""
    final = step_dir(run_dir, step)
    tmp = final.with_name(f".tmp-{final.name}")
    if env.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    D.barrier()
    reshard(model)
    optim_state, _ = _optim_tensors(model, optimizer)
    state = {"model": get_model_state_dict(model), "optim": optim_state}
    with _one_process_quietly():
        dcp.save(state, checkpoint_id=tmp, no_dist=not D.in_group())
    _write_json(tmp / "rng" / f"{env.rank}.json", rng_state())
    # each rank hashes the files it wrote: nothing is hashed twice, nor all on rank 0
    mine = sorted(tmp.glob(f"__{env.rank}_*.distcp")) + [tmp / "rng" / f"{env.rank}.json"]
    hashed = {k: v for part in D.all_gather_object(file_entries(tmp, mine)) for k, v in part.items()}
    if env.is_main:
        _write_json(tmp / "trainer.json", {**trainer_state, "world_size": env.world_size})
        write_manifest(tmp, hashed)
        if final.exists():  # a re-run wrote this step before: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        for _, old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    D.barrier()
    return final


def read_trainer_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "trainer.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path / 'trainer.json'}: unreadable ({e})") from None


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, env: D.DistEnv) -> dict[str, Any]:
    """Collective: restore model, optimizer state and this rank's RNG in place; returns the trainer state.

    The optimizer's param_groups (lr, betas, weight decay, ...) are the live ones, built from the current config:
    that is what lets a resume change optimisation settings."""
    trainer_state = read_trainer_state(path)
    reshard(model)
    model_sd = get_model_state_dict(model)
    optim_state, groups = _optim_tensors(model, optimizer)
    state = {"model": model_sd, "optim": optim_state}
    load_tensors(path, state)
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, {"state": state["optim"], "param_groups": groups})
    rng = path / "rng" / f"{env.rank}.json"
    set_rng_state(json.loads((rng if rng.exists() else path / "rng" / "0.json").read_text()))
    return trainer_state


def load_model_weights(path: Path, model: nn.Module) -> None:
    """Only the model of a checkpoint (any number of saving ranks) into a plain, unsharded model (export-hf)."""
    sd = model.state_dict()
    load_tensors(path, {"model": sd})
    model.load_state_dict(sd)
