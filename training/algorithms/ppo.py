"""Token-level PPO: the on-policy baseline against which ArCHer claims 100x sample efficiency.

PPO (Schulman et al., 2017) as the ArCHer paper (Zhou et al., ICML 2024,
arXiv 2402.19446) runs it for comparison on multi-turn tasks; the authors did
not release theirs, so the choices below are ours and are documented:

- Rewards arrive at the end of each utterance (the environment's reward for
  that turn, less ``invalid_action_penalty`` for a turn it could not read, as
  in ArCHer; off by default). Advantages are computed by GAE over
  utterance-level steps:
  ``delta_t = r_t + gamma * (1 - done_t) * V(s_{t+1}) - V(s_t)`` and
  ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}``, per episode; a
  time-limit end counts as done, as in ArCHer's critic. Every token of
  utterance t gets A_t: this is token-level GAE with gamma = lambda = 1 inside
  an utterance and a value that only changes between utterances, which is what
  an utterance-end reward with no intermediate token rewards amounts to.
- The ratio is per token, pi(token) / pi_old(token), against the
  log-probabilities recorded when the token was sampled
  (`Transition.action_logprobs`), clipped to [1 - clip, 1 + clip]; the loss is
  the mean over all tokens of the batch (`losses.ppo_policy_loss` at
  ``level="token"``). The end-of-utterance token is one of those tokens.
- The value is a separate small model, `UtteranceValue`: a critic text encoder
  (hashing by default, or a transformers encoder) with an MLP head over the
  observation text. A value head on the policy's hidden states would need a
  second forward pass with hidden states at each utterance start, couple the
  value's gradient to the policy's weights (and to LoRA), and tie the baseline
  to a model served elsewhere; GAE over utterance steps only needs V(s), which
  a separate model gives cheaply and which trains with its own optimiser.
- Sampling is at temperature 1 with no top-k or top-p, so the recorded
  log-probabilities are those of the policy the ratio compares against.
- Several epochs over each batch; each epoch shuffles the episodes and cuts
  them into minibatches of whole episodes (at least ``minibatch_size``
  utterances), so an episode's turns are scored in one packed sequence (the
  history once, `LocalPolicy.log_probs_packed`). The policy and the value
  each clip their own gradients (docs/algorithm.md, defect 5). Advantages are
  normalised over the whole batch once, before the epochs.
- In a run of several processes every process holds the whole batch (the
  collector gathers it) and draws the same minibatches; each scores its share
  of a minibatch's episodes (`shard`) and the gradients are averaged, so the
  processes split the work of every step.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from archer_agents.critic.encoders import TextEncoder, load_encoder
from archer_agents.data.schema import Episode
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import Prompt, SamplingParams, policy_prompt
from archer_agents.training.advantages import gae, normalize
from archer_agents.training.algorithm import unique_modules
from archer_agents.training.distributed import process_group, shard
from archer_agents.training.losses import Metrics, ppo_policy_loss, value_loss
from archer_agents.training.rollout import Actor, PolicyActor
from archer_agents.training.updates import (
    clip_and_step,
    load_policy_state,
    module_device,
    policy_state,
    shaped_reward,
)

logger = logging.getLogger(__name__)

STATE_VERSION = 1


class PPOConfig(BaseModel):
    """Settings of token-level PPO."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(4, ge=1)
    """Passes over each on-policy batch."""
    minibatch_size: int = Field(64, ge=1)
    """Utterances per gradient step, at least: minibatches hold whole episodes."""
    clip: float = Field(0.2, gt=0.0)
    """Epsilon: each token's ratio is kept in [1 - clip, 1 + clip]."""
    gamma: float = Field(0.95, ge=0.0, le=1.0)
    """Discount per utterance."""
    gae_lambda: float = Field(0.95, ge=0.0, le=1.0)
    """GAE's lambda over utterance steps (0: one-step TD, 1: Monte Carlo)."""
    normalize_advantages: bool = True
    """Standardise the batch's advantages before the epochs."""
    invalid_action_penalty: float = Field(0.0, ge=0.0)
    """Subtracted from the reward of a turn the environment could not understand (0: off),
    as ArCHer's option of the same name: a shaped training reward, not the evaluated one."""
    policy_lr: float = Field(1e-5, gt=0.0)
    """Adam learning rate of the policy."""
    value_lr: float = Field(1e-4, gt=0.0)
    """Adam learning rate of the value model."""
    value_encoder: str = "hashing"
    """Value model's text encoder: "hashing", "minilm", or a transformers directory / hub id."""
    value_hidden_size: int = Field(256, ge=1)
    """Width of the value head's hidden layers."""
    max_grad_norm: float = Field(1.0, gt=0.0)
    """Gradient-norm clip, applied by each optimiser to its own parameters."""
    max_new_tokens: int = Field(32, ge=1)
    """Longest sampled utterance in tokens, end-of-utterance token included."""
    seed: int = 0
    """Seeds the value model's initial weights and the minibatch order."""


