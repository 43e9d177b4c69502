"""The world of ranks a process belongs to: torch.distributed's process groups, each owned by one thread.

A rank joins with `join(scenario)`, from the environment torch's launcher sets (`RANK`, `WORLD_SIZE`,
`LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`): the one `executor.launch` starts on this machine, or an
outside `torchrun` or SLURM job. The backend is `[distributed] backend` (auto: nccl on CUDA, gloo on the
CPU); every collective times out after `distributed.timeout_s`, so a rank that froze ends the run instead of
hanging it. On CUDA each rank takes `cuda:LOCAL_RANK` (`torch.cuda.set_device` before anything else).

Two threads on one process group silently pair different collectives (seen with gloo: rank 0's averaging
all-reduce met rank 1's gradient all-reduce). So every group is an `OwnedGroup`: the first thread that uses
it owns it, and another thread's use raises `GroupMisuse`. The main thread owns `World.main` (clock
alignment, the final gather); the rank's communicator owns `World.comm`; DDP's own group, used only inside
DistributedDataParallel's constructor, is `World.ddp`. Push gossip's group, `World.push` (created only for
`distributed.gossip_mode = "push"`), is a `PushGroup`: point-to-point only, one thread sends on it and one
other receives (point-to-point messages pair by sender and tag, not by order, so the two roles cannot pair
the wrong operations; each role is still owned by one thread).

Clocks: `align_clocks` measures, for each rank, the offset from its `perf_counter` to rank 0's by ping-pong
over the main group (the round trip with the shortest time bounds the error by half of it), so spans of all
ranks merge onto rank 0's clock. On one machine every process reads the same monotonic clock, so the
measured offset is itself the alignment error (tests check it against the bound).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from pdasgd.scenario import Scenario

ALIGN_ROUNDS = 16
ENV_KEYS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class GroupMisuse(RuntimeError):
    """A second thread used a process group that another thread owns."""


class OwnedGroup:
    """A process group that only the thread that first uses it may use (module docstring)."""

    def __init__(self, group: Any, name: str) -> None:
        self.group = group
        self.name = name
        self._owner: int | None = None
        self._owner_name = ""
        self._lock = threading.Lock()

    def check(self) -> None:
        me = threading.get_ident()
        with self._lock:
            if self._owner is None:
                self._owner, self._owner_name = me, threading.current_thread().name
            elif self._owner != me:
                raise GroupMisuse(
                    f"process group {self.name!r} is used by thread {threading.current_thread().name!r} but "
                    f"belongs to thread {self._owner_name!r}: two threads on one group pair different "
                    "collectives"
                )

    def all_reduce(self, tensor: torch.Tensor) -> None:
        self.check()
        dist.all_reduce(tensor, group=self.group)

    def send(self, tensor: torch.Tensor, to: int, tag: int = 0) -> None:
        self.check()
        dist.send(tensor, to, group=self.group, tag=tag)

    def recv(self, tensor: torch.Tensor, source: int, tag: int = 0) -> None:
        self.check()
        dist.recv(tensor, source, group=self.group, tag=tag)

    def all_gather(self, tensor: torch.Tensor, size: int) -> list[torch.Tensor]:
        self.check()
        gathered = [torch.empty_like(tensor) for _ in range(size)]
        dist.all_gather(gathered, tensor, group=self.group)
        return gathered

    def exchange(self, send: torch.Tensor, receive: torch.Tensor, peer: int) -> None:
        """Swap `send` for the peer's into `receive` (both sides call it with each other's rank)."""
        self.check()
        ops = [
            dist.P2POp(dist.isend, send, peer, self.group),
            dist.P2POp(dist.irecv, receive, peer, self.group),
        ]
        for request in dist.batch_isend_irecv(ops):
            request.wait()

    def gather_object(self, value: Any, rank: int, size: int) -> list[Any] | None:
        self.check()
        gathered: list[Any] | None = [None] * size if rank == 0 else None
        dist.gather_object(value, gathered, dst=0, group=self.group)
        return gathered

    def barrier(self) -> None:
        self.check()
        dist.barrier(group=self.group)


class PushGroup:
    """A group for point-to-point messages only: one thread sends, another receives (module docstring)."""

    def __init__(self, group: Any, name: str) -> None:
        self.sending = OwnedGroup(group, f"{name} (sending)")
        self.receiving = OwnedGroup(group, f"{name} (receiving)")

    def send(self, tensor: torch.Tensor, to: int, tag: int = 0) -> None:
        self.sending.send(tensor, to, tag)

    def recv(self, tensor: torch.Tensor, source: int, tag: int = 0) -> None:
        self.receiving.recv(tensor, source, tag)

    def recv_any(self, tensor: torch.Tensor, tag: int = 0) -> int:
        """Receive from whichever rank sends first (gloo; nccl cannot); returns the sender's rank."""
        self.receiving.check()
        return dist.recv(tensor, None, group=self.receiving.group, tag=tag)


@dataclass
class World:
    """This process's rank in the world, its device and its groups."""

    rank: int
    size: int
    local_rank: int
    backend: str
    device: torch.device
    main: OwnedGroup
    comm: OwnedGroup
    ddp: Any
    push: PushGroup | None = None
    offset_s: float = 0.0  # add to this rank's perf_counter to get rank 0's
    offset_bound_s: float = 0.0  # half the shortest round trip: the alignment's error bound

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def in_world() -> bool:
    """Whether torch's launcher (ours, torchrun or SLURM via torchrun) started this process as a rank."""
    return all(key in os.environ for key in ENV_KEYS)


