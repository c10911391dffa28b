"""The contract between the training loop and each algorithm.

The loop (`training/trainer.py`) reads like the loop in docs/algorithm.md: collect
episodes with the algorithm's actor, hand them to the algorithm, let it update,
evaluate, log, checkpoint. Everything specific to ArCHer, its baselines and its
offline variant lives behind this small interface, so they share the collector,
the replay buffer, the policy, the metrics and the checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel
from torch import nn

from archer_agents.data.schema import Episode
from archer_agents.training.rollout import Actor

if TYPE_CHECKING:
    from archer_agents.policies.local_policy import LocalPolicy


@runtime_checkable
class Algorithm(Protocol):
    """One training method (ArCHer, PPO, filtered BC, CHAI, offline ArCHer, ...).

    Every member is one the trainer reads; each algorithm in
    ``training.algorithms`` implements all of them (the trainer probes none).
    """

    @property
    def name(self) -> str:
        """Short name used in metrics, ``run.json`` and checkpoints (e.g. ``archer``)."""
        ...

    @property
    def online(self) -> bool:
        """Whether the trainer collects episodes for it (False: updates and evaluations only)."""
        ...

    @property
    def config(self) -> BaseModel | None:
        """Its settings, recorded in ``run.json`` (None: nothing to record)."""
        ...

    @property
    def policy(self) -> LocalPolicy | None:
        """The policy it trains, exported beside each checkpoint (None: it trains none)."""
        ...

    def modules(self) -> list[nn.Module]:
        """The torch modules it trains or reads, each once: the policy's model, critics, ...

        Several processes start from process 0's copy of each, and each process
        must hold them on its own device.
        """
        ...

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


def unique_modules(*modules: nn.Module | None) -> list[nn.Module]:
    """The given modules without Nones and repeats, in order (for `Algorithm.modules`)."""
    found: dict[int, nn.Module] = {}
    for module in modules:
        if module is not None:
            found.setdefault(id(module), module)
    return list(found.values())


__all__ = ["Algorithm", "unique_modules"]