class UtteranceValue(nn.Module):
    """V(s) over the observation text: a text encoder and a two-layer MLP head."""

    def __init__(self, encoder: nn.Module, hidden_size: int = 256, seed: int | None = None) -> None:
        super().__init__()
        if not isinstance(encoder, TextEncoder):
            raise TypeError(
                f"UtteranceValue needs an encoder with hidden_size and encode(texts); got "
                f"{type(encoder).__name__}. Use one from archer_agents.critic.encoders."
            )
        self.encoder = encoder
        width = int(encoder.hidden_size)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.head = nn.Sequential(
                nn.Linear(width, hidden_size),
                nn.ReLU(),
                nn.Linear(hidden_size, hidden_size),
                nn.ReLU(),
                nn.Linear(hidden_size, 1),
            )

    def forward(self, observations: Sequence[str]) -> torch.Tensor:
        encoded = self.encoder.encode(list(observations))  # (B, H)
        return self.head(encoded.to(module_device(self.head))).squeeze(-1)  # (B,)


@dataclass
class PPOSample:
    """One utterance of the on-policy batch, ready for the clipped loss."""

    observation: str
    token_ids: list[int]
    old_logprobs: list[float]
    """Per-token log-probabilities recorded at sampling."""
    advantage: float
    value_target: float
    prompt: Prompt | None = None
    """What the policy conditioned on (`policy_prompt`), when not the observation itself."""


