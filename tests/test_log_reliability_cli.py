"""Torn and corrupt episode logs and torn checkpoints through the `archer` CLI, in process.

A crashed writer leaves a torn tail; the next writer isolates it and appends,
so the torn line ends up in the middle of the log. `archer bc` and `archer
train --offline` read past it (``--lenient``, the default) with one printed
line, or stop at it naming file:line (``--strict``); unusable logs and a run
whose only checkpoint is torn end with one line and exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archer_agents.cli.app import full_app
from archer_agents.data.episode_log import EpisodeWriter
from archer_agents.data.schema import SCHEMA_VERSION, Episode
from archer_agents.training.rollout import ScriptedActor, collect, make_env_factory

ENV_ID = "archer/TwentyQuestions-v0"
runner = CliRunner()


@pytest.fixture(scope="module")
def scripted_episodes() -> list[Episode]:
    factory = make_env_factory(ENV_ID, max_turns=4)
    expert = collect(factory, ScriptedActor("expert"), 3, num_envs=3, seed=0).episodes
    random = collect(factory, ScriptedActor("random"), 3, num_envs=3, seed=10).episodes
    return expert + random


@pytest.fixture
def torn_middle_log(tmp_path: Path, scripted_episodes: list[Episode]) -> Path:
    """Three episodes, a writer killed mid-line, then a later writer's three episodes."""
    path = tmp_path / "episodes.jsonl"
    with EpisodeWriter(path, fsync=False) as writer:
        writer.write_all(scripted_episodes[:3])
    with path.open("a") as handle:
        handle.write(scripted_episodes[3].model_dump_json()[:57])
    with EpisodeWriter(path, fsync=False) as writer:
        writer.write_all(scripted_episodes[3:])
    return path


def invoke(*args: str):
    return runner.invoke(full_app(), list(args))


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line[line.index("error:") :] for line in lines if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def bc_args(log: Path, model: Path, out: Path) -> list[str]:
    return [
        "bc", str(log), "--model", str(model), "--out", str(out),
        "--steps", "2", "--batch-size", "4", "--warmup-steps", "1", "--eval-every", "0",
    ]  # fmt: skip


def test_bc_reads_past_a_torn_middle_line_or_names_it_with_strict(
    torn_middle_log: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    result = invoke(*bc_args(torn_middle_log, tiny_model_dir, tmp_path / "bc"))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "unreadable line" in line]
    assert len(warnings) == 1 and f"{torn_middle_log}:4" in warnings[0], result.output
    assert "skipped 1 unreadable line(s)" in warnings[0]
    assert (tmp_path / "bc").is_dir()

    strict = invoke(*bc_args(torn_middle_log, tiny_model_dir, tmp_path / "bc2"), "--strict")
    assert_one_line_error(strict, f"{torn_middle_log}:4: not JSON")
    assert not (tmp_path / "bc2").exists()


def test_bc_says_in_one_line_why_a_log_is_unusable(
    tmp_path: Path, tiny_model_dir: Path, scripted_episodes: list[Episode]
) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    all_bad = tmp_path / "bad.jsonl"
    all_bad.write_bytes(b"\x00\xff\n{not json}\n[]\n")
    newer = tmp_path / "newer.jsonl"
    payload = json.loads(scripted_episodes[0].model_dump_json())
    payload["schema_version"] = SCHEMA_VERSION + 1
    newer.write_text(json.dumps(payload) + "\n")
    no_turns = tmp_path / "no_turns.jsonl"
    with EpisodeWriter(no_turns, fsync=False) as writer:
        writer.write(Episode(env_id=ENV_ID, transitions=[]))
    cases = {
        empty: ["holds no episodes"],
        all_bad: ["all 3 line(s) are unreadable", f"{all_bad}:1: not UTF-8"],
        newer: ["upgrade archer-agents"],
        no_turns: ["hold no turns to clone"],
    }
    for log, fragments in cases.items():
        assert_one_line_error(invoke(*bc_args(log, tiny_model_dir, tmp_path / "out")), *fragments)
    assert_one_line_error(
        invoke(*bc_args(newer, tiny_model_dir, tmp_path / "out"), "--strict"),
        f"{newer}:1: not a valid episode",
        "upgrade archer-agents",
    )
    assert_one_line_error(invoke(*bc_args(tmp_path, tiny_model_dir, tmp_path / "o")), "directory")
    assert not (tmp_path / "out").exists()


def offline_args(log: Path, model: Path, out: Path) -> list[str]:
    args = ["train", "--offline", "--episodes", str(log), "--model", str(model), "--out", str(out)]
    for override in (
        "critic_steps=1", "critic_batch_size=8", "actor_steps=1", "actor_batch_size=4",
        "max_new_tokens=6", "iterations=1", "tensorboard=false",
    ):  # fmt: skip
        args += ["--set", override]
    return args


def test_train_offline_reads_past_a_torn_middle_line_or_names_it_with_strict(
    torn_middle_log: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    result = invoke(*offline_args(torn_middle_log, tiny_model_dir, tmp_path / "run"))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "unreadable line" in line]
    assert len(warnings) == 1 and f"{torn_middle_log}:4" in warnings[0], result.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["algorithm_config"]["skip_bad_lines"] is True

    strict = invoke(*offline_args(torn_middle_log, tiny_model_dir, tmp_path / "run2"), "--strict")
    assert_one_line_error(strict, f"{torn_middle_log}:4: not JSON")


def test_resuming_a_run_whose_only_checkpoint_is_torn_is_one_line_with_the_fix(
    torn_middle_log: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from archer_agents.training.checkpoint import save_checkpoint

    out = tmp_path / "run"
    folder = save_checkpoint(out / "checkpoints", {"format": 1}, step=1)
    state = folder / "state.pt"
    state.write_bytes(state.read_bytes()[:10])  # killed mid-write of the first checkpoint
    result = invoke(*offline_args(torn_middle_log, tiny_model_dir, out), "--resume")
    assert_one_line_error(result, "step-000001", "move or delete", str(out))
    without_resume = invoke(*offline_args(torn_middle_log, tiny_model_dir, out))
    assert_one_line_error(without_resume, "step-000001", "move or delete")
