"""Online filtered behaviour cloning: imitate the policy's own best episodes.

The baseline of the ArCHer paper (Zhou et al., ICML 2024, arXiv 2402.19446):
collect episodes with the current policy, keep those whose return is at or
above the 90th percentile of the returns of every episode collected so far,
and behaviour-clone on the kept ones. The loss is `training.bc`'s: the mean
negative log-likelihood per token of each kept utterance, the
end-of-utterance token included, scored on exactly the sampled ids.

Departures and choices:

- The percentile is numpy's default (linear interpolation between the two
  nearest returns) over every return seen since the start, so the threshold
  can fall as well as rise; "at or above" keeps ties with the threshold.
- Episodes are kept in a pool of the most recent ``pool_capacity`` episodes
  (returns of evicted episodes still count towards the threshold); the filter
  is applied to the pool at each update, so an episode the threshold once
  excluded is cloned again if the threshold falls below its return.
- A step draws whole kept episodes (uniformly, with replacement) until it has
  ``batch_size`` utterances, so each utterance is equally likely and an
  episode's turns are scored in one packed sequence (the history once). In a
  run of several processes each scores its share of the episodes drawn
  (`distributed.shard`; at least one each).
- Saving works (the public code crashed here, docs/algorithm.md, defect 7): the
  state holds the pool, the return history, the weights, the optimiser and the
  batch generator, all as plain values and tensors.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from archer_agents.data.schema import Episode
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import Prompt, SamplingParams, policy_prompt
from archer_agents.training.algorithm import unique_modules
from archer_agents.training.algorithms.bc import nll_loss, transition_token_ids
from archer_agents.training.distributed import process_group, shard
from archer_agents.training.rollout import Actor, PolicyActor
from archer_agents.training.updates import clip_and_step, load_policy_state, policy_state

logger = logging.getLogger(__name__)

STATE_VERSION = 1


class FilteredBCConfig(BaseModel):
    """Settings of online filtered behaviour cloning."""

    model_config = ConfigDict(extra="forbid")

    percentile: float = Field(90.0, ge=0.0, le=100.0)
    """Keep episodes whose return is at or above this percentile (0-100) of all returns so far."""
    pool_capacity: int = Field(10_000, ge=1)
    """Most recent episodes kept as candidates for cloning; older ones are dropped."""
    steps_per_update: int = Field(10, ge=1)
    """Optimiser steps per iteration."""
    batch_size: int = Field(64, ge=1)
    """Utterances per step, at least: whole kept episodes drawn uniformly until this many."""
    learning_rate: float = Field(1e-5, gt=0.0)
    """Adam learning rate of the policy."""
    max_grad_norm: float = Field(1.0, gt=0.0)
    """Gradient-norm clip over the policy's trainable parameters."""
    max_new_tokens: int = Field(32, ge=1)
    """Longest sampled utterance in tokens, end-of-utterance token included."""
    temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature while collecting; 0 is greedy."""
    seed: int = 0
    """Seeds the order in which kept utterances are drawn."""

    @field_validator("percentile")
    @classmethod
    def _percent_not_fraction(cls, value: float) -> float:
        if 0.0 < value < 1.0:
            raise ValueError(
                f"percentile is in percent (0-100), got {value}, which keeps almost every "
                f"episode; to keep the top {100 - 100 * value:g}% pass {100 * value:g}"
            )
        return value


def episode_return(episode: Episode) -> float:
    """The episode's total reward (summed from its transitions when not filled in)."""
    if episode.total_reward is not None:
        return float(episode.total_reward)
    return float(sum(t.reward for t in episode.transitions))


def return_threshold(returns: Sequence[float], percentile: float) -> float:
    """The ``percentile``-th percentile of ``returns`` (linear interpolation)."""
    if not returns:
        raise ValueError("return_threshold needs at least one return")
    return float(np.percentile(np.asarray(returns, dtype=np.float64), percentile))


def select_episodes(
    episodes: Sequence[Episode], returns_so_far: Sequence[float], percentile: float
) -> tuple[list[Episode], float]:
    """The episodes whose return is at or above the percentile of ``returns_so_far``."""
    threshold = return_threshold(returns_so_far, percentile)
    return [e for e in episodes if episode_return(e) >= threshold], threshold


