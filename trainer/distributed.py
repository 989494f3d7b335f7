"""Process group, device selection and small collectives; one code path for CPU, CUDA and ROCm.

Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK set) the process group is NCCL on GPUs (RCCL on ROCm builds: same
`torch.cuda` API and "nccl" backend name) and gloo on CPU. Without torchrun everything is a no-op on rank 0 of 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None when not distributed

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def pick_device(local_rank: int, want: str = "auto") -> torch.device:
    """`auto`: the local GPU (CUDA or ROCm) when there is one, else CPU; or an explicit 'cpu' / 'cuda'."""
    if want == "cpu" or (want == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device {want!r} requested but torch.cuda is not available (torch {torch.__version__})")
    dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    torch.cuda.set_device(dev)
    return dev


def init(device: str = "auto") -> DistEnv:
    """Join the torchrun process group if there is one; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(local, device)
    backend = None
    if world > 1 or "TORCHELASTIC_RUN_ID" in os.environ:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend, device_id=dev if dev.type == "cuda" else None)
    return DistEnv(rank, world, local, dev, backend)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def in_group() -> bool:
    """Whether this process is one of several in a process group (collectives are real)."""
    return dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (no-op outside a process group); returns t."""
    if in_group():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if in_group():
        dist.barrier()


def broadcast_object(obj: object, src: int = 0) -> object:
    if in_group():
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]
    return obj


def all_gather_object(obj: object) -> list[object]:
    """`obj` of every rank, in rank order ([obj] outside a process group)."""
    if in_group():
        out: list[object] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def backend_info() -> dict[str, object]:
    """What the run executes on (logged once): torch, CUDA/HIP versions, device name and count."""
    info: dict[str, object] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "hip": getattr(torch.version, "hip", None),  # set on ROCm builds (torch.cuda then drives AMD GPUs)
        "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    if info["gpus"]:
        info["device_name"] = torch.cuda.get_device_name(0)
    return info
