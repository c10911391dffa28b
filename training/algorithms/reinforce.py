"""Trajectory-level REINFORCE with a batch-mean baseline: the simplest on-policy baseline.

REINFORCE (Williams, 1992) on whole episodes, the on-policy method docs/algorithm.md
compares ArCHer against at small scale: each episode's return G_i, minus the
mean return of the batch b, weights the log-probability of every token the
policy sampled in that episode:

    loss = -(1 / N) * sum_i (G_i - b) * sum_{t, k} log pi(token_{t,k} | s_t, tokens_{t,<k})

This is `losses.actor_loss` with one "utterance" per episode: the
concatenation of its utterances' per-token log-probabilities. Choices: G is
the undiscounted total reward (the trajectory-level objective); the baseline
includes the episode itself (the plain batch mean, slightly biased for small
batches); one optimiser step per batch, since a second step would be
off-policy; episodes are scored in chunks whose gradients accumulate, so a
large batch fits in memory; an episode's turns are scored in one packed
sequence (`LocalPolicy.log_probs_packed`: the history once, not once per
turn). Sampling is at temperature 1 with no top-k or
top-p, so the gradient is that of the policy that sampled. In a run of several
processes the baseline is the mean over all the episodes and each process
scores its share of them (`distributed.shard`); the gradient averaged over
the processes is the batch's (exactly so when the shares are equal in size).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from archer_agents.data.schema import Episode
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import SamplingParams, policy_prompt
from archer_agents.training.advantages import normalize
from archer_agents.training.algorithm import unique_modules
from archer_agents.training.algorithms.bc import transition_token_ids
from archer_agents.training.algorithms.filtered_bc import episode_return
from archer_agents.training.distributed import shard
from archer_agents.training.losses import actor_loss
from archer_agents.training.rollout import Actor, PolicyActor
from archer_agents.training.updates import clip_and_step, load_policy_state, policy_state

logger = logging.getLogger(__name__)

STATE_VERSION = 1


class ReinforceConfig(BaseModel):
    """Settings of trajectory-level REINFORCE."""

    model_config = ConfigDict(extra="forbid")

    learning_rate: float = Field(1e-5, gt=0.0)
    """Adam learning rate of the policy."""
    max_grad_norm: float = Field(1.0, gt=0.0)
    """Gradient-norm clip over the policy's trainable parameters."""
    chunk_episodes: int = Field(16, ge=1)
    """Episodes scored per forward pass; gradients accumulate over chunks (memory, not math)."""
    max_new_tokens: int = Field(32, ge=1)
    """Longest sampled utterance in tokens, end-of-utterance token included."""


def batch_mean_advantages(returns: torch.Tensor) -> torch.Tensor:
    """G_i - mean(G): (N,) -> (N,)."""
    if returns.dim() != 1 or returns.numel() == 0:
        raise ValueError(f"returns must be a non-empty (N,) tensor, got {tuple(returns.shape)}")
    return normalize(returns, scale=False)


class Reinforce:
    """Trajectory-level REINFORCE as an `Algorithm`: one step per on-policy batch."""

    name = "reinforce"
    online = True

    def __init__(self, config: ReinforceConfig, policy: LocalPolicy) -> None:
        self.config = config
        self.policy = policy
        self.parameters = policy.trainable_parameters()
        if not self.parameters:
            raise ValueError(
                "the policy has no trainable parameters; load it with full fine-tuning or "
                "a LoRA adapter (LocalPolicy.from_pretrained(..., lora=LoraSettings()))"
            )
        self.optimizer = torch.optim.Adam(self.parameters, lr=config.learning_rate)
        self.sampling = SamplingParams(max_new_tokens=config.max_new_tokens)
        self.pending: list[Episode] = []
        """Episodes observed since the last update: the next on-policy batch."""
        self.updates = 0

    def modules(self) -> list[nn.Module]:
        """The policy's model."""
        return unique_modules(self.policy.model)

    def actor(self) -> Actor:
        return PolicyActor(self.policy, self.sampling)

    def observe(self, episodes: Sequence[Episode]) -> None:
        self.pending.extend(e for e in episodes if e.transitions)

    def episode_logprobs(self, episodes: Sequence[Episode]) -> list[torch.Tensor]:
        """Per episode, the log-probabilities of all its sampled tokens, concatenated, with grad."""
        transitions = [t for episode in episodes for t in episode.transitions]
        # Each turn's observation extends the previous one: one packed sequence per episode.
        scored = self.policy.log_probs_packed(
            [policy_prompt(t) for t in transitions],
            [transition_token_ids(self.policy.tokenizer, t) for t in transitions],
        )
        out, start = [], 0
        for episode in episodes:
            end = start + len(episode.transitions)
            out.append(torch.cat(scored[start:end]))
            start = end
        return out

    def update(self, iteration: int) -> dict[str, float]:
        episodes, self.pending = self.pending, []
        if not episodes:
            logger.info("REINFORCE has no on-policy episodes; skipping update %d", iteration)
            return {}
        returns = torch.tensor([episode_return(e) for e in episodes], dtype=torch.float32)
        advantages = batch_mean_advantages(returns)
        mine = shard(range(len(episodes)))  # all of them in one process
        self.optimizer.zero_grad(set_to_none=True)
        total_loss, logprob_sum = 0.0, 0.0
        chunk = self.config.chunk_episodes
        for start in range(0, len(mine), chunk):
            rows = mine[start : start + chunk]
            part = [episodes[row] for row in rows]
            logprobs = self.episode_logprobs(part)
            part_adv = advantages[rows].to(logprobs[0].device)
            loss, metrics = actor_loss(logprobs, part_adv)
            share = len(part) / len(mine)
            (loss * share).backward()  # the chunks' shares sum to the batch mean
            total_loss += metrics["actor_loss"] * share
            logprob_sum += metrics["logprob_mean"] * len(part)
        grad_norm = clip_and_step(self.optimizer, self.parameters, self.config.max_grad_norm)
        self.updates += 1
        return {
            "reinforce/loss": total_loss,
            "reinforce/grad_norm": grad_norm,
            "reinforce/return_mean": float(returns.mean()),
            "reinforce/return_std": float(returns.std(unbiased=False)),
            "reinforce/episode_logprob_mean": logprob_sum / len(mine),
            "reinforce/episodes": float(len(episodes)),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "policy": policy_state(self.policy),
            "optimizer": self.optimizer.state_dict(),
            "pending": [e.model_dump(mode="json") for e in self.pending],
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"REINFORCE state has version {state.get('version')!r}, this release reads "
                f"version {STATE_VERSION}"
            )
        load_policy_state(self.policy, state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.pending = [Episode.model_validate(e) for e in state["pending"]]
        self.updates = int(state["updates"])


__all__ = ["Reinforce", "ReinforceConfig", "batch_mean_advantages"]