class FilteredBC:
    """Online filtered BC as an `Algorithm`: collect, filter by return, clone."""

    name = "filtered_bc"
    online = True

    def __init__(self, config: FilteredBCConfig, policy: LocalPolicy) -> None:
        self.config = config
        self.policy = policy
        self.sampling = SamplingParams(
            max_new_tokens=config.max_new_tokens, temperature=config.temperature
        )
        self.parameters = policy.trainable_parameters()
        if not self.parameters:
            raise ValueError(
                "the policy has no trainable parameters; load it with full fine-tuning or "
                "a LoRA adapter (LocalPolicy.from_pretrained(..., lora=LoraSettings()))"
            )
        self.optimizer = torch.optim.Adam(self.parameters, lr=config.learning_rate)
        self.pool: deque[Episode] = deque(maxlen=config.pool_capacity)
        self.returns: list[float] = []
        """The return of every episode observed since the start."""
        self.steps = 0
        self._rng = np.random.default_rng(config.seed)

    def modules(self) -> list[nn.Module]:
        """The policy's model."""
        return unique_modules(self.policy.model)

    def actor(self) -> Actor:
        return PolicyActor(self.policy, self.sampling)

    def observe(self, episodes: Sequence[Episode]) -> None:
        for episode in episodes:
            if not episode.transitions:
                continue
            self.returns.append(episode_return(episode))
            self.pool.append(episode)

    def kept(self) -> tuple[list[Episode], float]:
        """The pool's episodes that pass the filter now, and the threshold."""
        return select_episodes(list(self.pool), self.returns, self.config.percentile)

    def update(self, iteration: int) -> dict[str, float]:
        if not self.pool:
            logger.info("filtered BC has no episodes yet; skipping update %d", iteration)
            return {}
        kept, threshold = self.kept()
        if not kept:
            # The threshold comes from every return so far; the pool may hold none that pass.
            logger.info("no pooled episode reaches the return threshold %.3f yet", threshold)
            return {"filtered_bc/threshold": threshold, "filtered_bc/kept_episodes": 0.0}
        tokenizer = self.policy.tokenizer
        groups = [
            [(policy_prompt(t), transition_token_ids(tokenizer, t)) for t in episode.transitions]
            for episode in kept
        ]
        losses, grad_norms = [], []
        _, processes = process_group()
        for _ in range(self.config.steps_per_update):
            drawn: list[list[tuple[Prompt, list[int]]]] = []
            turns = 0
            while turns < self.config.batch_size or len(drawn) < processes:
                drawn.append(groups[int(self._rng.integers(len(groups)))])
                turns += len(drawn[-1])
            batch = [pair for group in shard(drawn) for pair in group]
            loss = nll_loss(self.policy, [b[0] for b in batch], [b[1] for b in batch], packed=True)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norms.append(
                clip_and_step(self.optimizer, self.parameters, self.config.max_grad_norm)
            )
            losses.append(float(loss.detach()))
            self.steps += 1
        return {
            "filtered_bc/loss": float(np.mean(losses)),
            "filtered_bc/grad_norm": float(np.mean(grad_norms)),
            "filtered_bc/threshold": threshold,
            "filtered_bc/kept_episodes": float(len(kept)),
            "filtered_bc/kept_fraction": len(kept) / len(self.pool),
            "filtered_bc/kept_utterances": float(sum(len(g) for g in groups)),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "policy": policy_state(self.policy),
            "optimizer": self.optimizer.state_dict(),
            "pool": [episode.model_dump(mode="json") for episode in self.pool],
            "returns": list(self.returns),
            "steps": self.steps,
            "rng_state": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"filtered BC state has version {state.get('version')!r}, this release reads "
                f"version {STATE_VERSION}"
            )
        load_policy_state(self.policy, state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.pool = deque(
            (Episode.model_validate(e) for e in state["pool"]), maxlen=self.config.pool_capacity
        )
        self.returns = [float(r) for r in state["returns"]]
        self.steps = int(state["steps"])
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng_state"]
        self._rng = rng


__all__ = [
    "FilteredBC",
    "FilteredBCConfig",
    "episode_return",
    "return_threshold",
    "select_episodes",
]
