"""The contract between the training loop and each algorithm.

The loop (`training/trainer.py`) reads like the loop in docs/algorithm.md: collect
episodes with the algorithm's actor, hand them to the algorithm, let it update,
evaluate, log, checkpoint. Everything specific to ArCHer, its baselines and its
offline variant lives behind this small interface, so they share the collector,
the replay buffer, the policy, the metrics and the checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from archer_agents.data.schema import Episode
from archer_agents.training.rollout import Actor


class Algorithm(Protocol):
    """One training method (ArCHer, PPO, filtered BC, CHAI, offline ArCHer, ...)."""

    name: str
    """Short name used in metrics and on the command line (e.g. ``archer``)."""

    def actor(self) -> Actor:
        """How rollouts choose utterances now (a policy, or critic-ranked sampling)."""
        ...

    def observe(self, episodes: Sequence[Episode]) -> None:
        """Take newly collected episodes (into a replay buffer, an on-policy batch, ...)."""
        ...

    def update(self, iteration: int) -> dict[str, float]:
        """Run this iteration's gradient steps; return namespaced metrics (``critic/...``)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: weights, optimisers, buffers, counters."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        ...
