"""Start several training processes on this machine from Python, as ``torchrun`` would.

`run_processes` runs one function in fresh (spawned) processes that form one
process group: each gets the variables a launcher sets (RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so `Distributed.from_environment`
finds its group exactly as under ``torchrun --nproc-per-node N`` or
``accelerate launch``. It is how ``archer quickstart --processes 2`` uses both
cores of a small machine without a second command; on several machines, use
the launchers.

When a process fails, the others are stopped and the failure is raised here:
`ProcessFailed` names the process and its error (or its exit signal, when it
was killed) and carries the process's traceback.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

import torch.multiprocessing as mp


class ProcessFailed(RuntimeError):
    """One of the processes raised or was killed; the others have been stopped."""

    def __init__(self, rank: int, detail: str, traceback: str = "") -> None:
        super().__init__(f"process {rank} failed: {detail}")
        self.rank = rank
        self.detail = detail
        """The error's last line, or how the process ended."""
        self.traceback = traceback
        """The failed process's traceback, when it raised."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def launcher_environment(rank: int, processes: int, port: int) -> dict[str, str]:
    """The variables torchrun sets for process ``rank`` of ``processes`` on one machine."""
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(processes),
        "LOCAL_WORLD_SIZE": str(processes),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def run_processes(
    function: Callable[..., Any],
    args: Sequence[Any],
    processes: int,
    *,
    threads: int = 1,
) -> None:
    """Run ``function(*args)`` in ``processes`` spawned processes of one group; wait for all.

    ``function`` and ``args`` must be picklable (a module-level function and
    plain values). Each process uses ``threads`` torch threads. With one
    process the function runs here, in this process.
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    if processes == 1:
        function(*args)
        return
    port = free_port()
    try:
        mp.start_processes(
            _worker,
            args=(function, tuple(args), processes, port, threads),
            nprocs=processes,
            join=True,
            start_method="spawn",
        )
    except mp.ProcessRaisedException as error:
        lines = [line for line in error.msg.strip().splitlines() if line.strip()]
        raise ProcessFailed(error.error_index, lines[-1], error.msg.strip()) from None
    except mp.ProcessExitedException as error:
        detail = (
            f"killed by signal {error.signal_name}"
            if error.signal_name
            else f"exit code {error.exit_code}"
        )
        raise ProcessFailed(error.error_index, detail) from None


def _worker(
    rank: int,
    function: Callable[..., Any],
    args: tuple[Any, ...],
    processes: int,
    port: int,
    threads: int,
) -> None:
    import torch

    os.environ.update(launcher_environment(rank, processes, port))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    function(*args)
