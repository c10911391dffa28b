"""Several training processes acting as one: rollouts split, gradients averaged, equal state.

docs/algorithm.md (defect 6) records how the public ArCHer code ran on several
GPUs: only rank 0 collected rollouts and the buffer travelled through files
with sleeps. Here every process holds the whole algorithm (policy, critic,
optimisers, replay buffer) and collectives keep the copies equal:

- Parameters start equal: the trainer broadcasts process 0's
  (`Distributed.broadcast_module`).
- Each process collects its share of an iteration's episodes, with its own
  episode seeds, then every process receives all of them in process order
  (`Distributed.gather`), so each `observe` sees the same list and every
  replay buffer holds the same transitions.
- Every optimiser step uses the gradient averaged over the processes
  (`average_gradients`, called by `updates.clip_and_step` before clipping), so
  each process's Adam state, clipped step and Polyak target update are the
  same function of the same numbers and the parameters stay equal.
- Samplers whose generators are equal on every process (the replay buffer's,
  an algorithm's own) draw the same minibatch everywhere and each process
  keeps its share (`shard`), like `torch.utils.data.DistributedSampler`: the
  processes together do the work of one batch, and a batch size means what it
  means in one process.
- Sampling utterances (rollouts, ArCHer's fresh a_pi) uses a generator seeded
  per process, so the processes' rollouts are not copies of each other; what
  each process samples only enters the averaged gradient.

The trainer (`training.trainer`) finds its process group itself, so a
training command runs as several processes unchanged::

    accelerate launch --multi_gpu --num_processes 2 -m archer_agents.cli train ...
    torchrun --nproc-per-node 2 -m archer_agents.cli train ...

(``--multi_gpu`` selects accelerate's multi-process launcher; on a machine
without GPUs its processes run on the CPU and talk over gloo.) Only process 0
writes the run directory; on resume every process loads the same checkpoint,
which also holds each process's random state.

The process group comes from `accelerate` (``PartialState``), which reads what
``accelerate launch`` or ``torchrun`` put in the environment and uses gloo for
models on the CPU, NCCL on GPUs. This is data parallelism as in PyTorch's DDP:
every process holds full copies of the weights, so FSDP and DeepSpeed (which
shard them) are refused with a message rather than silently ignored.

In a single process `Distributed.from_environment` returns a context whose
collectives return at once, without importing accelerate, and `shard` and
`average_gradients` check one flag of ``torch.distributed`` and return.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from archer_agents.training.checkpoint import capture_rng_state, restore_rng_state

logger = logging.getLogger(__name__)

T = TypeVar("T")

WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
"""Where launchers record the number of processes (torchrun and accelerate; MPI flavours)."""
TRAIN_EXTRA = "pip install 'archer-agents[train]'"
BUCKET_ELEMENTS = 1 << 24
"""Most gradient elements all-reduced in one call (64 MiB in float32), as DDP buckets them."""


RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK")
"""Where launchers record this process's rank."""


def _launcher_value(names: Sequence[str], default: int) -> int:
    """The first of the launcher variables ``names`` that is set, as an int, else ``default``."""
    for name in names:
        value = os.environ.get(name)
        if value:
            return int(value)
    return default


def launched_world_size() -> int:
    """The number of processes a launcher started this one among (1 without a launcher)."""
    return _launcher_value(WORLD_SIZE_VARIABLES, 1)


def launched_rank() -> int:
    """This process's rank among those a launcher started (0 without a launcher)."""
    return _launcher_value(RANK_VARIABLES, 0)


def process_group() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(items: Sequence[T]) -> list[T]:
    """This process's share of a batch that every process drew alike: every world_size-th item.

    Shares differ in size by one item at most. In one process: all of ``items``.
    """
    rank, world_size = process_group()
    if world_size == 1:
        return list(items)
    if len(items) < world_size:
        raise ValueError(
            f"a batch of {len(items)} cannot be split across {world_size} processes (each needs "
            f"at least one item); raise the batch size to at least {world_size} or run fewer "
            "processes"
        )
    return list(items[rank::world_size])


