"""Start one process per device (or per CPU worker) and initialise torch.distributed.

Mirrors detectron2's ``launch``: ``num_processes`` per machine, ``dist_url`` "auto" picks a free
local port. The backend is NCCL when every process has its own GPU and gloo otherwise, so DDP also
runs on a CPU-only machine (used by the tests).
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port that was free on localhost a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    main_func: Callable[..., Any],
    num_processes: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    args: Sequence[Any] = (),
) -> None:
    """Run ``main_func(*args)`` in ``num_processes * num_machines`` processes (or inline if one)."""
    world_size = num_processes * num_machines
    if world_size <= 1:
        main_func(*args)
        return
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("dist_url='auto' only works on one machine; pass tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{free_port()}"
    mp.start_processes(
        _worker,
        nprocs=num_processes,
        args=(main_func, world_size, num_processes, machine_rank, dist_url, tuple(args)),
        daemon=False,
        start_method="spawn",
    )


def _worker(
    local_rank: int,
    main_func: Callable[..., Any],
    world_size: int,
    num_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: Sequence[Any],
) -> None:
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= num_per_machine
    backend = "nccl" if use_cuda else "gloo"
    rank = machine_rank * num_per_machine + local_rank
    dist.init_process_group(backend, init_method=dist_url, world_size=world_size, rank=rank)
    if use_cuda:
        torch.cuda.set_device(local_rank)
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()


def launch_command_line(launcher: Callable[..., Any], main_func: Callable[..., Any], args) -> Any:
    """``launcher(main_func, ...)`` with the process layout of detectron2's command line
    (``args.num_gpus``, ``num_machines``, ``machine_rank``, ``dist_url``) and ``main_func(args)``
    in each process; ``launcher`` is this module's ``launch`` or detectron2's (same signature)."""
    return launcher(
        main_func,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
