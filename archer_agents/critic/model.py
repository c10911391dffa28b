"""ArCHer's utterance-level critic: two Q heads and two V heads over one text encoder.

The critic judges whole utterances, not tokens: the observation (the whole
history) and the action (one utterance) are encoded separately by one shared
encoder; Q heads read ``[h_obs; h_act]`` and V heads read ``h_obs``. Two heads
of each kind give the double-critic minimum that keeps the advantage from
being overestimated. A target copy, moved towards the online critic by Polyak
averaging after every critic step, supplies the TD targets
(see `archer_agents.training.losses`).

With ``freeze_encoder=True`` the encoder stops training and its encodings are
cached by text (`CachedEncoder`), so a critic step costs little more than its
heads. The target copy then shares the frozen encoder and its cache instead of
holding a second, identical copy of it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from archer_agents.critic.encoders import CachedEncoder, TextEncoder

logger = logging.getLogger(__name__)


def _mlp(in_features: int, hidden_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, hidden_size),
        nn.ReLU(),
        nn.Linear(hidden_size, hidden_size),
        nn.ReLU(),
        nn.Linear(hidden_size, 1),
    )


class DoubleCritic(nn.Module):
    """Q(s, a) and V(s), two heads each, over a shared text encoder."""

    def __init__(
        self,
        encoder: nn.Module,
        *,
        hidden_size: int = 256,
        freeze_encoder: bool = False,
        cache_size: int = 10_000,
        seed: int | None = None,
    ) -> None:
        """
        Args:
            encoder: an `nn.Module` with ``hidden_size`` and ``encode(texts) -> (B, H)``
                (see `archer_agents.critic.encoders`).
            hidden_size: width of the two hidden layers of each head.
            freeze_encoder: keep the encoder's weights fixed and cache its encodings.
            cache_size: most texts the frozen-encoder cache keeps (least recently used go).
            seed: when given, the heads' initial weights depend only on it.
        """
        super().__init__()
        if not isinstance(encoder, nn.Module) or not isinstance(encoder, TextEncoder):
            raise TypeError(
                "DoubleCritic needs an nn.Module encoder with hidden_size and "
                f"encode(texts) -> (B, H); got {type(encoder).__name__}. "
                "Use one from archer_agents.critic.encoders."
            )
        self.freeze_encoder = freeze_encoder
        self.encoder: nn.Module = (
            CachedEncoder(encoder, max_size=cache_size) if freeze_encoder else encoder
        )
        width = int(encoder.hidden_size)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.q_heads = nn.ModuleList([_mlp(2 * width, hidden_size) for _ in range(2)])
            self.v_heads = nn.ModuleList([_mlp(width, hidden_size) for _ in range(2)])

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """(B, H) encodings on the heads' device."""
        device = next(self.q_heads.parameters()).device
        encoded = cast(TextEncoder, self.encoder).encode(texts)  # (B, H)
        return encoded.to(device)

    def q_from_encodings(self, h_obs: torch.Tensor, h_act: torch.Tensor) -> torch.Tensor:
        pair = torch.cat([h_obs, h_act], dim=-1)  # (B, 2H)
        return torch.cat([head(pair) for head in self.q_heads], dim=-1)  # (B, 2)

    def v_from_encodings(self, h_obs: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(h_obs) for head in self.v_heads], dim=-1)  # (B, 2)

    def q(self, observations: Sequence[str], actions: Sequence[str]) -> torch.Tensor:
        """Both Q heads for each (observation, utterance) pair: (B, 2)."""
        if len(observations) != len(actions):
            raise ValueError(
                f"q() got {len(observations)} observations but {len(actions)} actions; "
                "pass one action per observation"
            )
        return self.q_from_encodings(self.encode(observations), self.encode(actions))

    def v(self, observations: Sequence[str]) -> torch.Tensor:
        """Both V heads for each observation: (B, 2)."""
        return self.v_from_encodings(self.encode(observations))

    def forward(
        self, observations: Sequence[str], actions: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Q (B, 2) and V (B, 2), encoding each observation once for both."""
        if len(observations) != len(actions):
            raise ValueError(
                f"got {len(observations)} observations but {len(actions)} actions; "
                "pass one action per observation"
            )
        h_obs = self.encode(observations)  # (B, H)
        h_act = self.encode(actions)  # (B, H)
        return self.q_from_encodings(h_obs, h_act), self.v_from_encodings(h_obs)


def make_target(critic: DoubleCritic) -> DoubleCritic:
    """A full copy of ``critic`` for TD targets, not trained by any optimiser.

    A frozen encoder (and its cache) is shared with the online critic rather
    than copied: its weights never change, so the copy would be identical.
    """
    memo: dict[int, object] = {}
    if critic.freeze_encoder:
        memo[id(critic.encoder)] = critic.encoder
    target = copy.deepcopy(critic, memo)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float = 0.1) -> None:
    """Move ``target`` towards ``online``: theta_bar <- (1 - tau) * theta_bar + tau * theta.

    ArCHer calls this after every critic step with tau = 0.1. Parameters the two
    modules share (a frozen encoder) are left alone; buffers are copied.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"polyak tau must lie in [0, 1], got {tau}")
    target_params = dict(target.named_parameters())
    online_params = dict(online.named_parameters())
    if target_params.keys() != online_params.keys():
        missing = sorted(online_params.keys() ^ target_params.keys())[:5]
        raise ValueError(
            f"target and online modules differ in parameters (e.g. {missing}); "
            "build the target with make_target(online)"
        )
    for name, source in online_params.items():
        if target_params[name] is not source:
            target_params[name].lerp_(source, tau)
    online_buffers = dict(online.named_buffers())
    for name, buffer in target.named_buffers():
        if buffer is not online_buffers[name]:
            buffer.copy_(online_buffers[name])


__all__ = ["DoubleCritic", "make_target", "polyak_update"]
