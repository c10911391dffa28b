"""Episode logs: JSONL, one episode a line, appended and fsynced per episode.

The reader never drops data silently. A torn last line (the writer crashed
mid-line) is reported and skipped; any other bad line raises `EpisodeLogError`
naming the file and line, or, with ``strict=False``, is reported and counted in
the returned `ReadReport`.
"""

from __future__ import annotations

import json
import logging
import os
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
    """What a read found besides the episodes."""

    episodes_read: int = 0
    torn_last_line: bool = False
    bad_lines: list[EpisodeLogError] = field(default_factory=list)

    @property
    def lines_skipped(self) -> int:
        return len(self.bad_lines) + int(self.torn_last_line)


class EpisodeWriter:
    """Appends episodes to a JSONL file; each `write` is flushed and fsynced.

    If the file ends in a torn line (a previous writer crashed), a newline is
    added first so the torn line stays isolated and the new episodes stay readable.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._file = self.path.open("ab")
        if self._file.tell() > 0 and not _ends_with_newline(self.path):
            logger.warning("%s ends in a torn line; new episodes start on a fresh line", self.path)
            self._file.write(b"\n")
        self.episodes_written = 0

    def write(self, episode: Episode) -> None:
        line = episode.model_dump_json().encode("utf-8") + b"\n"
        self._file.write(line)
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())
        self.episodes_written += 1

    def write_all(self, episodes: Iterable[Episode]) -> None:
        for episode in episodes:
            self.write(episode)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


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


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def iter_episodes(
    path: str | os.PathLike[str], *, strict: bool = True, report: ReadReport | None = None
) -> Iterator[Episode]:
    """Yield the episodes of one log file.

    A final line without a trailing newline that fails to parse is a torn write:
    it is logged, recorded in `report.torn_last_line` and skipped. Any other line
    that fails raises `EpisodeLogError` (``strict=True``) or is logged and
    appended to `report.bad_lines` (``strict=False``).
    """
    path = Path(path)
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
                continue
            if strict:
                raise error from exc
            logger.warning("skipping bad line %s", error)
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
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(payload, dict):
        raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
    try:
        return Episode.model_validate(payload)
    except ValidationError as exc:
        raise ValueError(f"not a valid episode: {_short(str(exc))}") from exc


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
