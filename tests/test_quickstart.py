"""The main job (`archer quickstart`), end to end on a budget of seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from archer_agents.cli.quickstart import quickstart


@pytest.mark.parametrize(("processes", "teacher"), [(1, "weak"), (2, "expert")])
def test_quickstart_writes_every_result_of_the_main_job(
    tmp_path: Path, processes: int, teacher: str
) -> None:
    """In one process, or with ArCHer trained by two spawned processes (the default here);
    cloning the expert (the default) or the weak teacher, when the expert gets a row of its own."""
    out = tmp_path / "run"
    summary = quickstart(
        out,
        processes=processes,
        teacher=teacher,
        data_episodes=16,
        bc_steps=2,
        archer_minutes=0.05,
        eval_episodes=8,
        overrides=[
            "trainer.episodes_per_iteration=8",
            "trainer.num_envs=8",
            "trainer.eval_episodes=4",
        ],
    )
    rows = summary["rows"]
    expected = ["random", f"{teacher} scripted (teacher)", "behaviour-cloned", "ArCHer"]
    assert list(rows) == expected + ([] if teacher == "expert" else ["expert scripted"])
    assert all(row["episodes"] == 8 for row in rows.values())
    expert = rows["expert scripted" if teacher == "weak" else "expert scripted (teacher)"]
    assert expert["success"]["mean"] == 1.0
    # The gap is measured to the expert whichever agent was cloned.
    bc, archer = (rows[name]["mean_return"]["mean"] for name in ("behaviour-cloned", "ArCHer"))
    gap = expert["mean_return"]["mean"] - bc
    assert gap > 0 and summary["gap_closed"] == pytest.approx((archer - bc) / gap)
    assert summary["teacher"] == teacher
    assert summary["iterations"] >= 1 and summary["episodes"] == 8 * summary["iterations"]
    assert summary["processes"] == processes
    assert json.loads((out / "run.json").read_text())["model"] == str(out / "bc_policy")
    assert json.loads((out / "summary.json").read_text())["gap_closed"] == summary["gap_closed"]
    logs = (f"{teacher}_episodes.jsonl", "episodes.jsonl", "metrics.jsonl", "learning_curve.png")
    for name in logs:
        assert (out / name).stat().st_size > 0, name
    for name in ("model", "bc_policy", "policy"):
        assert (out / name / "tokenizer.json").is_file(), name
    # The demo tokenizer merges within lines: an answered question is one token.
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    assert len(tokenizer.encode("Is it alive? No.\n")) == 1


class _Stop(Exception):
    pass


def test_quickstart_passes_the_merge_scope_to_the_model_it_builds(
    tmp_path: Path, monkeypatch
) -> None:
    import archer_agents.policies.tiny_model

    seen = []

    def record(*args, **kwargs):
        seen.append(kwargs["merge_within"])
        raise _Stop

    monkeypatch.setattr(archer_agents.policies.tiny_model, "init_model", record)
    for scope in ("word", "line"):
        with pytest.raises(_Stop):
            quickstart(tmp_path / scope, merge_within=scope)
    assert seen == ["word", "line"]


def test_a_failed_archer_process_ends_the_quickstart_with_a_clear_error(
    tmp_path: Path, monkeypatch
) -> None:
    """What a process of the ArCHer phase raised is named, with where its checkpoints are."""
    import archer_agents.training.spawn as spawn
    from archer_agents.cli.app import UserError

    def fail(function, args, processes, threads=1):
        raise spawn.ProcessFailed(
            1, "RuntimeError: gloo connection reset", "Traceback ...\nRuntimeError: gloo ..."
        )

    monkeypatch.setattr(spawn, "run_processes", fail)
    out = tmp_path / "run"
    with pytest.raises(UserError) as failure:
        quickstart(out, processes=2, data_episodes=8, bc_steps=1, eval_episodes=4)
    message = str(failure.value)
    assert "the ArCHer phase stopped: process 1 failed" in message
    assert "RuntimeError: gloo connection reset" in message
    assert str(out / "checkpoints") in message and "--processes 1" in message
    assert (out / "bc_policy" / "tokenizer.json").is_file()  # the phases before it are kept


def test_the_archer_phase_takes_two_processes_where_there_are_two_cores(monkeypatch) -> None:
    from archer_agents.cli import quickstart as module

    for cores, expected in (({0}, 1), ({0, 1}, 2), (set(range(16)), 2)):
        monkeypatch.setattr(module.os, "sched_getaffinity", lambda _, cores=cores: cores)
        assert module.default_processes() == expected
