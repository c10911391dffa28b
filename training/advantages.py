"""Advantage estimates shared by the algorithms, as pure functions of tensors.

Generalised advantage estimation is written once here and used by PPO (its
utterance-level advantages and value targets) and by ArCHer's ``"gae"``
estimator; advantage normalisation (centre on the batch mean, divide by the
batch standard deviation) is written once here and used by `losses.actor_loss`,
ArCHer's actor step, PPO's batch and REINFORCE's batch-mean baseline.

GAE: Schulman, Moritz, Levine, Jordan, Abbeel, "High-Dimensional Continuous
Control Using Generalized Advantage Estimation", ICLR 2016 (arXiv 1506.02438),
applied per utterance step rather than per token. Where it departs: a step that
ends its episode (terminated or truncated: a time-limit end counts as done, as
in ArCHer) neither bootstraps from V(s') nor passes advantage back across it,
and a terminal V(s') is selected away with ``torch.where`` rather than
multiplied by zero, so a NaN or inf estimate there cannot leak in.
"""

from __future__ import annotations

import torch

NORMALIZE_EPS = 1e-8
"""Added to the standard deviation so that a batch of equal advantages divides by ~0 safely."""


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and value targets, both (T,), for steps in order.

    rewards r_t, values V(s_t), next_values V(s_{t+1}) and dones are (T,), the
    turns of one or more whole episodes in turn order (an episode ends at a done
    step; the last step ends the sequence)::

        delta_t = r_t + gamma * (1 - done_t) * V(s_{t+1}) - V(s_t)
        A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1}

    with A_T = 0 past the last step. The value targets are A_t + V(s_t) (lambda
    1: the discounted return; lambda 0: the one-step TD target). No gradient.
    """
    steps = rewards.shape[0]
    for name, tensor in (("values", values), ("next_values", next_values), ("dones", dones)):
        if tensor.shape != (steps,):
            raise ValueError(f"{name} must have shape ({steps},), got {tuple(tensor.shape)}")
    with torch.no_grad():
        done = dones.bool()
        values = values.to(rewards.dtype)
        bootstrap = torch.where(done, torch.zeros_like(values), next_values.to(rewards.dtype))
        deltas = rewards + gamma * bootstrap - values  # (T,)
        carry = gamma * lam * (~done).to(rewards.dtype)  # (T,) what A_{t+1} passes back to A_t
        advantages = torch.zeros_like(deltas)
        running = torch.zeros((), dtype=deltas.dtype, device=deltas.device)
        for t in reversed(range(steps)):
            running = deltas[t] + carry[t] * running
            advantages[t] = running
        return advantages, advantages + values


def normalize(advantages: torch.Tensor, *, scale: bool = True) -> torch.Tensor:
    """Advantages centred on their batch mean and, with ``scale``, divided by the batch std.

    (N,) -> (N,). The standard deviation is the population one (``unbiased=False``)
    plus `NORMALIZE_EPS`; a batch of one is centred to zero and never divided.
    ``scale=False`` is the plain batch-mean baseline G_i - mean(G).
    """
    centred = advantages - advantages.mean()
    if not scale or advantages.numel() < 2:
        return centred
    return centred / (centred.std(unbiased=False) + NORMALIZE_EPS)


__all__ = ["NORMALIZE_EPS", "gae", "normalize"]
