"""Offline-then-online ArCHer: learn from logs first, then keep learning from the policy's own play.

The design card's "production logs feed the next round of (offline, then
online) training": offline ArCHer (`training.offline_archer`, IQL critic and
AWR actor on a fixed buffer read from episode logs) runs for
``offline_iterations`` updates without touching an environment; then the SAME
policy, critic and target critic are handed to online ArCHer
(`training.archer.Archer`), which collects, fills its own replay buffer and
trains as usual.

As an `Algorithm` the switch is visible to the trainer through ``online``:
False during the offline phase (the trainer collects nothing and only
evaluates), True afterwards. Online iterations are counted from the switch, so
``online.warmup_iterations`` lets the critic, trained offline to value the
logged behaviour (V an upper expectile of Q at logged utterances), re-fit to
the current policy's own values before the actor moves. The online replay
buffer starts empty: what the logs taught travels in the weights. Online
ArCHer's KL anchor, if used, is the policy as the offline phase left it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from archer_agents.data.schema import Episode
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.training.algorithm import unique_modules
from archer_agents.training.algorithms.archer import Archer, ArcherConfig
from archer_agents.training.algorithms.offline_archer import OfflineArcher, OfflineArcherConfig
from archer_agents.training.rollout import Actor

logger = logging.getLogger(__name__)

STATE_VERSION = 1

CRITIC_SHAPE = ("encoder", "freeze_encoder", "critic_hidden_size")
"""Fields that decide the critic's architecture; both phases must agree on them."""


class OfflineThenOnlineConfig(BaseModel):
    """Settings of offline-then-online ArCHer: one section per phase."""

    model_config = ConfigDict(extra="forbid")

    offline_iterations: int = Field(100, ge=0)
    """Offline updates (IQL critic steps, then AWR actor steps) before going online."""
    offline: OfflineArcherConfig
    """The offline phase: the episode logs (``offline.data``), IQL and AWR settings."""
    online: ArcherConfig = Field(default_factory=ArcherConfig)
    """The online phase: ArCHer's settings; the critic and its shape come from `offline`."""

    @model_validator(mode="after")
    def _one_critic(self) -> OfflineThenOnlineConfig:
        differing = [
            name
            for name in CRITIC_SHAPE
            if name in self.online.model_fields_set
            and getattr(self.online, name) != getattr(self.offline, name)
        ]
        if differing:
            shown = ", ".join(
                f"{name}: offline {getattr(self.offline, name)!r} vs online "
                f"{getattr(self.online, name)!r}"
                for name in differing
            )
            raise ValueError(
                f"the online phase continues the offline critic, so its shape cannot change "
                f"({shown}); set these under offline only"
            )
        return self


class OfflineThenOnline:
    """Offline ArCHer for ``offline_iterations`` updates, then online ArCHer on the same weights."""

    name = "offline_then_online"

    def __init__(self, config: OfflineThenOnlineConfig, policy: LocalPolicy) -> None:
        self.config = config
        self.policy = policy
        self.offline = OfflineArcher(config.offline, policy)
        self.archer: Archer | None = None
        """Online ArCHer, built at the switch around the offline phase's policy and critic."""
        self.offline_updates = 0
        if config.offline_iterations == 0:
            self._go_online()

    @property
    def online(self) -> bool:
        """Whether the trainer should collect episodes: only after the offline phase."""
        return self.archer is not None

    def _go_online(self) -> Archer:
        self.archer = Archer(
            self.config.online,
            self.policy,
            critic=self.offline.critic,
            target=self.offline.target,
        )
        logger.info(
            "offline phase done after %d updates; online ArCHer takes over", self.offline_updates
        )
        return self.archer

    def modules(self) -> list[nn.Module]:
        """The offline phase's modules, and once online ArCHer's (the same policy and critics)."""
        return unique_modules(
            *self.offline.modules(), *(self.archer.modules() if self.archer is not None else [])
        )

    def actor(self) -> Actor:
        return self.archer.actor() if self.archer is not None else self.offline.actor()

    def observe(self, episodes: Sequence[Episode]) -> None:
        if self.archer is not None:
            self.archer.observe(episodes)
        else:
            self.offline.observe(episodes)

    def update(self, iteration: int) -> dict[str, float]:
        if self.archer is None:
            metrics = self.offline.update(iteration)
            self.offline_updates += 1
            if self.offline_updates >= self.config.offline_iterations:
                self._go_online()
            return {**metrics, "phase/online": 0.0}
        online_iteration = iteration - self.config.offline_iterations
        return {**self.archer.update(online_iteration), "phase/online": 1.0}

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "offline_updates": self.offline_updates,
        }
        if self.archer is None:
            state["offline"] = self.offline.state_dict()
        else:
            state["online"] = self.archer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"offline-then-online state has version {state.get('version')!r}, this release "
                f"reads version {STATE_VERSION}"
            )
        self.offline_updates = int(state["offline_updates"])
        if "online" in state:
            archer = self.archer or self._go_online()
            archer.load_state_dict(state["online"])
        else:
            self.archer = None
            self.offline.load_state_dict(state["offline"])


__all__ = ["OfflineThenOnline", "OfflineThenOnlineConfig"]
