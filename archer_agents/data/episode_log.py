"""Episode logs: JSONL, one episode a line, appended and fsynced per episode.

The reader never drops data silently and never fails with anything but a
named error. A torn last line (a writer crashed mid-line, or is still writing)
is reported and skipped. Any other unreadable line, wherever it sits (a torn
tail that a later writer isolated with a newline and appended after, flipped
bytes, invalid UTF-8, JSON that is not an episode), raises `EpisodeLogError`
naming ``file:line`` (``strict=True``), or, with ``strict=False``, is logged,
skipped and counted in the returned `ReadReport`, whose `ReadReport.summary`
is one line for a command to print.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from pydantic import ValidationError

from archer_agents.data.schema import Episode

logger = logging.getLogger(__name__)


class EpisodeLogError(ValueError):
    """A line of an episode log could not be read."""

    def __init__(self, path: Path, line_number: int, reason: str) -> None:
        self.path = path
        self.line_number = line_number
        self.reason = reason
        super().__init__(f"{path}:{line_number}: {reason}")


@dataclass
class ReadReport:
    """What a read found besides the episodes (one report may span several files)."""

    episodes_read: int = 0
    torn_last_line: bool = False
    """Some file ended in a torn line (listed in `torn_tails`)."""
    bad_lines: list[EpisodeLogError] = field(default_factory=list)
    """Unreadable lines other than a torn last line, skipped with ``strict=False``."""
    torn_tails: list[EpisodeLogError] = field(default_factory=list)
    """Each file's torn last line, skipped in either mode."""

    @property
    def lines_skipped(self) -> int:
        return len(self.bad_lines) + max(len(self.torn_tails), int(self.torn_last_line))

    @property
    def skipped(self) -> list[EpisodeLogError]:
        """Every skipped line, in file and line order within each file."""
        return sorted(
            [*self.bad_lines, *self.torn_tails],
            key=lambda error: (str(error.path), error.line_number),
        )

    def summary(self, limit: int = 3) -> str:
        """One line: how many lines were skipped, the first ``limit`` as file:line, why.

        Empty when nothing was skipped.
        """
        skipped = self.skipped
        if not skipped and not self.lines_skipped:
            return ""
        count = max(len(skipped), self.lines_skipped)
        shown = ", ".join(f"{e.path}:{e.line_number}" for e in skipped[:limit])
        more = f" and {count - limit} more" if count > limit else ""
        first = f" (first: {_short(skipped[0].reason, 120)})" if skipped else ""
        return f"skipped {count} unreadable line(s): {shown}{more}{first}"


@dataclass(frozen=True)
class TornWrite:
    """Where a failed `EpisodeWriter.write` may have left part of its line behind.

    ``offset`` is the file size before the write, ``line`` the bytes it was writing. A
    later writer given this (``EpisodeWriter(path, repair=...)``) cuts the file back to
    ``offset`` if, and only if, the bytes after ``offset`` are a prefix of ``line``
    (nobody appended after the fragment), so the episode can be written again whole.
    """

    offset: int
    line: bytes