def average_gradients(parameters: Sequence[torch.Tensor]) -> None:
    """Replace each parameter's gradient by its mean over the processes (in place).

    A process whose loss did not reach a parameter counts as a zero gradient
    for it; a parameter that no process's loss reached keeps no gradient, so
    the optimiser skips it as it would in one process. Gradients travel in a
    few flat buckets (by device and dtype), not one call per tensor. Nothing
    happens without a process group of two or more.
    """
    _, world_size = process_group()
    if world_size == 1 or not parameters:
        return
    # How many processes have a gradient for each parameter: (P,)
    present = torch.tensor(
        [p.grad is not None for p in parameters], dtype=torch.float32, device=parameters[0].device
    )
    dist.all_reduce(present)
    reached = [p for p, count in zip(parameters, present.tolist(), strict=True) if count > 0]
    for parameter in reached:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
    buckets: dict[tuple[torch.device, torch.dtype], list[list[torch.Tensor]]] = {}
    for parameter in reached:
        grad = parameter.grad
        assert grad is not None
        groups = buckets.setdefault((grad.device, grad.dtype), [[]])
        if sum(g.numel() for g in groups[-1]) + grad.numel() > BUCKET_ELEMENTS and groups[-1]:
            groups.append([])
        groups[-1].append(grad)
    for groups in buckets.values():
        for grads in groups:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= world_size
            offset = 0
            for grad in grads:
                grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
                offset += grad.numel()


def broadcast_module(module: nn.Module) -> None:
    """Copy process 0's parameters and buffers into every process's ``module`` (in place).

    Nothing happens without a process group of two or more.
    """
    if process_group()[1] == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


LEAVE_TIMEOUT_S = 30.0
"""How long a process waits at exit for the others before it leaves the group anyway."""


def _leave_process_group() -> None:
    """Tear the process group down before the interpreter exits.

    A gloo group left to the interpreter's teardown can abort the process
    ("terminate called without an active exception") after a clean run, and so
    can one destroyed while another process still talks to it: the processes
    first wait for each other, a bounded time (a process that failed never
    arrives), then each leaves.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        dist.monitored_barrier(timeout=timedelta(seconds=LEAVE_TIMEOUT_S))
    except Exception:  # a process that failed or left already: leave anyway
        logger.debug("not every process reached the end; leaving the group", exc_info=True)
    dist.destroy_process_group()


@dataclass(frozen=True)
class Distributed:
    """Which process this is among those training together, and the collectives the trainer uses.

    The default (rank 0 of 1) is one process: every method returns at once.
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    """The device this process should hold its models on (its own GPU under NCCL)."""

    @classmethod
    def from_environment(cls, *, cpu: bool = False) -> Distributed:
        """The process group a launcher set up (accelerate launch, torchrun), or one process.

        ``cpu`` asks for gloo even where GPUs exist (the models live on the
        CPU). On GPUs, load the models on ``from_environment().device`` before
        building the trainer: each process needs its own GPU.
        """
        if launched_world_size() <= 1 and not (dist.is_available() and dist.is_initialized()):
            return cls()
        if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" or (
            os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
        ):
            raise ValueError(
                "the trainer runs data-parallel (every process holds the whole model and the "
                "gradients are averaged, as with DDP); FSDP and DeepSpeed shard the model, which "
                "it does not support: launch without --use_fsdp / --use_deepspeed (or an "
                "accelerate config that selects them)"
            )
        try:
            from accelerate import PartialState
        except ImportError as error:
            raise ImportError(
                "training in several processes sets up its process group with accelerate, which "
                f"is not installed. Install it with: pip install accelerate (or {TRAIN_EXTRA})"
            ) from error
        state = PartialState(cpu=cpu)
        if state.num_processes == 1:
            return cls()
        atexit.register(_leave_process_group)
        logger.info(
            "process %d of %d (%s, backend %s)",
            state.process_index,
            state.num_processes,
            state.device,
            state.backend,
        )
        return cls(rank=state.process_index, world_size=state.num_processes, device=state.device)

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Process 0, the one that writes the run's files."""
        return self.rank == 0

    def split(self, total: int) -> tuple[int, int]:
        """(offset, count) of this process's contiguous share of ``total`` items.

        Process r takes items offset .. offset + count - 1; the first
        ``total % world_size`` processes take one more. A share may be empty.
        """
        base, extra = divmod(total, self.world_size)
        return self.rank * base + min(self.rank, extra), base + (self.rank < extra)

    def gather(self, value: T) -> list[T]:
        """Every process's ``value`` (picklable), in process order, on every process."""
        if not self.enabled:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def broadcast(self, value: T) -> T:
        """Process 0's ``value`` (picklable) on every process."""
        if not self.enabled:
            return value
        box: list[Any] = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy process 0's parameters and buffers into every process's ``module`` (in place)."""
        broadcast_module(module)

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.enabled:
            dist.barrier()

    def mean_metrics(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Each metric averaged over the processes that report it (each saw its own shard)."""
        if not self.enabled:
            return dict(metrics)
        reports = self.gather(dict(metrics))
        keys = list(dict.fromkeys(key for report in reports for key in report))
        return {
            key: sum(float(r[key]) for r in reports if key in r)
            / sum(1 for r in reports if key in r)
            for key in keys
        }


