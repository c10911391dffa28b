"""EpisodeRecorder on a slow disk: the host's calls never wait for a write.

The slow disk is a real one as far as the recorder can tell: the log path is a
FIFO whose kernel buffer is full, so every write to it blocks in the kernel
until a reader thread, started only when the test sets an `Event`, drains it
into a plain file. While that Event is unset nothing can reach the copy, so a
host call that returns has provably not waited for its episode's write; a host
call that did wait would never return (the test then fails, after a deadlock
guard, instead of hanging). After the Event is set the lines land in the copy,
in the order the host produced them, and read back strictly.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_recorder_faults import Host, Messages, _episode

from archer_agents.data.episode_log import EpisodeWriter, read_episodes
from archer_agents.data.schema import Episode
from archer_agents.langchain.recorder import EpisodeRecorder

TESTS = Path(__file__).resolve().parent
DEADLOCK_GUARD = 120.0
"""Seconds before a call that should have returned long ago counts as stuck (not a speed
bound: the call either returns at once or never, while the disk is held)."""


class SlowDisk:
    """A FIFO at ``path`` with a full buffer; `release` lets a reader copy it to ``copy``."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "log.jsonl"
        self.copy = folder / "copy.jsonl"
        os.mkfifo(self.path)
        self.release = threading.Event()
        self.lines_seen = 0
        self._seen = threading.Condition()
        # The reader end keeps the buffered bytes alive; opened first so the filler can open.
        self._read_fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        filler = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        try:
            for size in (4096, 1):  # whole pages, then whatever byte is left
                while True:
                    try:
                        os.write(filler, b"\n" * size)  # blank lines: readers skip them
                    except BlockingIOError:
                        break
        finally:
            os.close(filler)
        os.set_blocking(self._read_fd, True)
        self._reader = threading.Thread(target=self._copy, daemon=True)
        self._reader.start()

    def _copy(self) -> None:
        self.release.wait()
        with self.copy.open("wb") as out:
            while chunk := os.read(self._read_fd, 1 << 16):
                out.write(chunk)
                out.flush()
                with self._seen:
                    self.lines_seen += chunk.count(b"}\n")
                    self._seen.notify_all()
        os.close(self._read_fd)

    def wait_for_lines(self, count: int) -> bool:
        """Wait (deadlock guard only) until ``count`` episode lines have come through."""
        with self._seen:
            return self._seen.wait_for(lambda: self.lines_seen >= count, DEADLOCK_GUARD)

    def finish(self) -> None:
        """Let the reader run to the end of the stream (every writer closed)."""
        self.release.set()
        self._reader.join(DEADLOCK_GUARD)
        assert not self._reader.is_alive(), "the FIFO still has a writer: the log was not closed"


@pytest.fixture
def slow_disk(tmp_path: Path) -> Iterator[SlowDisk]:
    disk = SlowDisk(tmp_path)
    yield disk
    disk.release.set()  # never leave the reader (or a writer) blocked


def call_without_waiting(disk: SlowDisk, calls: Callable[[], None]) -> None:
    """Run ``calls`` (the host's) in a thread while the disk is held; it must return."""
    thread = threading.Thread(target=calls, daemon=True)
    thread.start()
    thread.join(DEADLOCK_GUARD)
    if thread.is_alive():
        disk.release.set()
        pytest.fail("a host call waited for a write to the held disk")


def logged_ids(disk: SlowDisk) -> list[str]:
    episodes, report = read_episodes(disk.copy, strict=True)
    assert report.lines_skipped == 0
    return [e.episode_id for e in episodes]


def test_host_calls_return_while_the_write_is_held_and_the_lines_land_in_order_after(
    slow_disk: SlowDisk,
) -> None:
    recorder = EpisodeRecorder(slow_disk.path)
    host = Host(recorder)
    call_without_waiting(slow_disk, lambda: [host.game() for _ in range(3)])
    # Every call returned, none raised, and nothing can have been written yet.
    assert host.raised == [] and not slow_disk.release.is_set()
    assert recorder.unwritten == host.produced and slow_disk.lines_seen == 0

    slow_disk.release.set()
    # The writer thread writes them by itself, without a flush or close from the host.
    assert slow_disk.wait_for_lines(3)
    recorder.drain()
    assert recorder.unwritten == []
    recorder.close()
    slow_disk.finish()
    assert logged_ids(slow_disk) == host.produced
    episodes, _ = read_episodes(slow_disk.copy)
    assert all(e.total_reward == 1.0 and e.metadata["revision"] == 1 for e in episodes)


