"""Process-group plumbing for scripts started by ``torchrun``: one process per GPU or CPU share.

Without ``torchrun`` every function here is the one-process case: ``is_main()`` is True, the model is
not wrapped and ``main_process_first`` just calls. ``ch05_pretraining/train.py`` uses it.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def is_main() -> bool:
    """True in the one process that prints and writes files: rank 0 under torchrun, else the only one."""
    return not dist.is_initialized() or dist.get_rank() == 0


def log(*args, **kwargs) -> None:
    """``print``, in the main process only (under torchrun every process has the same story to tell)."""
    if is_main():
        print(*args, **kwargs)


def start_processes(device: torch.device, batch_size: int) -> torch.device:
    """This process's device; under torchrun, join the process group first (NCCL on CUDA, gloo on CPU)."""
    if "WORLD_SIZE" not in os.environ:  # started without torchrun: one process
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))  # one GPU per process
        torch.cuda.set_device(device)
        bind = "device_id" in inspect.signature(dist.init_process_group).parameters  # torch >= 2.3
        dist.init_process_group("nccl", **({"device_id": device} if bind else {}))
    elif device.type == "cpu":
        dist.init_process_group("gloo")
    else:
        raise SystemExit(f"torchrun: use --device cuda or cpu (NCCL or gloo), not {device.type}")
    world = dist.get_world_size()
    if batch_size % world:
        raise SystemExit(f"--batch-size {batch_size} does not split evenly over {world} processes")
    share = f"each trains on {batch_size // world} rows of a batch"
    log(f"torchrun: {world} processes ({dist.get_backend()}), {share}")
    return device


def main_process_first(make: Callable[[], object]) -> object:
    """``make()`` in the main process, then, when it is done (it may write files), in the others."""
    result = make() if is_main() else None
    if dist.is_initialized():
        dist.barrier()
    return result if is_main() else make()


def wrap_model(model: torch.nn.Module, device: torch.device, seed: int) -> torch.nn.Module:
    """The model in DistributedDataParallel under torchrun (gradients averaged over ranks), else itself."""
    if not dist.is_initialized():
        return model
    rank = dist.get_rank()
    if rank > 0:  # rank 0 keeps the random stream of a one-process run; the others draw their own dropout
        torch.manual_seed(seed + rank)
    ids = [device.index] if device.type == "cuda" else None
    names = inspect.signature(DistributedDataParallel).parameters  # torch 2.13 renamed the option:
    no_sync = "forward_sync_buffers" if "forward_sync_buffers" in names else "broadcast_buffers"
    return DistributedDataParallel(model, device_ids=ids, **{no_sync: False})  # buffers (masks) are constants
