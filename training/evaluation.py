"""Summaries of a set of episodes, as every report prints them.

Intervals are 95% bootstrap intervals over tasks: episodes of the same task are
averaged first, so repeating a task does not shrink the interval artificially.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from archer_agents.data.schema import Episode
from archer_agents.data.stats import Estimate, bootstrap_mean


@dataclass(frozen=True)
class Summary:
    episodes: int
    tasks: int
    success: Estimate
    mean_return: Estimate
    mean_turns: float
    invalid_action_rate: float
    """Share of turns whose utterance the environment could not understand."""
    tool_error_rate: float
    """Share of turns whose well-formed tool call failed."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self, prefix: str) -> dict[str, float]:
        """Flat metrics under ``prefix/`` for the metrics log."""
        return {
            f"{prefix}/success": self.success.mean,
            f"{prefix}/success_low": self.success.low,
            f"{prefix}/success_high": self.success.high,
            f"{prefix}/return_mean": self.mean_return.mean,
            f"{prefix}/return_low": self.mean_return.low,
            f"{prefix}/return_high": self.mean_return.high,
            f"{prefix}/turns_mean": self.mean_turns,
            f"{prefix}/invalid_action_rate": self.invalid_action_rate,
            f"{prefix}/tool_error_rate": self.tool_error_rate,
        }


def summarize(episodes: Sequence[Episode], *, seed: int = 0) -> Summary:
    """Success, return (with intervals over tasks), turns and error rates."""
    if not episodes:
        raise ValueError("summarize needs at least one episode")
    by_task: dict[str, list[Episode]] = defaultdict(list)
    for index, episode in enumerate(episodes):
        by_task[episode.task_id or f"episode-{index}"].append(episode)
    task_success = [float(np.mean([bool(e.success) for e in group])) for group in by_task.values()]
    task_return = [float(np.mean([_return(e) for e in group])) for group in by_task.values()]
    turns = [t for e in episodes for t in e.transitions]
    steps = max(len(turns), 1)
    return Summary(
        episodes=len(episodes),
        tasks=len(by_task),
        success=bootstrap_mean(task_success, seed=seed),
        mean_return=bootstrap_mean(task_return, seed=seed),
        mean_turns=float(np.mean([e.num_turns for e in episodes])),
        invalid_action_rate=sum(bool(t.info.get("invalid_action")) for t in turns) / steps,
        tool_error_rate=sum(bool(t.info.get("tool_error")) for t in turns) / steps,
    )


def rollout_metrics(episodes: list[Episode]) -> dict[str, float]:
    """``rollout/...`` figures of a batch of training episodes (no intervals: they are cheap)."""
    if not episodes:
        return {}
    turns = [t for e in episodes for t in e.transitions]
    invalid = sum(bool(t.info.get("invalid_action")) for t in turns) / max(len(turns), 1)
    returns = [
        e.total_reward if e.total_reward is not None else sum(t.reward for t in e.transitions)
        for e in episodes
    ]
    return {
        "rollout/return_mean": float(sum(returns) / len(returns)),
        "rollout/success": float(sum(bool(e.success) for e in episodes) / len(episodes)),
        "rollout/turns_mean": len(turns) / len(episodes),
        "rollout/invalid_action_rate": invalid,
        "rollout/valid_rate": 1.0 - invalid,
        "rollout/episodes": float(len(episodes)),
    }


def _return(episode: Episode) -> float:
    if episode.total_reward is not None:
        return episode.total_reward
    return float(sum(t.reward for t in episode.transitions))
