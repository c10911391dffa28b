"""CHAI: act by sampling several utterances and taking the one the critic values most.

CHAI (Verma et al., "CHAI: A CHatbot AI for Task-Oriented Dialogue with
Offline Reinforcement Learning", NAACL 2022) as the ArCHer paper (Zhou et al.,
ICML 2024, arXiv 2402.19446) runs it for comparison: the same double critic
as ArCHer, trained the same way (TD for Q onto the target V at the next state,
V onto the target Q at an utterance freshly sampled from the policy; Polyak
target, uniform replay), and no actor update. To act, the policy samples
``num_candidates`` utterances per observation, all in one batched generation,
and the one with the highest target min Q is said.

Choices, and where this departs from the paper:

- The V target samples one utterance from the (never trained) policy, exactly
  ArCHer's target, so the critic values the sampling policy; ranking by it is
  one step of policy improvement, which is what CHAI is. The critic loss is
  `training.losses.critic_loss`, the function ArCHer's critic uses.
- The transitions record the chosen utterance's own sampling log-probabilities
  under the policy, not the probability of the best-of-k choice.
- `rank_candidates` (`archer_agents.critic.ranking`) is a plain function of a
  critic, so a deployed agent ranks its candidates the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from archer_agents.critic.model import DoubleCritic, polyak_update
from archer_agents.critic.ranking import candidate_values, rank_candidates
from archer_agents.data.schema import Episode
from archer_agents.environments.base import TextEnv
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import Generation, Policy, SamplingParams, policy_prompt
from archer_agents.training.algorithm import unique_modules
from archer_agents.training.critic_config import CriticSettings, critic_and_target, critic_optimizer
from archer_agents.training.losses import critic_loss
from archer_agents.training.replay_buffer import ReplayBuffer
from archer_agents.training.rollout import Actor
from archer_agents.training.updates import clip_and_step, module_device, rewards_and_dones

logger = logging.getLogger(__name__)

STATE_VERSION = 1


class ChaiConfig(CriticSettings):
    """Settings of CHAI: the critic's (see `CriticSettings`) plus how to act."""

    num_candidates: int = Field(5, ge=1)
    """Utterances sampled per observation when acting; the best by target min Q is said."""
    max_new_tokens: int = Field(32, ge=1)
    """Longest sampled utterance in tokens, end-of-utterance token included."""
    temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature of the candidates and of the V target's utterance."""


class ChaiActor:
    """Samples ``num_candidates`` utterances per observation in one batch, says the best."""

    def __init__(
        self,
        policy: Policy,
        critic: DoubleCritic,
        num_candidates: int,
        sampling: SamplingParams | None = None,
    ) -> None:
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be at least 1, got {num_candidates}")
        self.policy = policy
        self.critic = critic
        self.num_candidates = num_candidates
        self.sampling = sampling or SamplingParams()

    def begin(self, slot: int, env: TextEnv, observation: str, info: dict[str, Any]) -> None:
        return None

    def act(self, slots: Sequence[int], observations: Sequence[str]) -> list[Generation]:
        k = self.num_candidates
        repeated = [obs for obs in observations for _ in range(k)]
        generations = self.policy.generate(repeated, self.sampling)  # k * N, grouped by obs
        groups = [generations[i * k : (i + 1) * k] for i in range(len(observations))]
        best = rank_candidates(self.critic, observations, [[g.text for g in g_] for g_ in groups])
        return [group[index] for group, index in zip(groups, best, strict=True)]


class Chai:
    """CHAI as an `Algorithm`: ArCHer's critic, critic-ranked sampling, no actor update."""

    name = "chai"
    online = True

    def __init__(
        self,
        config: ChaiConfig,
        policy: LocalPolicy,
        *,
        critic: DoubleCritic | None = None,
        target: DoubleCritic | None = None,
    ) -> None:
        """``critic`` (and its ``target``) default to fresh ones built from ``config``."""
        self.config = config
        self.policy = policy
        self.critic, self.target = critic_and_target(config, critic, target)
        self.critic_optimizer = critic_optimizer(self.critic, config)
        self.buffer = ReplayBuffer(config.buffer_capacity, seed=config.seed)
        self.sampling = SamplingParams(
            max_new_tokens=config.max_new_tokens, temperature=config.temperature
        )
        self.critic_updates = 0

    def modules(self) -> list[nn.Module]:
        """The policy's model, the critic and its target."""
        return unique_modules(self.policy.model, self.critic, self.target)

    def actor(self) -> Actor:
        return ChaiActor(self.policy, self.target, self.config.num_candidates, self.sampling)

    def observe(self, episodes: Sequence[Episode]) -> None:
        for episode in episodes:
            self.buffer.add_episode(episode)

    def update(self, iteration: int) -> dict[str, float]:
        if len(self.buffer) == 0:
            logger.info("CHAI's replay buffer is empty; skipping update %d", iteration)
            return {}
        history = [self.critic_step() for _ in range(self.config.critic_steps)]
        metrics = {f"critic/{k}": float(np.mean([h[k] for h in history])) for k in history[0]}
        metrics["critic/buffer_size"] = float(len(self.buffer))
        return metrics

    def critic_step(self) -> dict[str, float]:
        """One critic step on a batch from the buffer (ArCHer's targets), then the Polyak update."""
        config = self.config
        batch = self.buffer.sample(config.critic_batch_size)
        observations = [t.observation for t in batch]
        actions = [t.action for t in batch]
        rewards, dones = rewards_and_dones(batch, module_device(self.critic))
        with torch.no_grad():
            prompts = [policy_prompt(t) for t in batch]
            sampled = [g.text for g in self.policy.generate(prompts, self.sampling)]
            target_v_next = self.target.v([t.next_observation for t in batch])  # (B, 2)
            target_q_pi = self.target.q(observations, sampled)  # (B, 2)
        q_pred, v_pred = self.critic(observations, actions)  # (B, 2), (B, 2)
        loss, metrics = critic_loss(
            q_pred, v_pred, rewards, dones, target_v_next, target_q_pi, config.gamma
        )
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        metrics["grad_norm"] = clip_and_step(
            self.critic_optimizer,
            (p for p in self.critic.parameters() if p.requires_grad),
            config.max_grad_norm,
        )
        polyak_update(self.target, self.critic, config.polyak_tau)
        self.critic_updates += 1
        return metrics

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "critic": self.critic.state_dict(),
            "target": self.target.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "buffer": self.buffer.state_dict(),
            "critic_updates": self.critic_updates,
        }
        if self.policy.generator is not None:
            state["policy_generator"] = self.policy.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"CHAI state has version {state.get('version')!r}, this release reads "
                f"version {STATE_VERSION}"
            )
        self.critic.load_state_dict(state["critic"])
        self.target.load_state_dict(state["target"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.buffer.load_state_dict(state["buffer"])
        self.critic_updates = int(state["critic_updates"])
        if "policy_generator" in state and self.policy.generator is not None:
            self.policy.generator.set_state(state["policy_generator"])


__all__ = ["Chai", "ChaiActor", "ChaiConfig", "candidate_values", "rank_candidates"]
