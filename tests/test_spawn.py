"""`run_processes`: spawned processes form one group; a failure in any of them is raised."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from archer_agents.training.spawn import ProcessFailed, run_processes


def report_group(folder: str) -> None:
    """Write what this process sees of its group (and one all-reduce) to a file."""
    import torch

    from archer_agents.training.distributed import Distributed

    group = Distributed.from_environment(cpu=True)
    total = torch.tensor([float(group.rank + 1)])
    torch.distributed.all_reduce(total)
    report = {
        "rank": group.rank,
        "world": group.world_size,
        "sum": total.item(),
        "threads": torch.get_num_threads(),
        "pid": os.getpid(),
    }
    Path(folder, f"rank{group.rank}.json").write_text(json.dumps(report))


def fail_in_process_one(folder: str) -> None:
    if os.environ["RANK"] == "1":
        raise ValueError("bad input in process one")
    Path(folder, "rank0.done").write_text("ok")


def kill_process_one() -> None:
    if os.environ["RANK"] == "1":
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_spawned_processes_form_one_group(tmp_path: Path) -> None:
    run_processes(report_group, (str(tmp_path),), 2)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in reports] == [0, 1]
    assert all(r["world"] == 2 and r["sum"] == 3.0 and r["threads"] == 1 for r in reports)
    assert len({r["pid"] for r in reports} | {os.getpid()}) == 3  # two fresh processes


def test_one_process_runs_here(tmp_path: Path) -> None:
    seen: list[int] = []
    run_processes(seen.append, (7,), 1)
    assert seen == [7]
    with pytest.raises(ValueError, match="at least 1"):
        run_processes(seen.append, (7,), 0)


@pytest.mark.slow
def test_an_exception_in_one_process_is_raised_with_its_traceback(tmp_path: Path) -> None:
    with pytest.raises(ProcessFailed, match="process 1 failed") as failure:
        run_processes(fail_in_process_one, (str(tmp_path),), 2)
    assert failure.value.rank == 1
    assert failure.value.detail == "ValueError: bad input in process one"
    assert "in fail_in_process_one" in failure.value.traceback


@pytest.mark.slow
def test_a_killed_process_is_reported_with_its_signal() -> None:
    with pytest.raises(ProcessFailed, match="killed by signal SIGKILL"):
        run_processes(kill_process_one, (), 2)
