"""The episode schema: utterance-level transitions, shared by every part of the project.

Environments, the rollout collector, the LangChain recorder, the replay buffer and
the offline trainer all speak this one schema. It is versioned so that a log
written today can be read (or refused with a clear message) by a later release.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1
"""Version of the on-disk episode format. Bumped on any incompatible change."""

EpisodeSource = Literal["environment", "langchain", "import"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Transition(BaseModel):
    """One high-level step: the agent saw `observation`, said `action`, got `reward`."""

    model_config = ConfigDict(extra="forbid")

    observation: str
    """The state as text: the whole history the policy saw before acting."""
    action: str
    """One utterance of the agent (a question, a tool call, a message)."""
    reward: float
    """Reward received for this action."""
    next_observation: str
    """The state after the environment answered."""
    terminated: bool = False
    """The episode reached a terminal state (no bootstrapping past it)."""
    truncated: bool = False
    """The episode was cut by a time limit; ArCHer treats this as done too."""
    info: dict[str, Any] = Field(default_factory=dict)
    """Environment diagnostics for this step (errors, tool names, ...)."""
    prompt_token_ids: list[int] | None = None
    """Token ids of the prompt exactly as the policy saw it, when known."""
    action_token_ids: list[int] | None = None
    """Token ids exactly as sampled (end-of-utterance token included), when known."""
    action_logprobs: list[float] | None = None
    """Per-token log-probabilities at sampling time, aligned with `action_token_ids`."""
    policy_version: str | None = None
    """Which policy (checkpoint or adapter version) produced the action."""

    @model_validator(mode="after")
    def _logprobs_align(self) -> Transition:
        if self.action_logprobs is not None and self.action_token_ids is None:
            raise ValueError("action_logprobs given without action_token_ids")
        if (
            self.action_logprobs is not None
            and self.action_token_ids is not None
            and len(self.action_logprobs) != len(self.action_token_ids)
        ):
            raise ValueError(
                f"action_logprobs has {len(self.action_logprobs)} entries but "
                f"action_token_ids has {len(self.action_token_ids)}; they must align one per token"
            )
        return self

    @property
    def done(self) -> bool:
        """Terminated or truncated: the end of the episode either way."""
        return self.terminated or self.truncated


class Episode(BaseModel):
    """A whole interaction, one line of an episode log."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    episode_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    env_id: str
    """Gymnasium id of the environment, or a free name for LangChain/imported logs."""
    task_id: str | None = None
    seed: int | None = None
    source: EpisodeSource = "environment"
    transitions: list[Transition] = Field(default_factory=list)
    total_reward: float | None = None
    """Sum of rewards; None while a reward has yet to arrive (production logs)."""
    success: bool | None = None
    started_at: datetime = Field(default_factory=_now)
    ended_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_version(self) -> Episode:
        if self.schema_version > SCHEMA_VERSION:
            raise ValueError(
                f"episode schema_version {self.schema_version} is newer than this release "
                f"understands ({SCHEMA_VERSION}); upgrade archer-agents to read it"
            )
        return self

    @property
    def num_turns(self) -> int:
        return len(self.transitions)

    def finalize(self, success: bool | None = None) -> Episode:
        """Fill `total_reward`, `success` and `ended_at` from the transitions."""
        self.total_reward = float(sum(t.reward for t in self.transitions))
        if success is not None:
            self.success = success
        self.ended_at = _now()
        return self
