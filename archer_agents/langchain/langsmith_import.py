"""LangSmith run exports as training episodes.

The export is read by `archer_agents.langchain.langsmith_export` (its format,
the message forms it reads, and how bad lines are reported are described
there). Each trace (a root run and its descendants) becomes one `Episode`
(``source="import"``, ``episode_id`` = the root run id), built by the function
that builds `EpisodeRecorder`'s episodes (`transitions.episode_transitions`): one
transition per ``llm`` run, in execution order, the observation rendered by
`prompts.render_messages` and the action by `prompts.render_action`, so an
imported trace and a recorded run of the same conversation give the same
transitions.

The reward is the score of one feedback key (``reward_key``; with one key in
the trace it is that key) on the last transition; a trace without that
feedback is imported with ``total_reward=None`` and
``metadata["reward_pending"]``. A ``success`` key, when present, sets
``Episode.success``. A run that cannot be read is reported with its line
number in `ImportReport.bad_lines`; nothing is dropped silently.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from archer_agents.data.schema import Episode
from archer_agents.langchain.langsmith_export import (
    BadLine,
    ExportedRun,
    ImportReport,
    RunFormatError,
    group_traces,
    model_call,
    read_runs,
    tool_message,
)
from archer_agents.langchain.redaction import Redactor, redact_episode
from archer_agents.langchain.transitions import ModelCall, episode_transitions

logger = logging.getLogger(__name__)


def import_langsmith(
    path: str | os.PathLike[str],
    *,
    env_id: str = "langsmith",
    reward_key: str | None = None,
    redact: Redactor | None = None,
) -> tuple[list[Episode], ImportReport]:
    """Read a LangSmith JSONL export into episodes (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LangSmith export {path} does not exist; check the path")
    with path.open("rb") as handle:
        return episodes_from_lines(
            handle, env_id=env_id, reward_key=reward_key, redact=redact, source_name=str(path)
        )


def episodes_from_lines(
    lines: Iterable[bytes | str],
    *,
    env_id: str = "langsmith",
    reward_key: str | None = None,
    redact: Redactor | None = None,
    source_name: str = "<export>",
) -> tuple[list[Episode], ImportReport]:
    """Episodes from the lines of an export; bad lines go to the report."""
    report = ImportReport()
    runs = list(read_runs(lines, report))
    report.runs_read = len(runs)
    traces = group_traces(runs, report)
    episodes = []
    for root, members in traces.items():
        episode = _episode(root, members, env_id, reward_key, report)
        if episode is None:
            continue
        if redact is not None:
            episode = redact_episode(episode, redact)
        episodes.append(episode)
        report.rewarded += int(episode.total_reward is not None)
    report.episodes = len(episodes)
    report.bad_lines.sort(key=lambda bad: bad.line)
    for bad in report.bad_lines:
        logger.warning("%s:%s", source_name, bad)
    return episodes, report


# -- one trace -------------------------------------------------------------------------


def _episode(
    root_id: str,
    members: list[ExportedRun],
    env_id: str,
    reward_key: str | None,
    report: ImportReport,
) -> Episode | None:
    root = next(run for run in members if run.id == root_id)
    calls: list[ModelCall] = []
    for run in members:
        run_type = run.data["run_type"]
        try:
            if run_type == "llm":
                calls.append(model_call(run))
            elif run_type == "tool" and calls:
                calls[-1].after.append(tool_message(run))
        except (RunFormatError, ValidationError, TypeError, ValueError, KeyError) as exc:
            report.bad_lines.append(
                BadLine(run.line, f"{run_type} run {run.id}: {_short(str(exc))}")
            )
    error = root.data.get("error")
    transitions = episode_transitions(calls, ended_with_error=bool(error))
    if not transitions:
        report.notes.append(
            f"line {root.line}: trace {root_id} ({root.data.get('name')!r}) has no readable "
            "llm run; no episode"
        )
        return None
    scores = _feedback_scores(members)
    reward = _reward(scores, reward_key, root_id)
    metadata: dict[str, Any] = {
        "run_name": root.data.get("name"),
        "tags": list(root.data.get("tags") or []),
        "langsmith_trace_id": root.data.get("trace_id") or root_id,
        "feedback": scores,
        "reward_pending": reward is None,
    }
    if root.data.get("session_id"):
        metadata["langsmith_session_id"] = str(root.data["session_id"])
    if error:
        metadata["error"] = _short(str(error))
    if reward is not None:
        transitions[-1].reward = reward
    success = scores.get("success")
    fields: dict[str, Any] = {
        "episode_id": root_id,
        "env_id": env_id,
        "source": "import",
        "transitions": transitions,
        "total_reward": reward,
        "success": None if success is None else success >= 0.5,
        "ended_at": root.data.get("end_time"),
        "metadata": metadata,
    }
    if root.data.get("start_time"):
        fields["started_at"] = root.data["start_time"]
    return Episode.model_validate(fields)


def _feedback_scores(members: Sequence[ExportedRun]) -> dict[str, float]:
    """Feedback scores of a trace by key: the root's first, then other runs'."""
    scores: dict[str, float] = {}
    for run in members:
        stats = run.data.get("feedback_stats") or {}
        if isinstance(stats, dict):
            for key, value in stats.items():
                score = _score(value.get("avg") if isinstance(value, dict) else value)
                if score is not None:
                    scores.setdefault(str(key), score)
        for entry in run.data.get("feedback") or []:
            if isinstance(entry, dict) and entry.get("key") is not None:
                score = _score(entry.get("score"))
                if score is not None:
                    scores.setdefault(str(entry["key"]), score)
    return scores


def _reward(scores: dict[str, float], reward_key: str | None, root_id: str) -> float | None:
    if reward_key is not None:
        return scores.get(reward_key)
    keys = [key for key in scores if key != "success"]
    if len(keys) > 1:
        raise ValueError(
            f"trace {root_id} has feedback keys {sorted(keys)}; say which is the reward "
            "(reward_key=..., or --reward-key on the command line)"
        )
    return scores[keys[0]] if keys else None


def _score(value: Any) -> float | None:
    """A feedback score as a number (True counts 1), or None when it is not one."""
    return float(value) if isinstance(value, int | float) else None


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