class PPO:
    """Token-level PPO as an `Algorithm`: on-policy batch, GAE, clipped epochs."""

    name = "ppo"
    online = True

    def __init__(
        self, config: PPOConfig, policy: LocalPolicy, *, value: UtteranceValue | None = None
    ) -> None:
        self.config = config
        self.policy = policy
        self.value = value or UtteranceValue(
            load_encoder(config.value_encoder, seed=config.seed),
            config.value_hidden_size,
            seed=config.seed,
        )
        self.policy_parameters = policy.trainable_parameters()
        if not self.policy_parameters:
            raise ValueError(
                "the policy has no trainable parameters; load it with full fine-tuning or "
                "a LoRA adapter (LocalPolicy.from_pretrained(..., lora=LoraSettings()))"
            )
        self.value_parameters = [p for p in self.value.parameters() if p.requires_grad]
        self.policy_optimizer = torch.optim.Adam(self.policy_parameters, lr=config.policy_lr)
        self.value_optimizer = torch.optim.Adam(self.value_parameters, lr=config.value_lr)
        self.sampling = SamplingParams(max_new_tokens=config.max_new_tokens)
        self.pending: list[Episode] = []
        """Episodes observed since the last update: the next on-policy batch."""
        self.updates = 0
        self._rng = np.random.default_rng(config.seed)

    def modules(self) -> list[nn.Module]:
        """The policy's model and the value model."""
        return unique_modules(self.policy.model, self.value)

    def actor(self) -> Actor:
        return PolicyActor(self.policy, self.sampling)

    def observe(self, episodes: Sequence[Episode]) -> None:
        self.pending.extend(e for e in episodes if e.transitions)

    def samples(self, episodes: Sequence[Episode]) -> list[PPOSample]:
        """The batch's utterances with GAE advantages (normalised if configured)."""
        transitions = [t for episode in episodes for t in episode.transitions]
        for t in transitions:
            if t.action_token_ids is None or t.action_logprobs is None:
                raise ValueError(
                    "PPO needs each utterance's token ids and the log-probabilities recorded "
                    "when it was sampled; collect with PPO.actor() (a LocalPolicy), not with "
                    "scripted agents or from logs without logprobs"
                )
        with torch.no_grad():
            values = self.value([t.observation for t in transitions]).float().cpu()
            next_values = self.value([t.next_observation for t in transitions]).float().cpu()
        advantages, targets = [], []
        start = 0
        for episode in episodes:
            end = start + len(episode.transitions)
            rewards = torch.tensor(
                [shaped_reward(t, self.config.invalid_action_penalty) for t in episode.transitions],
                dtype=torch.float32,
            )
            dones = torch.tensor([t.done for t in episode.transitions])
            adv, ret = gae(
                rewards,
                values[start:end],
                next_values[start:end],
                dones,
                self.config.gamma,
                self.config.gae_lambda,
            )
            advantages.append(adv)
            targets.append(ret)
            start = end
        advantage = torch.cat(advantages)
        if self.config.normalize_advantages and advantage.numel() > 1:
            advantage = normalize(advantage)
        target = torch.cat(targets)
        return [
            PPOSample(
                observation=t.observation,
                prompt=policy_prompt(t),
                token_ids=list(t.action_token_ids or []),
                old_logprobs=list(t.action_logprobs or []),
                advantage=float(a),
                value_target=float(r),
            )
            for t, a, r in zip(transitions, advantage, target, strict=True)
        ]

    def policy_loss(self, batch: Sequence[PPOSample]) -> tuple[torch.Tensor, Metrics]:
        """The clipped token-level surrogate of a minibatch, against the recorded logprobs."""
        new = self.policy.log_probs_packed(
            [s.observation if s.prompt is None else s.prompt for s in batch],
            [s.token_ids for s in batch],
        )
        device = new[0].device
        old = [torch.tensor(s.old_logprobs, dtype=torch.float32, device=device) for s in batch]
        advantages = torch.tensor([s.advantage for s in batch], device=device)
        return ppo_policy_loss(new, old, advantages, clip=self.config.clip, level="token")

    def update(self, iteration: int) -> dict[str, float]:
        episodes, self.pending = self.pending, []
        if not episodes:
            logger.info("PPO has no on-policy episodes; skipping update %d", iteration)
            return {}
        samples = self.samples(episodes)
        config = self.config
        groups, start = [], 0
        for episode in episodes:  # each episode's samples, in turn order
            groups.append(samples[start : start + len(episode.transitions)])
            start += len(episode.transitions)
        history: list[dict[str, float]] = []
        for _ in range(config.epochs):
            for episodes_batch in self.minibatches(groups):
                batch = [s for group in shard(episodes_batch) for s in group]
                loss, metrics = self.policy_loss(batch)
                self.policy_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                metrics["policy_grad_norm"] = clip_and_step(
                    self.policy_optimizer, self.policy_parameters, config.max_grad_norm
                )
                values = self.value([s.observation for s in batch])
                targets = torch.tensor([s.value_target for s in batch], device=values.device)
                v_loss, v_metrics = value_loss(values, targets)
                self.value_optimizer.zero_grad(set_to_none=True)
                v_loss.backward()
                v_metrics["value_grad_norm"] = clip_and_step(
                    self.value_optimizer, self.value_parameters, config.max_grad_norm
                )
                history.append({**metrics, **v_metrics})
        self.updates += 1
        out = {f"ppo/{k}": float(np.mean([h[k] for h in history])) for k in history[0]}
        out["ppo/episodes"] = float(len(episodes))
        out["ppo/utterances"] = float(len(samples))
        out["ppo/return_mean"] = float(
            np.mean([sum(t.reward for t in e.transitions) for e in episodes])
        )
        out["ppo/value_target_mean"] = float(np.mean([s.value_target for s in samples]))
        return out

    def minibatches(self, groups: Sequence[list[PPOSample]]) -> list[list[list[PPOSample]]]:
        """One epoch: episodes in a fresh random order, cut into minibatches of whole episodes.

        Each minibatch is a list of episodes (their samples in turn order) holding
        at least ``minibatch_size`` utterances; in a run of several processes,
        at least one episode per process too (a short last minibatch joins the one
        before it).
        """
        _, processes = process_group()
        batches: list[list[list[PPOSample]]] = [[]]
        size = 0
        for index in self._rng.permutation(len(groups)):
            if size >= self.config.minibatch_size and len(batches[-1]) >= processes:
                batches.append([])
                size = 0
            batches[-1].append(groups[int(index)])
            size += len(groups[int(index)])
        if len(batches) > 1 and len(batches[-1]) < processes:
            batches[-2].extend(batches.pop())
        return [batch for batch in batches if batch]

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "policy": policy_state(self.policy),
            "value": self.value.state_dict(),
            "policy_optimizer": self.policy_optimizer.state_dict(),
            "value_optimizer": self.value_optimizer.state_dict(),
            "pending": [e.model_dump(mode="json") for e in self.pending],
            "updates": self.updates,
            "rng_state": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"PPO state has version {state.get('version')!r}, this release reads "
                f"version {STATE_VERSION}"
            )
        load_policy_state(self.policy, state["policy"])
        self.value.load_state_dict(state["value"])
        self.policy_optimizer.load_state_dict(state["policy_optimizer"])
        self.value_optimizer.load_state_dict(state["value_optimizer"])
        self.pending = [Episode.model_validate(e) for e in state["pending"]]
        self.updates = int(state["updates"])
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng_state"]
        self._rng = rng


__all__ = ["PPO", "PPOConfig", "PPOSample", "UtteranceValue"]
