"""Online ArCHer's settings: the critic's, the actor's, and the stability options.

The algorithm itself (Zhou et al., "ArCHer", ICML 2024, arXiv 2402.19446) and
where it departs from the paper are described in `training.algorithms.archer`;
this module only holds its configuration, so that the command line and the
offline-then-online variant can read it without the training code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from archer_agents.policies.protocol import SamplingParams
from archer_agents.training.critic_config import CriticSettings


class ArcherConfig(CriticSettings):
    """ArCHer's settings: the critic's (see `CriticSettings`), the actor's, and stability options.

    Defaults are the paper's public code where they make sense for any model
    (docs/algorithm.md, "The loop"); its learning rates are for GPT-2/7B models, and the
    0.6M-parameter CPU demo uses much higher ones (`archer_agents.cli.quickstart`).
    """

    actor_lr: float = Field(1e-5, gt=0.0)
    """Adam learning rate of the policy (paper: 1e-6 to 1e-5; the CPU demo model uses 1e-3)."""
    actor_steps: int = Field(3, ge=0)
    """Actor gradient steps per iteration once the warm-up is over (0: train the critic only)."""
    actor_batch_size: int = Field(256, ge=1)
    """Buffer states per actor step; one utterance is sampled from the policy at each."""
    micro_batch_size: int = Field(256, ge=1)
    """Utterances scored per forward pass of the actor; gradients accumulate (memory only)."""
    actor_states: Literal["buffer", "latest"] = "buffer"
    """Where actor states come from: "buffer" (the paper: uniform over the replay buffer) or
    "latest" (the episodes collected this iteration, whole, so their turns are scored packed;
    the actions sampled in the rollout are used as long as the policy has not changed since)."""
    critic_batches: Literal["transitions", "episodes"] = "transitions"
    """How critic batches are drawn: "transitions" (the paper: uniform) or "episodes" (whole
    episodes, each stored transition as likely; the turns of one episode share the cost of
    sampling a_pi, several times cheaper with whole-history observations)."""
    advantage_estimator: Literal["q", "gae"] = "q"
    """The actor's advantage: "q", the paper's min Q(s, a) - min V(s); or "gae", generalised
    advantage estimation with the online min V over the newest rollout's own turns
    (actor_states "latest"): it sees each turn's outcome, which a critic that cannot tell a
    winning guess from a losing one (Q(s, a) of a small encoder) misses. Several actor steps
    then take successive minibatches of that rollout (one pass per ``actor_steps``, as an
    epoch of PPO without its ratio): steps after the first score samples of the policy as it
    was at the rollout, a small, bounded lag."""
    gae_lambda: float = Field(0.0, ge=0.0, le=1.0)
    """GAE's lambda: 0 is the one-step TD error, 1 the discounted return minus V(s)."""
    warmup_iterations: int = Field(10, ge=0)
    """Iterations of critic training alone before the actor starts (paper: 10 to 20)."""
    max_new_tokens: int = Field(32, ge=1)
    """Longest sampled utterance in tokens, end-of-utterance token included."""
    temperature: float = Field(1.0, gt=0.0)
    """Sampling temperature; the actor's log-probabilities are those of this distribution."""
    normalize_advantages: bool = False
    """Standardise advantages over each actor batch (stability option, off in the paper)."""
    advantage_clip: float | None = Field(None, gt=0.0)
    """Clamp advantages to [-c, c], after normalisation (stability option; None: no clip)."""
    kl_coef: float = Field(0.0, ge=0.0)
    """Weight of the KL anchor to the policy as it was at the start (the behaviour-cloned one)."""
    min_visits: int = Field(0, ge=0)
    """Guard: never raise the probability of an utterance seen fewer times than this (0: off)."""
    invalid_action_penalty: float = Field(0.0, ge=0.0)
    """Subtracted from the reward of a turn the environment could not understand (0: off)."""
    token_baseline: bool = False
    """Subtract the paper's token-level baseline b(s, a_<t) from each token's advantage."""
    baseline_lr: float = Field(1e-3, gt=0.0)
    """Adam learning rate of the token-level baseline (used only with token_baseline)."""

    @model_validator(mode="after")
    def _consistent(self) -> ArcherConfig:
        if self.advantage_estimator == "gae" and self.actor_states != "latest":
            raise ValueError(
                'advantage_estimator "gae" needs the turns\' own rewards and next states, which '
                "only the newest rollout's turns have: set actor_states: latest, or use "
                "advantage_estimator: q"
            )
        if self.normalize_advantages and self.actor_batch_size < 2 and self.actor_steps > 0:
            raise ValueError(
                "normalize_advantages needs at least two utterances per actor batch to compute a "
                f"standard deviation, but actor_batch_size is {self.actor_batch_size}; raise "
                "actor_batch_size or set normalize_advantages: false"
            )
        return self

    @property
    def sampling(self) -> SamplingParams:
        """How the policy samples in rollouts, critic targets and actor steps alike."""
        return SamplingParams(max_new_tokens=self.max_new_tokens, temperature=self.temperature)


__all__ = ["ArcherConfig"]
