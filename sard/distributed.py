"""Process-group helpers that also work when torch.distributed is not initialised (one process).

The one home for them: the built-in trainer (``sard.engine``) and the evaluators
(``sard.evaluation``) both use these.
"""

from __future__ import annotations

from typing import Any, List

import torch.distributed as dist


def is_dist() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Processes in the default group (1 when not initialised)."""
    return dist.get_world_size() if is_dist() else 1


def get_rank() -> int:
    """This process's rank (0 when not initialised)."""
    return dist.get_rank() if is_dist() else 0


def is_main_process() -> bool:
    """True on rank 0, and always when torch.distributed is not initialised."""
    return get_rank() == 0


def synchronize() -> None:
    """A barrier across processes (nothing in a single process)."""
    if get_world_size() > 1:
        dist.barrier()


def all_gather(obj: Any) -> List[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every process (just [obj] without a group).

    Uses torch.distributed.all_gather_object: with NCCL each process must have called
    torch.cuda.set_device first (both launchers do).
    """
    if get_world_size() == 1:
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out
