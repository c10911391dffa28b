"""EpisodeRecorder under real disk faults: a full disk, a read-only folder, a closed handle.

The faults are real. Where the machine allows (root with mount rights), the log
sits on a 64 KiB tmpfs that the test fills up, remounts read-only and gives back.
Elsewhere (and always, as its own case) the same scenarios run in a subprocess
under a real fallback: ``RLIMIT_FSIZE`` for the full disk (the kernel refuses
writes past the limit with EFBIG) and a chmod'ed folder and file for the
read-only case (root ignores permissions, so as root a plain file takes the
folder's place: opening the log fails with ENOTDIR). Whatever the fault, the host's calls never raise, every episode
the host produced is in the log exactly once after recovery (strict read: no
torn or corrupt line anywhere), and a write that tore part of a line left
nothing behind for the next line to be glued onto.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from test_recorder import game_agent, play

from archer_agents.data.episode_log import EpisodeWriter, TornWrite, read_episodes
from archer_agents.data.schema import Episode, Transition
from archer_agents.langchain.recorder import EpisodeRecorder

PAGE = 4096
ROOM = 64
"""Bytes the log may still grow by on the 'full' disk: the next episode line tears there."""
TESTS = Path(__file__).resolve().parent


class Disk(Protocol):
    kind: str
    dir: Path

    def fill(self, log: Path) -> None: ...
    def recover(self) -> None: ...
    def make_read_only(self) -> None: ...
    def make_writable(self) -> None: ...


class TinyTmpfs:
    """A folder on its own 64 KiB tmpfs, filled and remounted read-only for real."""

    kind = "tmpfs"

    def __init__(self, mount_point: Path) -> None:
        self.dir = mount_point

    def fill(self, log: Path) -> None:
        """Fill the file system, leaving the log `ROOM` bytes to grow into.

        tmpfs allocates whole pages, so a file can grow to the end of its last page
        when no page is left; blank lines (readers skip them) place that end.
        """
        size = log.stat().st_size if log.exists() else 0
        with log.open("ab") as f:
            f.write(b"\n" * ((-size - ROOM) % PAGE))
        with (self.dir / "filler").open("wb", buffering=0) as f, pytest.raises(OSError) as full:
            while True:
                f.write(b"\0" * PAGE)
        assert full.value.errno == errno.ENOSPC

    def recover(self) -> None:
        (self.dir / "filler").unlink()

    def make_read_only(self) -> None:
        _mount("-o", "remount,ro", str(self.dir))

    def make_writable(self) -> None:
        _mount("-o", "remount,rw", str(self.dir))


class Fallback:
    """The same faults without mount rights: RLIMIT_FSIZE and permissions (subprocess only)."""

    kind = "fallback"

    def __init__(self, folder: Path) -> None:
        self.dir = folder / "disk"  # our own folder: its mode is ours to change
        self.dir.mkdir()
        self._limit = resource.getrlimit(resource.RLIMIT_FSIZE)

    def fill(self, log: Path) -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        size = log.stat().st_size if log.exists() else 0
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + ROOM, self._limit[1]))

    def recover(self) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, self._limit)

    def make_read_only(self) -> None:
        """chmod the folder and its files; root ignores permissions, so as root the
        folder is moved aside and a plain file takes its place (opens fail: ENOTDIR)."""
        if os.geteuid() == 0:
            self.dir.rename(self.dir.with_name("aside"))
            self.dir.write_bytes(b"")
            return
        for path in self.dir.iterdir():
            path.chmod(0o444)
        self.dir.chmod(0o555)

    def make_writable(self) -> None:
        if os.geteuid() == 0:
            self.dir.unlink()
            self.dir.with_name("aside").rename(self.dir)
            return
        self.dir.chmod(0o755)
        for path in self.dir.iterdir():
            path.chmod(0o644)


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


def _tmpfs(folder: Path) -> TinyTmpfs | None:
    """Mount a 64 KiB tmpfs on ``folder``; None where this machine does not allow it."""
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return TinyTmpfs(folder)


# -- the scenarios: what a host does while the disk fails -----------------------------------


class Host:
    """Plays games through a recorder like an application would, catching nothing silently:
    anything a recorder call raises is kept in `raised`."""

    def __init__(self, recorder: EpisodeRecorder) -> None:
        self.recorder = recorder
        self.produced: list[str] = []
        self.raised: list[str] = []

    def call(self, step: Callable[[], Any]) -> Any:
        try:
            return step()
        except Exception as exc:  # the property under test: this stays empty
            self.raised.append(f"{type(exc).__name__}: {exc}")
            return None

    def game(self, reward: float = 1.0) -> None:
        run_id = uuid.uuid4()
        self.call(lambda: play(game_agent(), self.recorder, run_id))
        self.produced.append(str(run_id))
        self.call(lambda: self.recorder.feedback(run_id, reward, success=True))


class Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def full_disk(disk: Disk, max_unwritten: int = 100) -> dict[str, Any]:
    """Two games on a healthy disk, three on a full one (the first tears a line), flush and
    close on the full disk, then the disk recovers: one more game and close."""
    log = disk.dir / "log.jsonl"
    recorder = EpisodeRecorder(log, max_unwritten=max_unwritten, fsync=True)
    host = Host(recorder)
    host.game()
    host.game()
    host.call(recorder.drain)  # both on the log before the disk fills
    disk.fill(log)
    for _ in range(3):
        host.game()
    failed = {
        "unwritten_while_full": len(recorder.unwritten),
        "flush_while_full": host.call(recorder.flush),
    }
    host.call(recorder.close)
    disk.recover()
    host.game()
    host.call(recorder.close)
    return {
        **failed,
        "produced": host.produced,
        "raised": host.raised,
        "unwritten": recorder.unwritten,
        "dropped": recorder.dropped,
    }


def read_only_folder(disk: Disk) -> dict[str, Any]:
    """The folder is read-only before the first episode and again after a close; each time
    the host goes on, and the episodes land once the folder is writable again."""
    log = disk.dir / "log.jsonl"
    recorder = EpisodeRecorder(log)
    host = Host(recorder)
    disk.make_read_only()
    host.game()
    host.game()
    failed = {"unwritten_while_read_only": len(recorder.unwritten)}
    failed["flush_while_read_only"] = host.call(recorder.flush)
    host.call(recorder.close)
    disk.make_writable()
    failed["flush_after"] = host.call(recorder.flush)
    host.game()
    host.call(recorder.close)  # nothing is open now: the folder can go read-only again
    disk.make_read_only()
    host.game()
    failed["unwritten_again"] = len(recorder.unwritten)
    host.call(recorder.close)
    disk.make_writable()
    host.call(recorder.close)
    return {
        **failed,
        "produced": host.produced,
        "raised": host.raised,
        "unwritten": recorder.unwritten,
        "dropped": recorder.dropped,
    }


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "full_disk": full_disk,
    "capped": lambda disk: full_disk(disk, max_unwritten=2),
    "read_only_folder": read_only_folder,
}


def run_scenario(name: str, disk: Disk) -> dict[str, Any]:
    """Run a scenario in this process, with the recorder's and writer's log messages."""
    messages = Messages()
    logger = logging.getLogger("archer_agents")
    logger.addHandler(messages)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        result = SCENARIOS[name](disk)
    finally:
        logger.removeHandler(messages)
        logger.setLevel(level)
    return {**result, "messages": messages.lines, "kind": disk.kind, "dir": str(disk.dir)}


def _child_main(name: str, folder: str) -> None:
    """Entry point of the fallback subprocess: run ``name`` and print its result as JSON."""
    print(json.dumps(run_scenario(name, Fallback(Path(folder)))))


def run_in_fallback(name: str, folder: Path) -> dict[str, Any]:
    """Run a scenario in a subprocess under `Fallback` (its RLIMIT_FSIZE and signal
    handling must not touch the test process)."""
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); "
        f"import test_recorder_faults as t; t._child_main({name!r}, {str(folder)!r})"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1", HOME=str(folder))
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(params=["tmpfs", "fallback"])
def faulty_disk(request: pytest.FixtureRequest) -> Iterator[Callable[[str], dict[str, Any]]]:
    """Runs a scenario on a tmpfs where it can be mounted, else (and as its own case) under
    the fallback. The fallback is announced, never skipped: its kind is in the result."""
    folder = Path(tempfile.mkdtemp(prefix="archer-disk-"))
    mounted: TinyTmpfs | None = None
    if request.param == "tmpfs":
        mounted = _tmpfs(folder)
        if mounted is None:
            logging.getLogger(__name__).warning("cannot mount a tmpfs here; using the fallback")

    def run(name: str) -> dict[str, Any]:
        if mounted is not None:
            result = run_scenario(name, mounted)
        else:
            result = run_in_fallback(name, folder)
        result["log"] = _snapshot(Path(result["dir"]) / "log.jsonl")
        return result

    try:
        yield run
    finally:
        if mounted is not None:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def _snapshot(log: Path) -> Path:
    """A copy of the log off the faulty disk (it is unmounted at teardown)."""
    copy = Path(tempfile.mkdtemp(prefix="archer-log-")) / "log.jsonl"
    shutil.copy2(log, copy)
    return copy


def assert_exactly_once(result: dict[str, Any], expected: list[str]) -> list[Episode]:
    """Strict read: no bad line anywhere, each expected episode once, with its reward."""
    episodes, report = read_episodes(result["log"], strict=True)
    assert report.lines_skipped == 0 and not report.torn_last_line
    counts = Counter(e.episode_id for e in episodes)
    assert counts == Counter(expected)
    assert all(e.total_reward == 1.0 for e in episodes)
    return episodes


# -- the tests ----------------------------------------------------------------------------------


def test_a_full_disk_raises_nothing_keeps_every_episode_and_tears_no_line(faulty_disk) -> None:
    result = faulty_disk("full_disk")
    assert result["raised"] == []
    assert result["unwritten_while_full"] == 3 and result["flush_while_full"] == 0
    assert result["unwritten"] == [] and result["dropped"] == 0
    assert_exactly_once(result, result["produced"])
    messages = "\n".join(result["messages"])
    # The first write on the full disk put ROOM bytes of its line down, then failed; they
    # were removed again, so the episode written after recovery starts a clean line.
    assert f"removed the {ROOM} bytes a failed write left" in messages
    assert messages.count("ERROR could not write episode") == 1  # one error per outage
    assert "takes episodes again" in messages


def test_more_unwritten_episodes_than_the_cap_are_dropped_counted_and_warned(faulty_disk) -> None:
    result = faulty_disk("capped")
    assert result["raised"] == []
    produced = result["produced"]
    assert result["dropped"] == 2 and result["unwritten"] == []
    # Games 3-5 failed: game 3 went when game 5 made three unwritten (max_unwritten=2), and
    # game 4 when game 6, after the recovery, was queued behind games 4 and 5 (the queue
    # counts: at most two episodes not in the log are held, whatever the reason).
    assert_exactly_once(result, produced[:2] + produced[4:])
    warned = [line for line in result["messages"] if line.startswith("WARNING dropped episode")]
    assert [line.split()[3].rstrip(":") for line in warned] == produced[2:4]


def test_a_read_only_folder_raises_nothing_and_the_episodes_land_later(faulty_disk) -> None:
    result = faulty_disk("read_only_folder")
    assert result["raised"] == []
    assert result["unwritten_while_read_only"] == 2 and result["flush_while_read_only"] == 0
    assert result["flush_after"] == 2 and result["unwritten_again"] == 1
    assert result["unwritten"] == [] and result["dropped"] == 0
    assert_exactly_once(result, result["produced"])


def test_a_log_handle_closed_and_reused_underneath_is_noticed_not_written_through(
    tmp_path: Path,
) -> None:
    """The host closes the recorder's descriptor and the number is reused by another open:
    the recorder must neither write its episodes into that file nor close it."""
    log = tmp_path / "log.jsonl"
    recorder = EpisodeRecorder(log)
    host = Host(recorder)
    host.game()
    recorder.drain()  # the writer thread has opened the log and written the episode
    (fd,) = [
        int(entry.name)
        for entry in Path("/proc/self/fd").iterdir()
        if os.path.realpath(entry) == str(log.resolve())
    ]
    os.close(fd)
    other = tmp_path / "other.txt"
    reused = os.open(other, os.O_RDWR | os.O_CREAT)
    try:
        host.game()
        host.game()
        host.call(recorder.close)
        os.fstat(reused)  # still open: the recorder did not close it
        assert other.read_bytes() == b""
    finally:
        os.close(reused)
    assert host.raised == [] and recorder.unwritten == []
    assert_exactly_once({"log": log}, host.produced)


def test_feedback_flush_and_close_after_close_reopen_the_log(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    recorder = EpisodeRecorder(log)
    host = Host(recorder)
    host.game()
    recorder.close()
    host.game()  # written through a fresh handle
    recorder.close()
    recorder.close()
    assert host.raised == []
    assert_exactly_once({"log": log}, host.produced)


def _episode(n: int) -> Episode:
    step = Transition(
        observation=f"o{n}", action=f"a{n}", reward=1.0, next_observation="", terminated=True
    )
    return Episode(episode_id=f"e{n}", env_id="test", transitions=[step])


def test_a_fragment_the_writer_could_not_remove_is_removed_by_the_next_one(tmp_path: Path) -> None:
    """`TornWrite` repair: our own fragment is cut off, anything else's is only isolated."""
    log = tmp_path / "log.jsonl"
    with EpisodeWriter(log) as writer:
        writer.write(_episode(0))
    line = _episode(1).model_dump_json().encode() + b"\n"
    offset = log.stat().st_size
    with log.open("ab") as f:
        f.write(line[:30])  # what a failed write left, not removed at the time
    with EpisodeWriter(log, repair=TornWrite(offset, line)) as writer:
        writer.write(_episode(1))
    episodes, report = read_episodes(log, strict=True)
    assert [e.episode_id for e in episodes] == ["e0", "e1"] and report.lines_skipped == 0

    # Bytes that are not a prefix of our line are someone else's: kept and isolated.
    with log.open("ab") as f:
        f.write(b'{"someone else')
    size = log.stat().st_size
    with EpisodeWriter(log, repair=TornWrite(size - 14, line)) as writer:
        writer.write(_episode(2))
    episodes, report = read_episodes(log, strict=False)
    assert [e.episode_id for e in episodes] == ["e0", "e1", "e2"]
    assert [error.line_number for error in report.bad_lines] == [3]