def backend_for(scenario: Scenario, device: torch.device) -> str:
    chosen = scenario.distributed.backend
    if chosen == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    return chosen


def rank_device(scenario: Scenario, local_rank: int) -> torch.device:
    """cuda:LOCAL_RANK for a CUDA scenario (ValueError if there is no such device), else the CPU."""
    wanted = scenario.train.device
    cuda = wanted.startswith("cuda") or (wanted == "auto" and torch.cuda.is_available())
    if not cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"train.device: {wanted} requested but torch sees no CUDA device")
    if local_rank >= torch.cuda.device_count():
        raise ValueError(
            f"workers.replicas: local rank {local_rank} has no GPU of its own "
            f"({torch.cuda.device_count()} CUDA devices on this machine)"
        )
    return torch.device("cuda", local_rank)


def join(scenario: Scenario) -> World:
    """Join the world the environment describes (module docstring)."""
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if size != scenario.workers.replicas:
        raise ValueError(
            f"workers.replicas: the scenario has {scenario.workers.replicas} ranks but the world has {size}"
        )
    device = rank_device(scenario, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before any collective or point-to-point op
    backend = backend_for(scenario, device)
    if backend == "nccl" and scenario.definition.gossip and scenario.distributed.gossip_mode == "push":
        raise ValueError(
            "distributed.gossip_mode: push receives from any sender, which nccl cannot; set "
            "distributed.backend = 'gloo' or gossip_mode = 'exchange'"
        )
    timeout = datetime.timedelta(seconds=scenario.distributed.timeout_s)
    options: dict[str, Any] = {"device_id": device} if backend == "nccl" else {}
    try:
        with _native_stderr_held() as held:  # c10d logs every failed connect, with a C++ stack, to fd 2
            dist.init_process_group(backend, rank=rank, world_size=size, timeout=timeout, **options)
        held.release()
    except (RuntimeError, ValueError, OSError) as error:  # DistNetworkError, DistStoreError among them
        where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        reason = " ".join(str(error).split())[:200]
        raise ValueError(
            f"distributed: rank {rank} of {size} cannot join the world at {where} (MASTER_ADDR, MASTER_PORT) "
            f"within distributed.timeout_s = {scenario.distributed.timeout_s:g} s: {reason}"
        ) from None
    main = OwnedGroup(dist.group.WORLD, "main")
    comm = OwnedGroup(dist.new_group(backend=backend, timeout=timeout), "comm")
    ddp = dist.new_group(backend=backend, timeout=timeout)
    push = None
    if scenario.definition.gossip and scenario.distributed.gossip_mode == "push":
        push = PushGroup(dist.new_group(backend=backend, timeout=timeout), "push")
    return World(rank, size, local_rank, backend, device, main, comm, ddp, push)


class _Held:
    """What the C++ side wrote to fd 2 while held; `release` writes it out (on success nothing is lost)."""

    def __init__(self, file: Any) -> None:
        self.file = file

    def release(self) -> None:
        self.file.seek(0)
        text = self.file.read()
        if text:
            sys.stderr.write(text.decode(errors="replace"))
        self.file.close()


@contextlib.contextmanager
def _native_stderr_held() -> Iterator[_Held]:
    """Send fd 2 to a temporary file for the block, so a failure can be said in one line instead."""
    sys.stderr.flush()
    saved = os.dup(2)
    held = _Held(tempfile.TemporaryFile())
    os.dup2(held.file.fileno(), 2)
    try:
        yield held
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def align_clocks(world: World, rounds: int = ALIGN_ROUNDS) -> None:
    """Measure this rank's clock offset to rank 0 (module docstring); rank 0 echoes every other rank."""
    stamp = torch.zeros(1, dtype=torch.float64, device=_p2p_device(world))
    if world.rank == 0:
        for other in range(1, world.size):
            for _ in range(rounds):
                world.main.recv(stamp, other)
                stamp.fill_(time.perf_counter())
                world.main.send(stamp, other)
        return
    best_s = float("inf")
    for _ in range(rounds):
        sent_s = time.perf_counter()
        stamp.fill_(sent_s)
        world.main.send(stamp, 0)
        world.main.recv(stamp, 0)
        back_s = time.perf_counter()
        if back_s - sent_s < best_s:
            best_s = back_s - sent_s
            world.offset_s = float(stamp.item()) - (sent_s + back_s) / 2
    world.offset_bound_s = best_s / 2


def probe_allreduce(world: World, nbytes: int, rounds: int = 5) -> dict[str, float]:
    """The real network's all-reduce cost, measured once at the start over the main group: the median
    time of an all-reduce of 8 bytes (the latency) and of `nbytes` (the model), as latency + bytes / rate."""
    device = _p2p_device(world)

    def median_s(numel: int) -> float:
        tensor = torch.zeros(max(2, numel), dtype=torch.float32, device=device)
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            world.main.all_reduce(tensor)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]

    latency_s = median_s(2)
    model_s = median_s(nbytes // 4)
    per_byte_s = max(0.0, model_s - latency_s) / max(1, nbytes)
    return {
        "latency_s": latency_s,
        "bytes_per_s": 1.0 / per_byte_s if per_byte_s > 0 else 0.0,
        "bytes": nbytes,
    }


def _p2p_device(world: World) -> torch.device:
    return world.device if world.backend == "nccl" else torch.device("cpu")