class EpisodeWriter:
    """Appends episodes to a JSONL file; each `write` is flushed and fsynced.

    If the file ends in a torn line (a previous writer crashed), a newline is
    added first so the torn line stays isolated and the new episodes stay readable.

    A `write` that fails (a full disk, a file system gone read-only, a descriptor
    closed underneath) raises `OSError` and leaves no part of its line in the file:
    the fragment is cut off again (a line glued to a fragment would be lost with it).
    If even that fails, `torn_write` says where the fragment is, and a writer opened
    later with ``repair=writer.torn_write`` removes it before appending. The file is
    written through a raw descriptor: nothing is buffered for `close` to retry (and
    fail on) later, and a descriptor that was closed and reused underneath is noticed
    (another file's identity) instead of written into, and never closed by `close`.

    The path may also name a FIFO (another process reads the episodes as they come):
    writes then block while the reader lags, and ``fsync`` is skipped, as it is for
    anything but a regular file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: bool = True,
        repair: TornWrite | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self.torn_write: TornWrite | None = None
        """A failed write's fragment that could not be removed (see the class docstring)."""
        self.episodes_written = 0
        # Read access too, to compare a fragment with the line that left it.
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self._lost = False
        try:
            status = os.fstat(self._fd)
            self._identity = _identity(status)
            # fsync fails (EINVAL) on a FIFO or a character device; nothing to sync there.
            self._fsync = fsync and stat.S_ISREG(status.st_mode)
            if repair is not None:
                removed = _cut_fragment(self._fd, repair)
                if removed:
                    logger.warning(
                        "%s: removed the %d bytes an earlier failed write left", self.path, removed
                    )
            if self._size() > 0 and os.pread(self._fd, 1, self._size() - 1) != b"\n":
                # Without the newline the next episode would be glued onto the fragment and
                # the line would be lost with it; isolated, only the fragment is skipped.
                logger.warning(
                    "%s ends in a torn line (line %d, a writer crashed mid-write); it is closed "
                    "with a newline so new episodes start on a fresh line, and readers skip it",
                    self.path,
                    _count_lines(self.path),
                )
                self._append(b"\n")
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def write(self, episode: Episode) -> None:
        """Append ``episode`` as one line; on failure raise `OSError`, leaving no fragment."""
        line = episode.model_dump_json().encode("utf-8") + b"\n"
        if self._fd < 0:
            raise OSError(errno.EBADF, f"the writer of {self.path} is closed")
        offset = self._size()
        try:
            self._append(line)
        except OSError:
            self._undo(TornWrite(offset, line))
            raise
        self.episodes_written += 1

    def write_all(self, episodes: Iterable[Episode]) -> None:
        for episode in episodes:
            self.write(episode)

    def close(self) -> None:
        """Close the file. Never raises: nothing is buffered, so nothing can be lost here."""
        fd, self._fd = self._fd, -1
        if fd >= 0 and not self._lost:
            try:
                os.close(fd)
            except OSError as exc:  # closed underneath
                logger.debug("closing %s: %s", self.path, exc)

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            self.close()

    # -- internals ------------------------------------------------------------------
    def _size(self) -> int:
        """The file's size, after checking that the descriptor still reaches our file.

        A descriptor closed underneath and reused by another open would otherwise take
        the episodes elsewhere without an error (and `close` would close someone else's).
        """
        try:
            status = os.fstat(self._fd)
        except OSError:
            self._lost = True
            raise
        if _identity(status) != self._identity:
            self._lost = True
            raise OSError(
                errno.EBADF,
                f"the descriptor of {self.path} was closed and now reaches another file",
            )
        return status.st_size

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            if not written:  # nothing more fits
                raise OSError(errno.ENOSPC, f"no space left for {self.path}")
            view = view[written:]
        if self._fsync:
            os.fsync(self._fd)

    def _undo(self, torn: TornWrite) -> None:
        """Cut a failed write's fragment off; if that fails, remember it in `torn_write`."""
        try:
            if self._lost:
                raise OSError(errno.EBADF, "the descriptor is no longer this file's")
            removed = _cut_fragment(self._fd, torn)
        except OSError as exc:
            logger.warning(
                "%s: could not remove what a failed write left (%s); the next writer will",
                self.path,
                exc,
            )
            self.torn_write = torn
            return
        if removed:
            logger.warning(
                "%s: removed the %d bytes a failed write left, so the next line starts clean",
                self.path,
                removed,
            )


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def _cut_fragment(fd: int, torn: TornWrite) -> int:
    """Truncate ``fd`` back to ``torn.offset`` if what follows is a prefix of ``torn.line``.

    Returns how many bytes were removed (0 when there was nothing of ours to remove).
    """
    size = os.fstat(fd).st_size
    extra = size - torn.offset
    if extra <= 0 or extra > len(torn.line):
        return 0
    if os.pread(fd, extra, torn.offset) != torn.line[:extra]:
        return 0  # someone else's bytes: never cut them
    os.ftruncate(fd, torn.offset)
    os.fsync(fd)
    return extra