# ------------------------------------------------------ the trainer's plumbing ---


def main_decides(distributed: Distributed, decide: Callable[[], T]) -> T:
    """``decide()`` run by process 0 alone; its result, or the error it raised, everywhere.

    Every process must call it; the others raise process 0's error too, so no
    process is left waiting in a collective.
    """
    if distributed.is_main:
        try:
            value = decide()
        except BaseException as error:
            distributed.broadcast(error)
            raise
        distributed.broadcast(value)
        return value
    told: Any = distributed.broadcast(None)
    if isinstance(told, BaseException):
        raise told
    return told  # type: ignore[no-any-return]


def play_shares(
    distributed: Distributed,
    total: int,
    task_ids: Sequence[str] | None,
    play: Callable[[int, int, Sequence[str] | None], tuple[list[T], int]],
) -> tuple[list[T], int]:
    """``total`` episodes played in contiguous shares, all of them on every process.

    ``play(count, offset, task_ids)`` plays this process's ``count`` episodes,
    the first being episode ``offset`` (so it seeds with seed + offset); the
    task ids are rotated so that the share's first episode plays task
    ``task_ids[offset % len]``. Returns every process's episodes in process
    order and the tokens generated in all.
    """
    offset, count = distributed.split(total)
    mine: tuple[list[T], int] = ([], 0)
    if count:
        if task_ids:
            cut = offset % len(task_ids)
            task_ids = [*task_ids[cut:], *task_ids[:cut]]
        mine = play(count, offset, task_ids)
    shares = distributed.gather(mine)
    return [item for share, _ in shares for item in share], sum(tokens for _, tokens in shares)


def check_devices(modules: Sequence[nn.Module], distributed: Distributed) -> None:
    """Each process trains on its own GPU; models left on another one would collide there."""
    elsewhere = {
        p.device
        for m in modules
        for p in m.parameters()
        if p.device.type == distributed.device.type and p.device != distributed.device
    }
    if elsewhere:
        raise ValueError(
            f"process {distributed.rank} should hold its models on {distributed.device} but some "
            f"are on {sorted(map(str, elsewhere))}; load the policy and critic on "
            "Distributed.from_environment().device before building the Trainer"
        )


def random_state(generator: torch.Generator | None) -> dict[str, Any]:
    """This process's global RNGs and its policy's sampling generator (for a checkpoint)."""
    return {
        "rng": capture_rng_state(),
        "policy_generator": None if generator is None else generator.get_state(),
    }


def separate_randomness(
    distributed: Distributed,
    generator: torch.Generator | None,
    saved: Sequence[dict[str, Any]] | None,
    *,
    seed: int,
    iteration: int,
) -> None:
    """Give every process its own random draws, or restore each one's from a checkpoint.

    With equal generators the processes would sample the same utterance for
    the same observation (every episode's first turn), and their rollouts
    would repeat each other. Process 0 keeps the one-process draws; the
    others are seeded from (seed, rank, iteration). ``saved`` (each process's
    `random_state`, from a checkpoint) written by as many processes restores
    each one's own state, so a resumed run draws what an uninterrupted one would.
    """
    if saved is not None and len(saved) == distributed.world_size:
        own = saved[distributed.rank]
        restore_rng_state(own["rng"])
        if generator is not None and own["policy_generator"] is not None:
            generator.set_state(own["policy_generator"])
        return
    if saved is not None and distributed.is_main:
        logger.warning(
            "the checkpoint was written by %d processes and this run has %d: processes other "
            "than 0 start new random streams",
            len(saved),
            distributed.world_size,
        )
    if distributed.is_main:
        return
    entropy = [seed, distributed.rank, iteration]
    process_seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
    random.seed(process_seed)
    np.random.seed(process_seed)
    torch.manual_seed(process_seed)
    if generator is not None:
        generator.manual_seed(process_seed)


__all__ = [
    "Distributed",
    "average_gradients",
    "broadcast_module",
    "check_devices",
    "launched_world_size",
    "main_decides",
    "play_shares",
    "process_group",
    "random_state",
    "separate_randomness",
    "shard",
]
