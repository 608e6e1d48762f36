"""The processes of a run: this process's place in a `torchrun` job (`Distributed`: the process group,
collectives across processes), shared by the training stage's DDP and pseudolabel's classifiers and
passes, and the Ctrl-C / SIGTERM handling that stops training between steps (`StopRequest`)."""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import Tensor

from models.device import resolve_device

# How long a collective may wait for the other processes. The first process often works alone while the
# others wait in one: it decodes a folder of videos (predict), builds a frozen backbone's cache (train),
# trains a classifier between two passes (pseudolabel) -- hours at AVE scale, where torch's defaults
# (30 min for gloo, 10 for NCCL) would end the job. A process that dies does not leave the others
# waiting that long: torchrun stops the whole job when one of its processes fails.
WAIT_FOR_OTHERS = timedelta(hours=48)


@dataclass
class Distributed:
    """This process's place in a `torchrun` job (world_size 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False
    uses_cuda: bool = False  # NCCL: collectives need their tensors on this process's GPU

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, device_name: str, timeout: timedelta = WAIT_FOR_OTHERS) -> "Distributed":
        """`timeout`: how long a collective may wait for the other processes."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        owns = False
        if not dist.is_initialized():
            use_cuda = device_name != "cpu" and torch.cuda.is_available()
            if use_cuda:
                torch.cuda.set_device(local_rank)
            dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timeout)
            owns = True
        return cls(rank, world_size, local_rank, owns, dist.get_backend() == "nccl")

    def device(self, name: str) -> torch.device:
        device = resolve_device(name)
        if self.active and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def any_true(self, flag: bool) -> bool:
        """True on every process when `flag` is true on one of them (all stop at the same step)."""
        if not self.active:
            return flag
        value = self._to_comm(torch.tensor([1.0 if flag else 0.0]))
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def sum(self, values: Tensor) -> Tensor:
        if not self.active:
            return values
        reduced = self._to_comm(values.clone())
        dist.all_reduce(reduced)
        return reduced.to(values.device)

    def average_gradients(self, parameters: list[Tensor]) -> None:
        """Replace each parameter's gradient by its mean over the processes, in one collective. A
        parameter without a gradient here counts as zero, so every process reduces the same buffer."""
        if not self.active or not parameters:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = self._to_comm(torch.cat([g.reshape(-1) for g in grads]))
        dist.all_reduce(flat)
        flat = flat.to(parameters[0].device).div_(self.world_size)
        offset = 0
        for p in parameters:
            n = p.numel()
            mean = flat[offset : offset + n].view_as(p)
            if p.grad is not None:
                p.grad.copy_(mean)  # in place: no new tensor per parameter and step
            else:
                p.grad = mean.clone()  # its own storage, not a view of this step's buffer
            offset += n

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """The first process's buffers (BatchNorm's running statistics) on every process."""
        if not self.active:
            return
        for buffer in module.buffers():
            if buffer.numel():
                shared = self._to_comm(buffer.detach().clone())
                dist.broadcast(shared, src=0)
                buffer.data.copy_(shared.to(buffer.device))

    def _to_comm(self, tensor: Tensor) -> Tensor:
        return tensor.to(torch.device("cuda", self.local_rank)) if self.uses_cuda else tensor

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """The first process's `value` (any picklable object), on every process."""
        if not self.active:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self._object_device())
        return box[0]

    def gather(self, values: list[Any]) -> list[Any]:
        """Every process's `values` (picklable), concatenated in rank order, on the first process
        (an empty list elsewhere)."""
        if not self.active:
            return list(values)
        boxes: list[Any] = [None] * self.world_size if self.is_main else []
        dist.gather_object(values, boxes if self.is_main else None, dst=0)
        return [value for box in boxes for value in box] if self.is_main else []

    def _object_device(self) -> torch.device | None:
        return torch.device("cuda", self.local_rank) if self.uses_cuda else None

    def close(self, finished: bool = True) -> None:
        """Leave the job. After a run that `finished` here, first wait until every process has: one that
        tore its connections down while the first still worked was seen to abort under load, in gloo's
        shutdown ("terminate called without an active exception"; most likely its last message, its
        share of a gather, was not yet read), and torchrun then stops the first process in the middle of
        its writes. After an error, leave at once: the others may wait in another collective and would
        never reach this barrier."""
        if not (self.owns_group and dist.is_initialized()):
            return
        if finished and self.active:
            dist.barrier()
        dist.destroy_process_group()

    def __enter__(self) -> "Distributed":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> None:
        self.close(finished=kind is None)


class StopRequest:
    """Ctrl-C / SIGTERM set a flag checked between steps, so no step is left half-applied; a second
    Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    @contextmanager
    def installed(self) -> Iterator["StopRequest"]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        try:
            yield self
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