def test_close_waits_for_the_pending_lines_and_a_timeout_leaves_them_to_the_writer(
    slow_disk: SlowDisk,
) -> None:
    recorder = EpisodeRecorder(slow_disk.path, wait_for_feedback=False)
    host = Host(recorder)
    messages = Messages()
    logging.getLogger("archer_agents").addHandler(messages)
    try:
        call_without_waiting(slow_disk, lambda: [host.game() for _ in range(2)])
        # close with a zero timeout returns at once; the lines are still pending.
        call_without_waiting(slow_disk, lambda: recorder.close(timeout=0))
    finally:
        logging.getLogger("archer_agents").removeHandler(messages)
    assert recorder.unwritten == host.produced and slow_disk.lines_seen == 0
    assert any("2 episodes are still being written" in line for line in messages.lines)

    slow_disk.release.set()
    recorder.close()  # waits until both lines (each unrewarded, then rewarded) are written
    assert recorder.unwritten == []
    slow_disk.finish()
    first, second = host.produced
    assert logged_ids(slow_disk) == [first, first, second, second]


def test_more_pending_episodes_than_the_cap_drop_the_oldest_with_a_count_and_a_warning(
    slow_disk: SlowDisk,
) -> None:
    recorder = EpisodeRecorder(slow_disk.path, max_unwritten=2)
    host = Host(recorder)
    messages = Messages()
    logging.getLogger("archer_agents").addHandler(messages)
    try:
        call_without_waiting(slow_disk, lambda: [host.game() for _ in range(5)])
        produced = host.produced
        # The newest two always stay, and the one the writer had taken when the disk held it
        # (it is being written, so it is not dropped): two or three, in production order.
        kept = recorder.unwritten
        dropped = [episode_id for episode_id in produced if episode_id not in kept]
        # Late feedback for a dropped episode is no error of the host's: logged, ignored.
        assert host.call(lambda: recorder.feedback(dropped[0], 0.0)) == dropped[0]
    finally:
        logging.getLogger("archer_agents").removeHandler(messages)
    assert host.raised == []
    assert kept[-2:] == produced[-2:] and len(kept) in (2, 3)
    assert kept == [episode_id for episode_id in produced if episode_id in kept]
    assert recorder.dropped == len(dropped) == len(produced) - len(kept)
    warned = [line.split()[3].rstrip(":") for line in messages.lines if "dropped episode" in line]
    assert warned == dropped
    assert f"WARNING feedback for episode {dropped[0]} ignored" in "\n".join(messages.lines)

    slow_disk.release.set()
    recorder.close()
    slow_disk.finish()
    assert logged_ids(slow_disk) == kept


CHILD = """
import json, sys, uuid
sys.path.insert(0, {tests!r})
from test_recorder_faults import Host
from archer_agents.langchain.recorder import EpisodeRecorder

recorder = EpisodeRecorder({log!r})
host = Host(recorder)
host.game()
host.game()
recorder.feedback(host.produced[0], 0.5)  # a later revision, queued behind the others
print(json.dumps({{"produced": host.produced, "raised": host.raised,
                  "unwritten": recorder.unwritten}}), flush=True)
# No close(): the interpreter exits with three lines queued and the disk held.
"""


def test_a_process_that_exits_without_close_still_writes_what_it_queued(
    slow_disk: SlowDisk, tmp_path: Path
) -> None:
    code = CHILD.format(tests=str(TESTS), log=str(slow_disk.path))
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    )
    try:
        assert child.stdout is not None
        # The host's calls all returned while the disk was held.
        result = json.loads(child.stdout.readline())
        assert result["raised"] == [] and slow_disk.lines_seen == 0
        first, second = result["produced"]
        assert result["unwritten"] == [first, second]
        slow_disk.release.set()  # the child is exiting; its atexit close now gets through
        assert child.wait(DEADLOCK_GUARD) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    slow_disk.finish()
    episodes, report = read_episodes(slow_disk.copy, strict=True)
    assert report.lines_skipped == 0
    assert [(e.episode_id, e.metadata["revision"]) for e in episodes] == [
        (first, 1),
        (second, 1),
        (first, 2),
    ]
    assert episodes[-1].total_reward == 0.5


def test_an_episode_writer_over_a_fifo_skips_the_fsync_a_fifo_refuses(tmp_path: Path) -> None:
    """`EpisodeWriter` over a FIFO (what the slow disk above is): fsync fails there with
    EINVAL, so it is skipped instead of turning every written line into a failed write."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        probe = os.open(fifo, os.O_WRONLY)
        with pytest.raises(OSError) as refused:
            os.fsync(probe)
        os.close(probe)
        assert refused.value.errno == errno.EINVAL
        with EpisodeWriter(fifo, fsync=True) as writer:
            writer.write(_episode(0))
            writer.write(_episode(1))
        assert writer.torn_write is None and writer.episodes_written == 2
        data = os.read(reader, 1 << 16)
    finally:
        os.close(reader)
    first, second, end = data.split(b"\n")
    episodes = [Episode.model_validate_json(line) for line in (first, second)]
    assert [(e.episode_id, e.transitions[0].action) for e in episodes] == [
        ("e0", "a0"),
        ("e1", "a1"),
    ]
    assert end == b""
