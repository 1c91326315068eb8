"""Everything ``torch.distributed`` in one place: where this process stands in a torchrun job,
the process group, and the few collective steps training takes.

The rest of the code asks :class:`DistInfo` for its rank and world size and calls these
helpers, which are no-ops in a single process (``world_size`` 1), so no caller tests for
distribution itself. Rank 0 alone writes run folders, logs and checkpoints.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> DistInfo:
        """From the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
        return cls(
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
        )

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_distributed(device: str, info: DistInfo) -> None:
    """Join the job's process group (NCCL on GPUs, gloo on the CPU); nothing in a single
    process or where the group exists already."""
    if not info.enabled or _ready():
        return
    backend = "nccl" if torch.cuda.is_available() and str(device) != "cpu" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    # Rank 0 validates while the others wait: allow a long validation (MUSDB at 44.1 kHz).
    dist.init_process_group(backend=backend, timeout=_dt.timedelta(hours=2))


def destroy_distributed() -> None:
    """Leave the process group, if this process is in one."""
    if _ready():
        dist.destroy_process_group()


def shared_run_dir(run_dir: Path | None, info: DistInfo) -> Path | None:
    """Rank 0's run folder, in every process (rank 0 alone writes there)."""
    if not info.enabled:
        return run_dir
    shared = [None if run_dir is None else str(run_dir)]
    dist.broadcast_object_list(shared, src=0)
    return None if shared[0] is None else Path(shared[0])


def any_rank(flag: bool, device: torch.device, info: DistInfo) -> bool:
    """Whether ``flag`` is true in any process (every rank then takes the same branch)."""
    if not info.enabled:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value.item() > 0


def from_rank_0(value: Any, info: DistInfo) -> Any:
    """Rank 0's ``value``, in every process."""
    if not info.enabled:
        return value
    shared = [value]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def barrier(info: DistInfo) -> None:
    """Wait until every process gets here."""
    if info.enabled:
        dist.barrier()
