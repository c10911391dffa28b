"""Atomic checkpoints: round trip, keep-K, crashes between writes, corruption, RNG restore."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from archer_agents.critic.encoders import HashingEncoder
from archer_agents.critic.model import DoubleCritic, make_target
from archer_agents.data.schema import Transition
from archer_agents.training import checkpoint as ckpt
from archer_agents.training.checkpoint import (
    CheckpointError,
    capture_rng_state,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    restore_rng_state,
    save_checkpoint,
    verify_checkpoint,
    write_text_atomic,
)
from archer_agents.training.replay_buffer import ReplayBuffer


def crash(*args: object) -> None:
    """Stands in for a write that the process never got to: it was killed first."""
    raise KeyboardInterrupt("killed between writes")


def small_state(step: int) -> dict:
    return {"step": step, "weights": torch.full((4,), float(step))}


def test_round_trip_of_a_training_state(tmp_path: Path) -> None:
    critic = DoubleCritic(HashingEncoder(hidden_size=8, num_buckets=64, seed=0), hidden_size=8)
    target = make_target(critic)
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3)
    critic.v(["a", "b"]).sum().backward()
    optimizer.step()
    buffer = ReplayBuffer(capacity=4, seed=0)
    buffer.add(Transition(observation="o", action="a", reward=1.0, next_observation="p"))
    state = {
        "critic": critic.state_dict(),
        "target_critic": target.state_dict(),
        "critic_optimizer": optimizer.state_dict(),
        "replay_buffer": buffer.state_dict(),
        "rng": capture_rng_state(),
        "counters": {"iteration": 7, "episodes": 123},
    }
    folder = save_checkpoint(tmp_path, state, step=7)
    assert folder == tmp_path / "step-000007"
    assert (tmp_path / "latest").read_text().strip() == "step-000007"

    loaded = load_latest(tmp_path)  # weights_only=True: plain values and tensors only
    assert loaded is not None and loaded.step == 7 and loaded.path == folder
    restored = DoubleCritic(HashingEncoder(hidden_size=8, num_buckets=64, seed=1), hidden_size=8)
    restored.load_state_dict(loaded.state["critic"])
    with torch.no_grad():
        torch.testing.assert_close(restored.q(["x"], ["y"]), critic.q(["x"], ["y"]))
    fresh_optimizer = torch.optim.Adam(restored.parameters(), lr=1e-3)
    fresh_optimizer.load_state_dict(loaded.state["critic_optimizer"])
    assert loaded.state["counters"] == {"iteration": 7, "episodes": 123}
    resumed = ReplayBuffer(capacity=4)
    resumed.load_state_dict(loaded.state["replay_buffer"])
    assert resumed.sample(3) == buffer.sample(3)


def test_no_checkpoint_gives_none(tmp_path: Path) -> None:
    assert load_latest(tmp_path / "missing") is None
    assert load_latest(tmp_path) is None


def test_keeps_the_latest_k_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    for step in range(1, 6):
        save_checkpoint(tmp_path, small_state(step), step=step, keep=2)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [4, 5]
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    loaded = load_latest(tmp_path)
    assert loaded is not None and loaded.step == 5
    assert torch.equal(loaded.state["weights"], torch.full((4,), 5.0))


def test_a_lost_pointer_falls_back_to_the_newest_complete_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for step in (1, 2):
        save_checkpoint(tmp_path, small_state(step), step=step)
    (tmp_path / "latest").unlink()
    with caplog.at_level(logging.WARNING, logger="archer_agents.training.checkpoint"):
        loaded = load_latest(tmp_path)
    assert loaded is not None and loaded.step == 2
    assert "pointer" in caplog.text


def test_crash_before_the_manifest_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(tmp_path, small_state(1), step=1)
    monkeypatch.setattr(ckpt, "_write_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, small_state(2), step=2)
    assert (tmp_path / "step-000002" / "state.pt").exists()  # the state did land
    assert verify_checkpoint(tmp_path / "step-000002") is not None
    loaded = load_latest(tmp_path)
    assert loaded is not None and loaded.step == 1
    assert torch.equal(loaded.state["weights"], torch.full((4,), 1.0))


def test_crash_in_the_middle_of_writing_the_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(tmp_path, small_state(1), step=1)
    real_save = torch.save

    def torn_save(obj: object, handle: object) -> None:
        real_save(obj, handle)
        handle.truncate(10)  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, small_state(2), step=2)
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert not (tmp_path / "step-000002" / "state.pt").exists()
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    loaded = load_latest(tmp_path)
    assert loaded is not None and loaded.step == 1


def test_write_text_atomic_replaces_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "result.json"
    write_text_atomic(path, "first")
    write_text_atomic(path, "second")
    assert path.read_text() == "second"

    def killed(*args: object) -> None:
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(ckpt.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(path, "third")
    assert path.read_text() == "second"  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary left


def test_crash_before_the_pointer_moves_resumes_from_the_pointer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(tmp_path, small_state(1), step=1)
    monkeypatch.setattr(ckpt, "_write_latest", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, small_state(2), step=2)
    loaded = load_latest(tmp_path)
    assert loaded is not None and loaded.step == 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "manifest"])
def test_corrupt_latest_falls_back_to_the_previous_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    save_checkpoint(tmp_path, small_state(1), step=1)
    folder = save_checkpoint(tmp_path, small_state(2), step=2)
    state_file = folder / "state.pt"
    data = bytearray(state_file.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        state_file.write_bytes(bytes(data))
    elif damage == "truncate":
        state_file.write_bytes(bytes(data[: len(data) // 2]))
    else:
        (folder / "MANIFEST.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="archer_agents.training.checkpoint"):
        loaded = load_latest(tmp_path)
    assert loaded is not None and loaded.step == 1
    assert "step-000002" in caplog.text
    with pytest.raises(CheckpointError, match="not usable"):
        load_checkpoint(folder)


def test_every_checkpoint_unusable_raises(tmp_path: Path) -> None:
    folder = save_checkpoint(tmp_path, small_state(1), step=1)
    (folder / "state.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="delete the unusable step folder") as excinfo:
        load_latest(tmp_path)
    assert "\n" not in str(excinfo.value)
    (problem,) = excinfo.value.problems
    assert problem.startswith("step-000001: state.pt has 7 bytes")


def test_a_torn_only_checkpoint_refuses_to_open_the_run_with_the_fix(tmp_path: Path) -> None:
    """A run whose only checkpoint is torn is not silently restarted over its old logs."""
    from archer_agents.training.run_dir import RunDir, RunDirError

    run = RunDir(tmp_path / "run")
    folder = save_checkpoint(run.checkpoint_dir, small_state(1), step=1)
    (folder / "MANIFEST.json").unlink()  # killed between the state and the manifest
    for resume in (True, False):
        with pytest.raises(CheckpointError, match="move or delete") as excinfo:
            run.open(resume, "archer", {})
        message = str(excinfo.value)
        assert "\n" not in message and "step-000001: no manifest" in message
        assert isinstance(excinfo.value, RunDirError | ValueError)


def test_errors_from_the_main_process_survive_pickling() -> None:
    """Distributed runs broadcast the error: its problems must arrive too."""
    import pickle

    from archer_agents.training.run_dir import RunDirError

    error = CheckpointError("no usable checkpoint")
    error.problems = ("step-000001: no manifest",)
    back = pickle.loads(pickle.dumps(error))
    assert str(back) == "no usable checkpoint" and back.problems == error.problems
    assert str(pickle.loads(pickle.dumps(RunDirError("x")))) == "x"


def test_overwriting_a_step_and_abandoned_later_steps(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, small_state(step), step=step, keep=5)
    # A run resumed from step 1 writes step 2 again: step 3 belongs to the abandoned history.
    save_checkpoint(tmp_path, {"weights": torch.zeros(1)}, step=2, keep=5)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [1, 2]
    loaded = load_latest(tmp_path)
    assert loaded is not None and loaded.step == 2
    assert torch.equal(loaded.state["weights"], torch.zeros(1))


def test_rng_restore_reproduces_the_same_draws(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    torch.rand(3)  # move away from the seeded start
    state = capture_rng_state()
    save_checkpoint(tmp_path, {"rng": state}, step=0)

    def draws() -> tuple:
        return (
            [random.random() for _ in range(3)],
            np.random.rand(3).tolist(),
            np.random.normal(size=2).tolist(),
            torch.rand(3).tolist(),
            torch.randint(0, 100, (3,)).tolist(),
        )

    first = draws()
    restore_rng_state(state)
    assert draws() == first
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    loaded = load_latest(tmp_path)
    assert loaded is not None
    restore_rng_state(loaded.state["rng"])
    assert draws() == first


def test_bad_arguments_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep"):
        save_checkpoint(tmp_path, {}, step=1, keep=0)
    with pytest.raises(ValueError, match="step"):
        save_checkpoint(tmp_path, {}, step=-1)
