"""Offline ArCHer: an IQL critic and an AWR actor, trained from episode logs alone.

The offline variant of ArCHer (Zhou et al., ICML 2024, arXiv 2402.19446) as
the authors' follow-up code runs it, from any episode log (the environments'
rollouts, a LangChain agent's recorded production episodes, an import):

- Critic (IQL, Kostrikov et al. 2022): the same double critic and Polyak
  target as ArCHer. Q_k by TD onto the target V_k at the next state; V_k by
  expectile regression (tau_e = 0.9) onto the target min Q at the DATA action,
  so no action outside the data is ever valued (`losses.iql_critic_loss`).
- Actor (AWR): ``-mean(min(exp(beta * A), max_weight) * log pi(a_data | s))``
  with ``A = min Q(s, a_data) - min V(s)`` from the online critic, no
  gradient, beta = 1 (`losses.awr_actor_loss`). Plain REINFORCE on sampled,
  out-of-distribution utterances collapses offline (docs/algorithm.md), so the
  actor only ever scores logged utterances.
- The buffer is filled once, from `archer_agents.data.episode_log.read_episodes`
  (a torn last line is reported and skipped; other bad lines stop the run
  unless ``skip_bad_lines``). An utterance without recorded token ids is
  scored as its tokens plus the end-of-utterance token
  (`training.bc.action_token_ids`). An episode written more than once (a
  recorder writes it again, ``metadata["revision"]`` one higher, when its
  reward arrives late) counts once, in its latest revision
  (`archer_agents.data.episode_log.latest_revisions`). Episodes whose reward has not
  arrived yet (``total_reward`` None, from production logs) are left out, with
  a warning.
- No environment is ever touched: `OfflineArcher.actor` exists only so the
  trainer can evaluate the policy; `train_offline` runs updates alone.

`offline_then_online` runs the offline phase and hands the same policy and
critic (and target) to online ArCHer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from archer_agents.critic.model import DoubleCritic, polyak_update
from archer_agents.data.episode_log import ReadReport, latest_revisions, read_episodes
from archer_agents.data.schema import Episode, Transition
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import SamplingParams, policy_prompt
from archer_agents.training.algorithm import unique_modules
from archer_agents.training.algorithms.bc import transition_token_ids
from archer_agents.training.critic_config import CriticSettings, critic_and_target, critic_optimizer
from archer_agents.training.losses import advantage, awr_actor_loss, iql_critic_loss
from archer_agents.training.replay_buffer import ReplayBuffer
from archer_agents.training.rollout import Actor, PolicyActor
from archer_agents.training.updates import (
    clip_and_step,
    load_policy_state,
    module_device,
    policy_state,
    rewards_and_dones,
)

logger = logging.getLogger(__name__)

STATE_VERSION = 1


class OfflineArcherConfig(CriticSettings):
    """Settings of offline ArCHer: the critic's (see `CriticSettings`), the data, the actor."""

    data: list[Path] = Field(default_factory=list)
    """Episode logs (JSONL, one episode a line) to train from."""
    skip_bad_lines: bool = False
    """Skip (and report) malformed lines other than a torn last line instead of stopping."""
    retokenize: bool = False
    """Ignore recorded token ids and tokenize every utterance (logs written by another model)."""
    expectile: float = Field(0.9, gt=0.0, lt=1.0)
    """tau_e of V's expectile regression onto the target min Q at the data action."""
    beta: float = Field(1.0, gt=0.0)
    """AWR inverse temperature: an utterance's weight is exp(beta * A)."""
    max_weight: float = Field(100.0, gt=0.0)
    """Cap on the AWR weight, so one large advantage cannot dominate a batch."""
    actor_lr: float = Field(1e-5, gt=0.0)
    """Adam learning rate of the policy."""
    actor_steps: int = Field(3, ge=0)
    """Actor gradient steps per iteration (after the warm-up)."""
    actor_batch_size: int = Field(256, ge=1)
    """Logged utterances per actor step."""
    warmup_iterations: int = Field(0, ge=0)
    """Iterations that train only the critic before the actor starts."""
    max_new_tokens: int = Field(32, ge=1)
    """Longest utterance the evaluation actor samples, end-of-utterance token included."""
    temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature of the evaluation actor; 0 is greedy."""

    @model_validator(mode="after")
    def _has_data(self) -> OfflineArcherConfig:
        if not self.data:
            raise ValueError(
                "offline ArCHer trains from episode logs and none were given; set data to one "
                "or more JSONL files (written by `archer rollout`, the trainer, or "
                "EpisodeRecorder), e.g. data: [runs/expert/episodes.jsonl]"
            )
        return self


def offline_transitions(
    episodes: Sequence[Episode], tokenizer: Any, *, retokenize: bool = False
) -> list[Transition]:
    """Every transition of the rewarded episodes, each with the token ids the actor scores.

    Recorded ids are kept (unless ``retokenize``); missing ones become the
    action's tokens plus the end-of-utterance token, without logprobs.
    """
    transitions: list[Transition] = []
    pending = 0
    for episode in episodes:
        if episode.total_reward is None:
            pending += 1
            continue
        for t in episode.transitions:
            if t.action_token_ids is None or retokenize:
                ids = transition_token_ids(tokenizer, t, retokenize=True)
                t = t.model_copy(update={"action_token_ids": ids, "action_logprobs": None})
            transitions.append(t)
    if pending:
        logger.warning(
            "left out %d episode(s) whose reward has not arrived (total_reward is None)", pending
        )
    return transitions


class OfflineArcher:
    """Offline ArCHer as an `Algorithm`: IQL critic and AWR actor on a fixed buffer."""

    name = "offline_archer"
    online = False
    """The trainer must not collect episodes for it; `actor` serves evaluation only."""

    def __init__(
        self,
        config: OfflineArcherConfig,
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
        self.parameters = policy.trainable_parameters()
        if config.actor_steps and not self.parameters:
            raise ValueError(
                "the policy has no trainable parameters; load it with full fine-tuning or "
                "a LoRA adapter, or set actor_steps: 0 to train only the critic"
            )
        self.actor_optimizer = torch.optim.Adam(self.parameters, lr=config.actor_lr)
        self.sampling = SamplingParams(
            max_new_tokens=config.max_new_tokens, temperature=config.temperature
        )
        self.report = ReadReport()
        """What reading the logs skipped (a torn last line, bad lines)."""
        self.buffer = self._load_data()
        self.updates = 0

    def _load_data(self) -> ReplayBuffer:
        config = self.config
        lines, self.report = read_episodes(config.data, strict=not config.skip_bad_lines)
        episodes = latest_revisions(lines)
        if len(episodes) < len(lines):
            logger.info(
                "offline data: %d lines rewrite an episode already logged (feedback that came "
                "later); each episode counts once, in its latest revision",
                len(lines) - len(episodes),
            )
        transitions = offline_transitions(
            episodes, self.policy.tokenizer, retokenize=config.retokenize
        )
        if not transitions:
            raise ValueError(
                f"the logs {[str(p) for p in config.data]} hold no rewarded transitions "
                f"({len(episodes)} episodes read); point data at logs of finished episodes"
            )
        embeddings = self.policy.model.get_input_embeddings()
        vocab = max(len(self.policy.tokenizer), int(getattr(embeddings, "num_embeddings", 0)))
        if any(i < 0 or i >= vocab for t in transitions for i in t.action_token_ids or []):
            raise ValueError(
                f"recorded token ids fall outside this policy's vocabulary of {vocab}: the log "
                "was written by another model; set retokenize: true to tokenize the utterances"
            )
        if len(transitions) > config.buffer_capacity:
            logger.warning(
                "the logs hold %d transitions but buffer_capacity is %d; only the last %d are "
                "kept (raise buffer_capacity to train on all)",
                len(transitions),
                config.buffer_capacity,
                config.buffer_capacity,
            )
        buffer = ReplayBuffer(config.buffer_capacity, seed=config.seed)
        buffer.extend(transitions)
        logger.info(
            "offline data: %d episodes, %d transitions from %d log(s)",
            len(episodes),
            len(transitions),
            len(config.data),
        )
        return buffer

    def modules(self) -> list[nn.Module]:
        """The policy's model, the critic and its target."""
        return unique_modules(self.policy.model, self.critic, self.target)

    def actor(self) -> Actor:
        """Samples from the policy; for evaluation only (offline training collects nothing)."""
        return PolicyActor(self.policy, self.sampling)

    def observe(self, episodes: Sequence[Episode]) -> None:
        if episodes:
            logger.debug(
                "offline ArCHer ignores %d observed episode(s): it trains on its logs only",
                len(episodes),
            )

    def update(self, iteration: int) -> dict[str, float]:
        config = self.config
        critic_history = [self.critic_step() for _ in range(config.critic_steps)]
        metrics = {
            f"critic/{k}": float(np.mean([h[k] for h in critic_history])) for k in critic_history[0]
        }
        if self.updates >= config.warmup_iterations and config.actor_steps:
            actor_history = [self.actor_step() for _ in range(config.actor_steps)]
            metrics.update(
                {
                    f"actor/{k}": float(np.mean([h[k] for h in actor_history]))
                    for k in actor_history[0]
                }
            )
        self.updates += 1
        return metrics

    def critic_step(self) -> dict[str, float]:
        """One IQL step on a batch of logged transitions, then the Polyak update."""
        config = self.config
        batch = self.buffer.sample(config.critic_batch_size)
        observations = [t.observation for t in batch]
        actions = [t.action for t in batch]
        rewards, dones = rewards_and_dones(batch, module_device(self.critic))
        with torch.no_grad():
            target_v_next = self.target.v([t.next_observation for t in batch])  # (B, 2)
            target_q_data = self.target.q(observations, actions)  # (B, 2)
        q_pred, v_pred = self.critic(observations, actions)  # (B, 2), (B, 2)
        loss, metrics = iql_critic_loss(
            q_pred,
            v_pred,
            rewards,
            dones,
            target_v_next,
            target_q_data,
            config.gamma,
            config.expectile,
        )
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        metrics["grad_norm"] = clip_and_step(
            self.critic_optimizer,
            (p for p in self.critic.parameters() if p.requires_grad),
            config.max_grad_norm,
        )
        polyak_update(self.target, self.critic, config.polyak_tau)
        return metrics

    def actor_step(self) -> dict[str, float]:
        """One AWR step: raise log pi of logged utterances, weighted by exp(beta * A)."""
        config = self.config
        batch = self.buffer.sample(config.actor_batch_size)
        observations = [t.observation for t in batch]
        with torch.no_grad():
            q, v = self.critic(observations, [t.action for t in batch])
            advantages = advantage(q, v)  # (B,)
        token_logprobs = self.policy.log_probs(
            [policy_prompt(t, retokenize=config.retokenize) for t in batch],
            [list(t.action_token_ids or []) for t in batch],
        )
        loss, metrics = awr_actor_loss(
            token_logprobs,
            advantages.to(token_logprobs[0].device),
            beta=config.beta,
            max_weight=config.max_weight,
        )
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        metrics["grad_norm"] = clip_and_step(
            self.actor_optimizer, self.parameters, config.max_grad_norm
        )
        metrics["advantage_mean"] = float(advantages.mean())
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimisers, the buffer's sampling state and counters.

        The buffer's contents are the logs': they are read again on construction,
        and only its generator state travels, so a checkpoint stays small.
        """
        buffer_state = self.buffer.state_dict()
        return {
            "version": STATE_VERSION,
            "policy": policy_state(self.policy),
            "critic": self.critic.state_dict(),
            "target": self.target.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "buffer_rng_state": buffer_state["rng_state"],
            "buffer_size": len(self.buffer),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"offline ArCHer state has version {state.get('version')!r}, this release "
                f"reads version {STATE_VERSION}"
            )
        if int(state["buffer_size"]) != len(self.buffer):
            raise ValueError(
                f"the checkpoint was trained on {state['buffer_size']} logged transitions but "
                f"the logs now give {len(self.buffer)}; resume with the same data files"
            )
        load_policy_state(self.policy, state["policy"])
        self.critic.load_state_dict(state["critic"])
        self.target.load_state_dict(state["target"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        buffer_state = self.buffer.state_dict()
        buffer_state["rng_state"] = state["buffer_rng_state"]
        self.buffer.load_state_dict(buffer_state)
        self.updates = int(state["updates"])


def train_offline(
    algorithm: OfflineArcher,
    iterations: int,
    on_update: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Run ``iterations`` updates with no environment; return each iteration's metrics."""
    if iterations < 0:
        raise ValueError(f"iterations must be non-negative, got {iterations}")
    history = []
    for iteration in range(iterations):
        metrics = algorithm.update(iteration)
        history.append(metrics)
        if on_update is not None:
            on_update(iteration, metrics)
    return history


__all__ = [
    "OfflineArcher",
    "OfflineArcherConfig",
    "offline_transitions",
    "train_offline",
]
