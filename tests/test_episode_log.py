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


# ------------------------------------------------ any bytes, anywhere in a log ---

NASTY_LINES = [
    b"\x00" * 10,
    b"\xff\xfe\xfd",
    b'{"a": "\\ud800"}',  # a lone surrogate escape: valid JSON, not encodable text
    b'{"env_id": "\\udfff", "transitions": []}',
    b"[" * 100_000,  # nested past Python's recursion limit
    b'{"x": ' + b"1" * 5_000 + b"}",  # past Python's integer digit limit
    b'{"reward": NaN}',
    b'{"reward": 1e999}',
    b"null",
    b'"just a string"',
    b"{}",
    b'{"env_id": "e", "transitions": [{"observation": 1}]}',
    b'{"schema_version": 99, "env_id": "e", "transitions": []}',
    b"x" * 2_000_000,  # a huge line
    b'{"env_id": "e", "transitions": [], "metadata": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_001,
]


def garbage_lines() -> st.SearchStrategy[bytes]:
    """Arbitrary bytes without a newline (each stays one line), or a known nasty line."""
    return st.one_of(
        st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")),
        st.text(max_size=100).map(lambda t: t.replace("\n", "").encode("utf-8", "surrogatepass")),
        st.sampled_from(NASTY_LINES),
    )


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    layout=st.lists(st.one_of(st.none(), garbage_lines()), min_size=1, max_size=12),
    torn_tail=st.one_of(st.none(), garbage_lines()),
)
def test_any_bytes_as_lines_raise_only_the_named_error_and_no_episode_is_lost(
    tmp_path: Path, layout: list[bytes | None], torn_tail: bytes | None
) -> None:
    """N valid episodes interleaved with any garbage: lenient reads exactly those N.

    ``None`` in ``layout`` is a valid episode. Strict mode raises `EpisodeLogError`
    naming a garbage line, or nothing when every garbage line is blank.
    """
    path = tmp_path / "mixed.jsonl"
    episodes = [make_episode(i, turns=1) for i in range(layout.count(None))]
    valid = iter(episodes)
    lines = [next(valid).model_dump_json().encode() if x is None else x for x in layout]
    data = b"".join(line + b"\n" for line in lines) + (torn_tail or b"")
    path.write_bytes(data)
    garbage_numbers = {
        number
        for number, line in enumerate(lines, start=1)
        if line is not None and line.strip() and layout[number - 1] is not None
    }
    read, report = read_episodes(path, strict=False)
    assert read == episodes  # every valid episode, in order, unchanged
    assert report.episodes_read == len(episodes)
    assert {e.line_number for e in report.bad_lines} == garbage_numbers
    assert report.lines_skipped == len(garbage_numbers) + int(bool((torn_tail or b"").strip()))
    for error in report.skipped:
        assert "\n" not in str(error) and str(error).startswith(f"{path}:{error.line_number}: ")
    try:
        strict_read, _ = read_episodes(path)
    except EpisodeLogError as error:
        assert error.line_number == min(garbage_numbers)
    else:
        assert not garbage_numbers and strict_read == episodes


@pytest.mark.parametrize("line", NASTY_LINES, ids=range(len(NASTY_LINES)))
def test_each_nasty_line_is_a_named_error_in_the_middle_of_a_log(tmp_path: Path, line) -> None:
    path = tmp_path / "e.jsonl"
    good = make_episode(0).model_dump_json().encode()
    path.write_bytes(good + b"\n" + line + b"\n" + good + b"\n")
    with pytest.raises(EpisodeLogError, match=r"e\.jsonl:2: "):
        read_episodes(path)
    episodes, report = read_episodes(path, strict=False)
    assert len(episodes) == 2 and [e.line_number for e in report.bad_lines] == [2]


def test_a_writer_isolates_a_torn_tail_and_says_so(tmp_path: Path, caplog) -> None:
    path = tmp_path / "e.jsonl"
    with EpisodeWriter(path) as writer:
        writer.write(make_episode(0))
    torn = make_episode(1).model_dump_json().encode()[:57]
    path.write_bytes(path.read_bytes() + torn)  # the writer was killed mid-line
    with (
        caplog.at_level("WARNING", logger="archer_agents.data.episode_log"),
        EpisodeWriter(path) as writer,
    ):
        writer.write(make_episode(2))
    assert "torn line (line 2" in caplog.text
    assert path.read_bytes().split(b"\n")[1] == torn  # the fragment is a line of its own
    episodes, report = read_episodes(path, strict=False)
    assert [e.task_id for e in episodes] == ["0", "2"]
    assert report.summary().startswith(f"skipped 1 unreadable line(s): {path}:2 (first: not JSON")
    with pytest.raises(EpisodeLogError, match=r"e\.jsonl:2: not JSON"):
        read_episodes(path)


def test_the_summary_names_the_first_locations_and_counts_the_rest(tmp_path: Path) -> None:
    paths = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    good = make_episode(0).model_dump_json()
    paths[0].write_text(f"{good}\nbad\nbad\n{good}\nbad\n")
    paths[1].write_text(f"bad\n{good}\n{good[:20]}")  # and a torn tail
    episodes, report = read_episodes(paths, strict=False)
    assert len(episodes) == 3 and report.lines_skipped == 5 and len(report.torn_tails) == 1
    summary = report.summary()
    assert summary.startswith(f"skipped 5 unreadable line(s): {paths[0]}:2, {paths[0]}:3, ")
    assert summary.count(":") >= 3 and "and 2 more" in summary and "\n" not in summary
    assert ReadReport().summary() == ""


def test_a_directory_is_named_with_the_file_to_pass(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match="episodes.jsonl"):
        read_episodes(tmp_path)
