"""Online ArCHer: an off-policy utterance-level critic and a token-level policy gradient.

Paper: Zhou, Zanette, Pan, Levine, Kumar, "ArCHer: Training Language Model
Agents via Hierarchical Multi-Turn RL", ICML 2024 (arXiv 2402.19446);
docs/algorithm.md describes it as implemented here. Per iteration the trainer
collects episodes with `Archer.actor` and hands them to `Archer.observe` (the
replay buffer); `Archer.update` then runs

1. ``critic_steps`` critic steps on batches drawn uniformly from the buffer:
   Q_k(s, a) toward r + gamma * (1 - done) * Vbar_k(s') and V_k(s) toward
   Qbar_k(s, a_pi), with a_pi freshly sampled from the current policy at s at
   every step; a time-limit end counts as done; the target critic moves by
   Polyak averaging after every step (`losses.critic_loss`);
2. after ``warmup_iterations`` iterations of the critic alone, ``actor_steps``
   actor steps: states from the buffer, utterances re-sampled from the current
   policy, advantage min Q - min V from the online critic (no gradient), and
   REINFORCE over exactly the sampled token ids, end-of-utterance token
   included (`losses.actor_loss`).

Where this departs from the paper and its public code:

- The public code's defects (docs/algorithm.md) are avoided: left padding and exact
  token ids (`LocalPolicy`), sampling from the distribution that is scored
  (temperature only, no top-k), gradient-norm clipping per optimiser over its
  own parameters, seeded everything.
- Stability options (docs/algorithm.md, "Stability options"), all off by default
  (the paper's plain REINFORCE): advantage normalisation over the actor batch
  and clipping, a KL anchor to the behaviour-cloned reference policy (a frozen
  copy of the policy as it was when training started), the visit-count guard
  (a positive advantage on an utterance the critic has seen fewer than
  ``min_visits`` times in the buffer is treated as zero), and a reward penalty
  for utterances the environment could not understand.
- The paper's token-level baseline, which the public code never finished, is
  `TokenBaseline`: b(s, a_<t) regressed onto the utterance's advantage, over
  hashed features of the observation and the decoded token prefix (the
  paper's baseline reads the policy's hidden states).
- Options for a CPU budget, all off by default: ``critic_batches="episodes"``
  draws whole episodes (each stored transition as likely as with uniform
  sampling), so the fresh a_pi of all turns of an episode are sampled with
  their shared history computed once (`LocalPolicy.generate_shared`);
  ``actor_states="latest"`` takes the actor's states from the newest rollout,
  whose own samples are exact samples of the current policy until the first
  actor step, scored with the history once per episode
  (`LocalPolicy.log_probs_packed`); ``advantage_estimator="gae"`` then uses
  generalised advantage estimation over those episodes with the online V
  (``gae_lambda`` 0: the one-step error r + gamma * (1 - done) * min V(s') -
  min V(s)), which sees the turns' outcomes (a won guess) that a small
  critic's Q(s, a) cannot tell from a lost one.
- Default sizes are the public code's (50 critic steps of 256, 3 actor steps
  of 256, warm-up of 10 iterations); the learning rates of the small CPU model
  used by `archer quickstart` are far higher than the paper's 7B ones (see
  `archer_agents.cli.quickstart`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from archer_agents.critic.model import DoubleCritic, polyak_update
from archer_agents.data.schema import Episode, Transition
from archer_agents.policies.eval_mode import eval_mode
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import Generation, Prompt, policy_prompt
from archer_agents.training.advantages import gae, normalize
from archer_agents.training.algorithm import unique_modules
from archer_agents.training.algorithms.archer_config import ArcherConfig
from archer_agents.training.algorithms.token_baseline import TokenBaseline, baseline_step
from archer_agents.training.cached_rollout import CachedPolicyActor
from archer_agents.training.critic_config import critic_and_target, critic_optimizer
from archer_agents.training.distributed import process_group, shard
from archer_agents.training.losses import actor_loss, advantage, critic_loss
from archer_agents.training.replay_buffer import ReplayBuffer
from archer_agents.training.rollout import Actor
from archer_agents.training.updates import (
    clip_and_step,
    frozen_copy,
    load_policy_state,
    matching_state,
    module_device,
    policy_state,
    shaped_reward,
)

logger = logging.getLogger(__name__)

STATE_VERSION = 1


class Archer:
    """Online ArCHer as an `Algorithm` (`training.algorithm`): critic steps, then actor steps."""

    name = "archer"
    online = True

    def __init__(
        self,
        config: ArcherConfig,
        policy: LocalPolicy,
        *,
        critic: DoubleCritic | None = None,
        target: DoubleCritic | None = None,
        reference: LocalPolicy | None = None,
    ) -> None:
        """
        Args:
            config: the settings.
            policy: the policy to train, usually behaviour-cloned first.
            critic, target: a critic to continue from (e.g. offline ArCHer's) and its
                target copy; default to fresh ones built from ``config``.
            reference: the KL anchor's reference policy; defaults to a frozen copy of
                ``policy`` as given (needed only with ``kl_coef > 0``).
        """
        self.config = config
        self.policy = policy
        self.critic, self.target = critic_and_target(config, critic, target)
        self.critic_optimizer = critic_optimizer(self.critic, config)
        self.actor_parameters = policy.trainable_parameters()
        if config.actor_steps and not self.actor_parameters:
            raise ValueError(
                "the policy has no trainable parameters; load it with full fine-tuning or a LoRA "
                "adapter (LocalPolicy.from_pretrained(..., lora=LoraSettings())), or set "
                "actor_steps: 0 to train only the critic"
            )
        self.actor_optimizer = (
            torch.optim.Adam(self.actor_parameters, lr=config.actor_lr)
            if self.actor_parameters
            else None
        )
        self.reference: LocalPolicy | None = None
        if config.kl_coef > 0:
            self.reference = reference if reference is not None else frozen_copy(policy)
        self.baseline: TokenBaseline | None = None
        self.baseline_optimizer: torch.optim.Adam | None = None
        if config.token_baseline:
            self.baseline = TokenBaseline(seed=config.seed)
            self.baseline_optimizer = torch.optim.Adam(
                self.baseline.parameters(), lr=config.baseline_lr
            )
        self.buffer = ReplayBuffer(config.buffer_capacity, seed=config.seed)
        self.sampling = config.sampling
        self.critic_updates = 0
        self.actor_updates = 0
        self._latest: list[list[Transition]] = []
        """The episodes of the newest `observe` call, as stored (actor_states "latest")."""
        self._latest_policy = -1
        """`actor_updates` when they were observed: their actions are current while it matches."""
        self._latest_order: list[int] = []
        self._rng = np.random.default_rng(config.seed)
        self._episodes: deque[list[Transition]] = deque()
        """The buffer's transitions grouped by episode, oldest first (critic_batches "episodes")."""
        self._episode_transitions = 0

    # -- the Algorithm protocol ------------------------------------------------------
    def modules(self) -> list[nn.Module]:
        """The policy's model, the critic and its target, the KL reference's model, the baseline."""
        return unique_modules(
            self.policy.model,
            self.critic,
            self.target,
            None if self.reference is None else self.reference.model,
            self.baseline,
        )

    def actor(self) -> Actor:
        """Rollouts sample from the current policy, reusing each episode's prompt cache."""
        return CachedPolicyActor(self.policy, self.sampling)

    def observe(self, episodes: Sequence[Episode]) -> None:
        """Add every transition to the replay buffer (with the invalid-action penalty, if set)."""
        penalty = self.config.invalid_action_penalty
        fresh = [e for e in episodes if e.transitions]
        if fresh:
            self._latest = []
            self._latest_policy = self.actor_updates
            self._latest_order = []
        for episode in fresh:
            stored = []
            for transition in episode.transitions:
                reward = shaped_reward(transition, penalty)
                if reward != transition.reward:
                    transition = transition.model_copy(update={"reward": reward})
                self.buffer.add(transition)
                stored.append(transition)
            self._episodes.append(stored)
            self._latest.append(stored)
            self._episode_transitions += len(stored)
        while self._episode_transitions > len(self.buffer):  # the buffer evicted the oldest
            self._episode_transitions -= len(self._episodes.popleft())

    def update(self, iteration: int) -> dict[str, float]:
        """The critic steps, then (after the warm-up) the actor steps of iteration ``iteration``.

        Iterations count from 1: the actor first steps in iteration ``warmup_iterations + 1``.
        """
        if len(self.buffer) == 0:
            logger.info("ArCHer's replay buffer is empty; skipping update %d", iteration)
            return {}
        config = self.config
        metrics: dict[str, float] = {"critic/buffer_size": float(len(self.buffer))}
        start = time.perf_counter()
        history = [self.critic_step() for _ in range(config.critic_steps)]
        metrics.update(_mean_metrics("critic", history))
        metrics["time/critic_s"] = time.perf_counter() - start
        actor_on = iteration > config.warmup_iterations and config.actor_steps > 0
        metrics["actor/active"] = float(actor_on)
        if actor_on:
            start = time.perf_counter()
            history = [self.actor_step() for _ in range(config.actor_steps)]
            metrics.update(_mean_metrics("actor", history))
            metrics["time/actor_s"] = time.perf_counter() - start
        return metrics

    # -- critic --------------------------------------------------------------------
    def critic_step(self, batch: Sequence[Transition] | None = None) -> dict[str, float]:
        """One critic step (ArCHer's targets), then the Polyak update of the target.

        ``batch`` defaults to ``critic_batch_size`` transitions drawn from the buffer.
        """
        config = self.config
        grouped = batch is None and config.critic_batches == "episodes" and bool(self._episodes)
        if batch is None:
            batch = (
                self._episode_batch() if grouped else self.buffer.sample(config.critic_batch_size)
            )
        device = module_device(self.critic)
        observations = [t.observation for t in batch]
        rewards = torch.tensor([t.reward for t in batch], dtype=torch.float32, device=device)
        dones = torch.tensor([t.done for t in batch], dtype=torch.bool, device=device)
        # a_pi ~ pi(. | s), fresh; the turns of one episode share their history's computation.
        generate = self.policy.generate_shared if grouped else self.policy.generate
        sampled = generate([policy_prompt(t) for t in batch], self.sampling)
        with torch.no_grad(), eval_mode(self.target):
            target_v_next = self.target.v([t.next_observation for t in batch])  # (B, 2)
            target_q_pi = self.target.q(observations, [g.text for g in sampled])  # (B, 2)
        q_pred, v_pred = self.critic(observations, [t.action for t in batch])  # (B, 2), (B, 2)
        loss, metrics = critic_loss(
            q_pred, v_pred, rewards, dones, target_v_next, target_q_pi, config.gamma
        )
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        metrics["grad_norm"] = clip_and_step(
            self.critic_optimizer,
            [p for group in self.critic_optimizer.param_groups for p in group["params"]],
            config.max_grad_norm,
        )
        polyak_update(self.target, self.critic, config.polyak_tau)
        self.critic_updates += 1
        return metrics

    def _episode_batch(self) -> list[Transition]:
        """Whole episodes drawn uniformly (with replacement) until ``critic_batch_size`` turns.

        Every stored transition is equally likely to be in a batch, as with
        uniform sampling; the turns of an episode come together. In a run of
        several processes each keeps its share of the episodes (`shard`).
        """
        _, processes = process_group()
        drawn: list[list[Transition]] = []
        turns = 0
        while turns < self.config.critic_batch_size or len(drawn) < processes:
            drawn.append(self._episodes[int(self._rng.integers(len(self._episodes)))])
            turns += len(drawn[-1])
        return [t for episode in shard(drawn) for t in episode]

    # -- actor ---------------------------------------------------------------------
    def actor_step(self, observations: Sequence[str] | None = None) -> dict[str, float]:
        """One REINFORCE step on utterances sampled from the current policy.

        ``observations`` default to ``actor_batch_size`` states drawn as
        ``actor_states`` says; utterances are sampled afresh at them, except
        that with "latest" the rollout's own samples are used while the policy
        is still the one that drew them.
        """
        config = self.config
        generations: list[Generation] | None = None
        turns: list[Transition] | None = None
        own_samples = False
        if observations is None and config.actor_states == "latest" and self._latest:
            turns, generations, own_samples = self._latest_batch()
        elif observations is None:
            turns = self.buffer.sample(config.actor_batch_size)
        if turns is not None:
            observations = [t.observation for t in turns]  # what the critic reads
            prompts: list[Prompt] = [policy_prompt(t) for t in turns]  # what the policy saw
        else:
            observations = list(observations or [])
            prompts = list(observations)
        if generations is None:
            generations = self.policy.generate(prompts, self.sampling)
        texts = [g.text for g in generations]
        with torch.no_grad(), eval_mode(self.critic):
            q_pi = self.critic.q(observations, texts)  # (B, 2)
            v = self.critic.v(observations)  # (B, 2)
            if config.advantage_estimator == "gae":
                if turns is None or not own_samples:
                    raise ValueError(
                        'advantage_estimator "gae" scores the rollout\'s own turns; call '
                        "actor_step() without observations, right after observe()"
                    )
                v_next = self.critic.v([t.next_observation for t in turns])  # (B, 2)
                advantages, _ = gae(
                    torch.tensor([t.reward for t in turns], dtype=torch.float32),
                    v.min(dim=-1).values.float().cpu(),
                    v_next.min(dim=-1).values.float().cpu(),
                    torch.tensor([t.done for t in turns]),
                    config.gamma,
                    config.gae_lambda,
                )
            else:
                advantages = advantage(q_pi, v).cpu()  # (B,)
        raw_mean = float(advantages.mean())
        if config.normalize_advantages:
            advantages = normalize(advantages)
        visits = self.buffer.visit_counts(texts) if config.min_visits else None
        baselines = None
        if self.baseline is not None and self.baseline_optimizer is not None:
            baselines = baseline_step(
                self.baseline,
                self.baseline_optimizer,
                self.policy.tokenizer.decode,
                observations,
                generations,
                advantages,
                self.config.max_grad_norm,
            )

        batch = len(observations)
        history = []
        for start in range(0, batch, config.micro_batch_size):
            rows = slice(start, start + config.micro_batch_size)
            chunk_obs = prompts[rows]
            chunk_ids = [g.token_ids for g in generations[rows]]
            ref = None
            if self.reference is not None:
                with torch.no_grad():
                    ref = self._score(chunk_obs, chunk_ids, self.reference)
            logp = self._score(chunk_obs, chunk_ids)
            loss, metrics = actor_loss(
                logp,
                advantages[rows].to(logp[0].device),
                advantage_clip=config.advantage_clip,
                token_baselines=None if baselines is None else baselines[rows],
                ref_logprobs=ref,
                kl_coef=config.kl_coef,
                visit_counts=None if visits is None else visits[rows],
                min_visits=config.min_visits,
            )
            (loss * (len(chunk_obs) / batch)).backward()
            metrics["weight"] = len(chunk_obs) / batch
            history.append(metrics)
        result = {
            key: sum(m[key] * m["weight"] for m in history) for key in history[0] if key != "weight"
        }
        if self.actor_optimizer is None:
            raise ValueError("the policy has no trainable parameters, so the actor cannot step")
        result["grad_norm"] = clip_and_step(
            self.actor_optimizer, self.actor_parameters, config.max_grad_norm
        )
        result["raw_advantage_mean"] = raw_mean
        result["q_pi_mean"] = float(q_pi.min(dim=-1).values.mean())
        result["v_mean"] = float(v.min(dim=-1).values.mean())
        result["sample_eos_rate"] = float(np.mean([g.finished for g in generations]))
        self.actor_updates += 1
        return result

    def _latest_batch(self) -> tuple[list[Transition], list[Generation], bool]:
        """Whole episodes of the newest rollout, about ``actor_batch_size`` turns, and actions.

        Episodes are drawn without replacement across the steps of an iteration.
        The rollout's samples are reused while no actor step has happened since
        they were drawn (they are then exact samples of the current policy), and
        always under the "gae" estimator, whose advantages are those samples'
        outcomes; otherwise the policy samples afresh at the same states. The
        flag says whether the rollout's own samples were used. In a run of several
        processes each keeps its share of the episodes drawn (`shard`).
        """
        _, processes = process_group()
        drawn: list[list[Transition]] = []
        count = 0
        while count < self.config.actor_batch_size or len(drawn) < processes:
            if not self._latest_order:
                self._latest_order = list(self._rng.permutation(len(self._latest)))
                if drawn:
                    break  # a whole pass over the rollout is one batch at most
            drawn.append(self._latest[int(self._latest_order.pop())])
            count += len(drawn[-1])
        turns: list[Transition] = []
        logged: list[Generation] = []
        for episode in shard(drawn):  # this process's share of the episodes
            for t in episode:
                turns.append(t)
                ids = t.action_token_ids or []
                logged.append(Generation(text=t.action, token_ids=list(ids), logprobs=[]))
        current = self._latest_policy == self.actor_updates
        own = current or self.config.advantage_estimator == "gae"
        if own and all(g.token_ids for g in logged):
            return turns, logged, True
        return turns, self.policy.generate([policy_prompt(t) for t in turns], self.sampling), False

    def _score(
        self,
        observations: Sequence[Prompt],
        token_ids: Sequence[Sequence[int]],
        policy: LocalPolicy | None = None,
    ) -> list[torch.Tensor]:
        """Per-token log-probs; turns of one episode share a packed pass (states "latest")."""
        policy = policy or self.policy
        if self.config.actor_states == "latest":
            return policy.log_probs_packed(observations, token_ids)
        return policy.log_probs(observations, token_ids)

    # -- checkpoints -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Policy weights, critic, target, optimisers, buffer and counters (plain tensors)."""
        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "policy": policy_state(self.policy),
            "critic": self.critic.state_dict(),
            "target": self.target.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "actor_optimizer": (
                None if self.actor_optimizer is None else self.actor_optimizer.state_dict()
            ),
            "buffer": self.buffer.state_dict(),
            # The generator of whole-episode critic batches and of the newest rollout's order.
            "rng": self._rng.bit_generator.state,
            "critic_updates": self.critic_updates,
            "actor_updates": self.actor_updates,
        }
        if self.reference is not None:
            state["reference"] = matching_state(self.reference.model, self.policy.model)
        if self.baseline is not None and self.baseline_optimizer is not None:
            state["baseline"] = self.baseline.state_dict()
            state["baseline_optimizer"] = self.baseline_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict`'s output into an Archer built with the same config and model."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"ArCHer state has version {state.get('version')!r}, this release reads "
                f"version {STATE_VERSION}"
            )
        load_policy_state(self.policy, state["policy"])
        self.critic.load_state_dict(state["critic"])
        self.target.load_state_dict(state["target"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        if self.actor_optimizer is not None and state["actor_optimizer"] is not None:
            self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.buffer.load_state_dict(state["buffer"])
        self._episodes = deque(_episodes_in_order(self.buffer.in_order()))
        self._episode_transitions = sum(len(e) for e in self._episodes)
        if "rng" in state:  # absent from checkpoints written before it was saved
            self._rng.bit_generator.state = state["rng"]
        self.critic_updates = int(state["critic_updates"])
        self.actor_updates = int(state["actor_updates"])
        if self.reference is not None and "reference" in state:
            with torch.no_grad():
                parameters = dict(self.reference.model.named_parameters())
                for name, tensor in state["reference"].items():
                    parameters[name].copy_(tensor)
        if self.baseline is not None and self.baseline_optimizer is not None:
            if "baseline" not in state:
                raise ValueError(
                    "the checkpoint has no token-level baseline but token_baseline is on; "
                    "resume with the config the checkpoint was written with"
                )
            self.baseline.load_state_dict(state["baseline"])
            self.baseline_optimizer.load_state_dict(state["baseline_optimizer"])


def _episodes_in_order(stored: Sequence[Transition]) -> list[list[Transition]]:
    """Transitions given oldest first, cut at episode ends."""
    episodes: list[list[Transition]] = [[]]
    for transition in stored:
        episodes[-1].append(transition)
        if transition.done:
            episodes.append([])
    return [episode for episode in episodes if episode]


def _mean_metrics(prefix: str, history: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each metric averaged over the steps, under ``prefix/``."""
    if not history:
        return {}
    return {f"{prefix}/{key}": float(np.mean([h[key] for h in history])) for key in history[0]}


__all__ = ["Archer", "ArcherConfig", "TokenBaseline"]