def latest_revisions(episodes: Iterable[Episode]) -> list[Episode]:
    """One episode per id: its highest ``metadata["revision"]`` (the last line on a tie).

    A recorder writes an episode again when feedback arrives after it was
    written; read logs through this before training. Order follows each id's
    first appearance.
    """
    best: dict[str, Episode] = {}
    for episode in episodes:
        current = best.get(episode.episode_id)
        revision = int(episode.metadata.get("revision", 0))
        if current is None or revision >= int(current.metadata.get("revision", 0)):
            best[episode.episode_id] = episode
    return list(best.values())


def _count_lines(path: Path) -> int:
    """The 1-based number of the last line of ``path`` (for messages)."""
    count = 1
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            count += block.count(b"\n")
    return count


def iter_episodes(
    path: str | os.PathLike[str], *, strict: bool = True, report: ReadReport | None = None
) -> Iterator[Episode]:
    """Yield the episodes of one log file.

    A final line without a trailing newline that fails to parse is a torn write:
    it is logged, recorded in ``report.torn_tails`` and skipped in either mode
    (a writer may still be appending). Any other line that fails, wherever it
    sits, raises `EpisodeLogError` naming ``file:line`` (``strict=True``) or is
    logged and appended to ``report.bad_lines`` (``strict=False``). Whatever
    the bytes, nothing else is raised.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"episode log {path} is a directory; pass the JSONL file (a run's log is "
            f"{path / 'episodes.jsonl'})"
        )
    if not path.exists():
        raise FileNotFoundError(f"episode log {path} does not exist; check the path")
    report = report if report is not None else ReadReport()
    with path.open("rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    # After the final "\n" split() leaves b""; a non-empty last piece has no newline.
    last_index = len(lines) - 1
    for index, raw in enumerate(lines):
        if not raw.strip():
            continue
        line_number = index + 1
        try:
            episode = _parse_line(raw)
        except ValueError as exc:
            error = EpisodeLogError(path, line_number, str(exc))
            if index == last_index:
                logger.warning("%s: torn last line skipped (%s)", path, _short(str(exc)))
                report.torn_last_line = True
                report.torn_tails.append(error)
                continue
            if strict:
                raise error from None
            logger.warning("skipping bad line %s", _short(str(error)))
            report.bad_lines.append(error)
            continue
        report.episodes_read += 1
        yield episode


def read_episodes(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    strict: bool = True,
) -> tuple[list[Episode], ReadReport]:
    """Read one or more logs into memory; return the episodes and what was skipped."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    report = ReadReport()
    episodes: list[Episode] = []
    for path in paths:
        episodes.extend(iter_episodes(path, strict=strict, report=report))
    return episodes, report


def _parse_line(raw: bytes) -> Episode:
    """One line as an `Episode`; any failure is a `ValueError` saying why, in one line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        payload = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg}: column {exc.colno})") from None
    except RecursionError:
        raise ValueError("not an episode (JSON nested too deeply)") from None
    except ValueError as exc:  # a non-finite number, an integer over Python's digit limit
        raise ValueError(f"not JSON ({_short(str(exc), 120)})") from None
    if not isinstance(payload, dict):
        raise ValueError(f"expected a JSON object (an episode), got {type(payload).__name__}")
    if "\\u" in text and _has_lone_surrogate(payload):
        # json accepts "\ud800"; such a string cannot be encoded, tokenized or written back.
        raise ValueError("a string holds a lone UTF-16 surrogate escape (\\ud800-\\udfff)")
    try:
        return Episode.model_validate(payload)
    except ValidationError as exc:
        raise ValueError(f"not a valid episode: {_short(str(exc))}") from None
    except (RecursionError, TypeError, ValueError) as exc:
        raise ValueError(f"not a valid episode: {type(exc).__name__}: {_short(str(exc))}") from None


def _reject_constant(name: str) -> float:
    """NaN and Infinity are not JSON; a NaN reward would poison training silently."""
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{_short(text, 40)} overflows a float")
    return value


def _has_lone_surrogate(value: object) -> bool:
    """Whether any string in a parsed JSON value (keys too) holds an unpaired surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
