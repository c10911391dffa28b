"""The utterance-level critic's settings, shared by ArCHer, CHAI and offline ArCHer.

All three train the double critic (`archer_agents.critic.model.DoubleCritic`) with a
Polyak-averaged target from a replay buffer; only the loss differs (ArCHer's TD
online and for CHAI, IQL offline). Their configs inherit these fields, so a
critic is described the same way whichever algorithm trains it. Defaults are the public
code's (docs/algorithm.md, "The loop"), except the encoder: the hashing encoder trains
on a CPU in seconds; pass ``"minilm"`` or a model directory for a
transformers encoder like the paper's RoBERTa.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from archer_agents.critic.encoders import load_encoder
from archer_agents.critic.model import DoubleCritic, make_target


class CriticSettings(BaseModel):
    """How the double critic is built and trained."""

    model_config = ConfigDict(extra="forbid")

    encoder: str = "hashing"
    """Critic text encoder: "hashing", "minilm", or a transformers model directory / hub id."""
    freeze_encoder: bool = False
    """Keep the encoder's weights fixed and cache its encodings (only the heads train)."""
    critic_hidden_size: int = Field(256, ge=1)
    """Width of the hidden layers of each Q and V head."""
    critic_lr: float = Field(2e-5, gt=0.0)
    """Adam learning rate of the critic."""
    critic_steps: int = Field(50, ge=1)
    """Critic gradient steps per iteration."""
    critic_batch_size: int = Field(256, ge=1)
    """Transitions per critic step, drawn uniformly from the replay buffer."""
    gamma: float = Field(0.95, ge=0.0, le=1.0)
    """Discount per utterance."""
    polyak_tau: float = Field(0.1, ge=0.0, le=1.0)
    """Target update after every critic step: target <- (1 - tau) * target + tau * online."""
    buffer_capacity: int = Field(100_000, ge=1)
    """Most transitions the replay buffer keeps; the oldest go first."""
    max_grad_norm: float = Field(1.0, gt=0.0)
    """Gradient-norm clip, applied by each optimiser to its own parameters."""
    seed: int = 0
    """Seeds the critic's initial weights and the replay buffer's sampling."""


def build_critic(settings: CriticSettings) -> tuple[DoubleCritic, DoubleCritic]:
    """A fresh online critic and its target copy, as ``settings`` describe."""
    critic = DoubleCritic(
        load_encoder(settings.encoder, seed=settings.seed),
        hidden_size=settings.critic_hidden_size,
        freeze_encoder=settings.freeze_encoder,
        seed=settings.seed,
    )
    return critic, make_target(critic)


def critic_and_target(
    settings: CriticSettings,
    critic: DoubleCritic | None = None,
    target: DoubleCritic | None = None,
) -> tuple[DoubleCritic, DoubleCritic]:
    """The critic to continue from and its target, or fresh ones built from ``settings``.

    A critic without a target gets a copy as its target; a target without its
    critic is a mistake.
    """
    if critic is None:
        if target is not None:
            raise ValueError("a target critic was given without its online critic; pass both")
        return build_critic(settings)
    return critic, target if target is not None else make_target(critic)


def critic_optimizer(critic: DoubleCritic, settings: CriticSettings) -> torch.optim.Adam:
    """Adam over the critic's trainable parameters (the heads only with a frozen encoder)."""
    return torch.optim.Adam(
        [p for p in critic.parameters() if p.requires_grad], lr=settings.critic_lr
    )


__all__ = ["CriticSettings", "build_critic", "critic_and_target", "critic_optimizer"]
