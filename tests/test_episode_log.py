"""Episode schema and JSONL logs: round trips, torn writes, corrupt lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from archer_agents.data.episode_log import (
    EpisodeLogError,
    EpisodeWriter,
    ReadReport,
    iter_episodes,
    read_episodes,
)
from archer_agents.data.schema import SCHEMA_VERSION, Episode, Transition


def make_episode(index: int, turns: int = 2) -> Episode:
    transitions = [
        Transition(
            observation=f"Questions:\n{'q? Yes.' * t}",
            action=f"Is it thing {index}-{t}?",
            reward=-1.0,
            next_observation=f"Questions:\n{'q? Yes.' * (t + 1)}",
            terminated=t == turns - 1,
            info={"invalid_action": False},
            prompt_token_ids=[1, 5, 9],
            action_token_ids=[4, 7, 2],
            action_logprobs=[-0.5, -1.25, -0.01],
            policy_version="v1",
        )
        for t in range(turns)
    ]
    return Episode(env_id="archer/Test-v0", task_id=str(index), seed=index, transitions=transitions)


def test_round_trip_preserves_every_field(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "episodes.jsonl"
    episodes = [make_episode(i).finalize(success=i % 2 == 0) for i in range(5)]
    with EpisodeWriter(path) as writer:
        writer.write_all(episodes)
    read, report = read_episodes(path)
    assert read == episodes
    assert report.episodes_read == 5 and report.lines_skipped == 0
    assert read[0].schema_version == SCHEMA_VERSION
    assert read[0].total_reward == -2.0


def test_each_write_is_on_disk_before_close(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    writer = EpisodeWriter(path)
    writer.write(make_episode(0))
    # A second reader sees the episode while the writer is still open.
    assert len(read_episodes(path)[0]) == 1
    writer.close()


def test_torn_last_line_is_reported_and_skipped(tmp_path: Path, caplog) -> None:
    path = tmp_path / "e.jsonl"
    with EpisodeWriter(path) as writer:
        writer.write(make_episode(0))
        writer.write(make_episode(1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # crash mid-write of the second episode
    episodes, report = read_episodes(path)
    assert [e.task_id for e in episodes] == ["0"]
    assert report.torn_last_line
    assert "torn last line" in caplog.text


def test_appending_after_a_torn_line_keeps_new_episodes_readable(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    with EpisodeWriter(path) as writer:
        writer.write(make_episode(0))
    path.write_bytes(path.read_bytes() + b'{"schema_version": 1, "env')
    with EpisodeWriter(path) as writer:
        writer.write(make_episode(1))
    with pytest.raises(EpisodeLogError) as excinfo:
        read_episodes(path)
    assert excinfo.value.line_number == 2  # the torn line is now in the middle: reported
    episodes, report = read_episodes(path, strict=False)
    assert [e.task_id for e in episodes] == ["0", "1"]
    assert len(report.bad_lines) == 1 and report.bad_lines[0].line_number == 2


def test_bad_middle_line_raises_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    good = make_episode(0).model_dump_json()
    path.write_text(f"{good}\nnot json at all\n{good}\n")
    with pytest.raises(EpisodeLogError, match=r"e\.jsonl:2: not JSON"):
        list(iter_episodes(path))


def test_lenient_mode_counts_every_kind_of_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    good = make_episode(0).model_dump_json()
    lines = [good, "[1, 2]", '{"env_id": 3}', good, "\xff".encode("latin-1").decode("latin-1")]
    path.write_bytes(("\n".join(lines[:4]) + "\n").encode() + b"\xff\xfe\n")
    report = ReadReport()
    episodes = list(iter_episodes(path, strict=False, report=report))
    assert len(episodes) == 2
    reasons = [error.reason for error in report.bad_lines]
    assert reasons[0].startswith("expected a JSON object")
    assert reasons[1].startswith("not a valid episode")
    assert reasons[2].startswith("not UTF-8")
    assert [error.line_number for error in report.bad_lines] == [2, 3, 5]


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_episodes(tmp_path / "nope.jsonl")


def test_newer_schema_version_is_refused_with_upgrade_hint(tmp_path: Path) -> None:
    payload = json.loads(make_episode(0).model_dump_json())
    payload["schema_version"] = SCHEMA_VERSION + 1
    path = tmp_path / "e.jsonl"
    path.write_text(json.dumps(payload) + "\n")
    with pytest.raises(EpisodeLogError, match="upgrade archer-agents"):
        read_episodes(path)


def test_logprobs_must_align_with_token_ids() -> None:
    with pytest.raises(ValidationError, match="one per token"):
        Transition(
            observation="o",
            action="a",
            reward=0.0,
            next_observation="o2",
            action_token_ids=[1, 2],
            action_logprobs=[-0.1],
        )


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Transition.model_validate(
            {"observation": "o", "action": "a", "reward": 0, "next_observation": "", "rewrd": 1}
        )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(count=st.integers(min_value=1, max_value=4), cut=st.integers(min_value=0, max_value=10_000))
def test_truncated_log_reads_back_an_exact_prefix(tmp_path: Path, count: int, cut: int) -> None:
    """A crash at any byte: the complete episodes come back equal, the torn one is reported."""
    path = tmp_path / "cut.jsonl"
    path.unlink(missing_ok=True)
    episodes = [make_episode(i, turns=1 + i % 3) for i in range(count)]
    with EpisodeWriter(path, fsync=False) as writer:
        writer.write_all(episodes)
    data = path.read_bytes()
    data = data[: len(data) - min(cut, len(data))]
    path.write_bytes(data)
    read, report = read_episodes(path)  # strict: a torn tail alone never raises
    complete = data.count(b"\n")
    assert read == episodes[: len(read)]
    # Either every complete line was read, or one more parsed because only its newline was cut.
    assert len(read) in (complete, complete + 1)
    tail = data.rsplit(b"\n", 1)[-1]
    assert report.torn_last_line == (bool(tail.strip()) and len(read) == complete)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    count=st.integers(min_value=1, max_value=4),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=3),
)
def test_corrupt_bytes_are_read_or_reported_never_dropped(
    tmp_path: Path, count: int, flips
) -> None:
    """Random byte corruption: every non-empty line is read or accounted for in the report."""
    path = tmp_path / "flip.jsonl"
    path.unlink(missing_ok=True)
    with EpisodeWriter(path, fsync=False) as writer:
        writer.write_all(make_episode(i) for i in range(count))
    data = bytearray(path.read_bytes())
    for position, value in flips:
        data[position % len(data)] = value
    path.write_bytes(bytes(data))
    report = ReadReport()
    read = list(iter_episodes(path, strict=False, report=report))
    nonempty_lines = [line for line in bytes(data).split(b"\n") if line.strip()]
    assert len(read) + report.lines_skipped == len(nonempty_lines)
    assert report.episodes_read == len(read)
