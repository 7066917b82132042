"""Device choice and (optional) multi-GPU training with DistributedDataParallel.

Launch the same ``ctseg train`` command with ``torchrun --nproc_per_node=N``: torchrun sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR/PORT`` in the environment of each
process.  Each process then trains a replica of the model on its own share of the data
(``DistributedSampler``) and DDP averages the gradients (PyTorch "Getting started with DDP").
Backend: NCCL on CUDA, Gloo on CPU.  Only rank 0 prints and writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def select_device(prefer: str | None = None, quiet: bool = False, local_rank: int = 0,
                  purpose: str = "training") -> torch.device:
    """CUDA > Apple MPS > CPU (or ``prefer`` if given), with a one-line message saying which.

    ``purpose`` ("training" or "inference") picks what the CPU message warns about.
    """
    if prefer:
        dev = torch.device(prefer)
    elif torch.cuda.is_available():
        dev = torch.device("cuda", local_rank)
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        dev = torch.device("mps")
    else:
        dev = torch.device("cpu")
    if not quiet:
        if dev.type == "cuda":
            print(f"device: cuda:{dev.index or 0} ({torch.cuda.get_device_name(dev)})")
        elif dev.type == "mps":
            print("device: mps (Apple GPU)")
        else:
            cost = ("training is ~10-50x slower than on a GPU, so the CPU configs use small images and few "
                    "epochs" if purpose == "training" else "inference takes seconds to minutes per volume")
            print(f"device: cpu ({torch.get_num_threads()} threads) - no GPU found; {cost}")
    return dev


def init_distributed() -> DistInfo:
    """Join the process group if launched by torchrun; otherwise return a single-process info."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(value: float, info: DistInfo, device: torch.device) -> float:
    """Average a Python float over all processes (e.g. the epoch's training loss)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size
