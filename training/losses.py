"""ArCHer's losses, and those of its offline variant and on-policy baseline, as pure functions.

Paper: Zhou, Zanette, Pan, Levine, Kumar, "ArCHer: Training Language Model
Agents via Hierarchical Multi-Turn RL", ICML 2024 (arXiv 2402.19446); the
offline variant follows the authors' follow-up code (IQL critic + AWR actor).
docs/algorithm.md describes it as implemented here.

Every function takes tensors and returns ``(loss, metrics)``: a scalar tensor to
call ``backward`` on and a dict of plain floats to log. Nothing here steps an
optimiser, samples, or calls a model, so each target can be checked by hand.
Shapes: B is the batch of utterances; the critic's heads come in pairs, (B, 2);
an utterance's tokens come as a list of B 1-D tensors of lengths T_b (the
policy's ``log_probs`` returns exactly that), because utterances differ in
length.

Where this departs from the paper or its public code:

- The actor is scored on exactly the token ids it is given, which the policy
  takes from sampling and which include the end-of-utterance token (the public
  code never gives that token gradient and re-tokenizes the text).
- A time-limit end counts as done (no bootstrap past it), as in the paper: the
  caller passes ``dones = terminated | truncated``. TD targets use
  ``torch.where`` rather than multiplying by ``1 - done``, so a NaN or inf value
  estimate for a terminal next state cannot leak into the loss.
- Gradient-norm clipping is the trainer's job, per optimiser over that
  optimiser's own parameters (the public code clips actor and critic together).
- The stability options of `actor_loss` (advantage normalisation and clipping,
  a KL anchor, the visit-count guard) are the stability options of docs/algorithm.md,
  not from the paper; all are off by default, which gives the paper's plain
  REINFORCE.
- The paper's token-level baseline, which the public code never finished, is
  `token_baseline_loss` plus ``actor_loss(token_baselines=...)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

from archer_agents.training.advantages import normalize
from archer_agents.training.loss_checks import check_aligned, check_pair, check_vector, padded

Metrics = dict[str, float]


# ------------------------------------------------------------------ critic ---


def td_target(
    rewards: torch.Tensor, dones: torch.Tensor, next_values: torch.Tensor, gamma: float
) -> torch.Tensor:
    """y = r + gamma * (1 - done) * V(s'), per head; no gradient.

    rewards (B,), dones (B,) bool or 0/1, next_values (B, K) -> (B, K).
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    with torch.no_grad():
        done = dones.bool()[:, None]  # (B, 1)
        bootstrap = torch.where(done, torch.zeros_like(next_values), next_values)  # (B, K)
        return rewards.to(next_values.dtype)[:, None] + gamma * bootstrap  # (B, K)


def critic_loss(
    q_pred: torch.Tensor,
    v_pred: torch.Tensor,
    rewards: torch.Tensor,
    dones: torch.Tensor,
    target_v_next: torch.Tensor,
    target_q_pi: torch.Tensor,
    gamma: float,
) -> tuple[torch.Tensor, Metrics]:
    """ArCHer's double-critic loss: the sum of four MSEs, each head toward its own target.

    Args:
        q_pred: (B, 2) online Q_k(s, a) at the buffer's action.
        v_pred: (B, 2) online V_k(s).
        rewards: (B,) r.
        dones: (B,) terminated OR truncated: a time-limit end counts as done.
        target_v_next: (B, 2) target-network Vbar_k(s').
        target_q_pi: (B, 2) target-network Qbar_k(s, a_pi), a_pi freshly sampled
            from the current policy at s.
        gamma: discount.

    y_Qk = r + gamma * (1 - done) * Vbar_k(s');  y_Vk = Qbar_k(s, a_pi).
    """
    batch = check_pair("q_pred", q_pred)
    check_pair("v_pred", v_pred, batch)
    check_pair("target_v_next", target_v_next, batch)
    check_pair("target_q_pi", target_q_pi, batch)
    check_vector("rewards", rewards, batch)
    check_vector("dones", dones, batch)

    y_q = td_target(rewards, dones, target_v_next, gamma)  # (B, 2)
    y_v = target_q_pi.detach()  # (B, 2)
    q_mse = ((q_pred - y_q) ** 2).mean(dim=0)  # (2,) one MSE per Q head
    v_mse = ((v_pred - y_v) ** 2).mean(dim=0)  # (2,) one MSE per V head
    loss = q_mse.sum() + v_mse.sum()
    metrics = {
        "critic_loss": loss.item(),
        "q1_loss": q_mse[0].item(),
        "q2_loss": q_mse[1].item(),
        "v1_loss": v_mse[0].item(),
        "v2_loss": v_mse[1].item(),
        "q_mean": q_pred.mean().item(),
        "v_mean": v_pred.mean().item(),
        "q_target_mean": y_q.mean().item(),
        "v_target_mean": y_v.mean().item(),
    }
    return loss, metrics


def advantage(q_pi: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A = min_k Q_k(s, a_pi) - min_k V_k(s): (B, 2), (B, 2) -> (B,), no gradient."""
    batch = check_pair("q_pi", q_pi)
    check_pair("v", v, batch)
    with torch.no_grad():
        return q_pi.min(dim=-1).values - v.min(dim=-1).values  # (B,)


# ------------------------------------------------------------------- actor ---


def actor_loss(
    token_logprobs: Sequence[torch.Tensor],
    advantages: torch.Tensor,
    *,
    normalize_advantages: bool = False,
    advantage_clip: float | None = None,
    token_baselines: Sequence[torch.Tensor] | None = None,
    ref_logprobs: Sequence[torch.Tensor] | None = None,
    kl_coef: float = 0.0,
    visit_counts: torch.Tensor | None = None,
    min_visits: int = 0,
) -> tuple[torch.Tensor, Metrics]:
    """ArCHer's token-level REINFORCE: -mean_b( A_b * sum_t log pi(token_bt) ).

    Args:
        token_logprobs: B tensors (T_b,), log pi of each scored token, with
            gradient; the end-of-utterance token included.
        advantages: (B,) utterance-level advantages (see `advantage`); detached here.
        normalize_advantages: subtract the batch mean and divide by the batch std.
        advantage_clip: clamp advantages to [-c, c] (after normalisation).
        token_baselines: B tensors (T_b,), the token-level baseline b(s, a_<t)
            for each token (see `token_baseline_loss`); the token's weight becomes
            A_b - b_bt. Detached here.
        ref_logprobs: B tensors (T_b,), a reference policy's log-probs of the same
            tokens (e.g. the behaviour-cloned policy). Enables the KL metric.
        kl_coef: weight of the KL anchor: kl_coef * mean_b sum_t k3_bt, with the
            sampled-token estimate k3 = exp(ref - logp) - (ref - logp) - 1 >= 0.
            Its gradient pulls each sampled position towards the reference
            distribution (in expectation, the gradient of KL(ref || pi) there).
        visit_counts: (B,) how often the critic has seen each utterance
            (`ReplayBuffer.visit_counts`).
        min_visits: the guard: where visit_counts < min_visits the utterance's
            probability is never raised (positive token weights become zero).
            Applied last, after normalisation, clipping and the baseline.

    Returns (loss, metrics); the loss is the policy-gradient term plus the KL term.
    """
    batch = len(token_logprobs)
    check_vector("advantages", advantages, batch)
    logp, mask = padded("token_logprobs", token_logprobs, batch)  # (B, T), (B, T)
    weights = advantages.detach().to(logp.dtype)  # (B,)

    if normalize_advantages:
        weights = normalize(weights)
    if advantage_clip is not None:
        if advantage_clip <= 0:
            raise ValueError(f"advantage_clip must be positive, got {advantage_clip}")
        weights = weights.clamp(-advantage_clip, advantage_clip)

    token_weights = weights[:, None].expand_as(logp)  # (B, T)
    if token_baselines is not None:
        check_aligned("token_baselines", token_baselines, token_logprobs)
        baseline, _ = padded("token_baselines", [b.detach() for b in token_baselines], batch)
        token_weights = token_weights - baseline.to(logp.dtype)  # (B, T)

    guarded = torch.zeros(batch, dtype=torch.bool, device=logp.device)  # (B,)
    if min_visits > 0:
        if visit_counts is None:
            raise ValueError(
                "min_visits > 0 needs visit_counts, one count per utterance "
                "(ReplayBuffer.visit_counts(actions))"
            )
        check_vector("visit_counts", visit_counts, batch)
        rare = visit_counts.to(logp.device) < min_visits  # (B,)
        raised = ((token_weights > 0) & mask).any(dim=1)  # (B,)
        guarded = rare & raised
        token_weights = torch.where(
            rare[:, None], token_weights.clamp(max=0.0), token_weights
        )  # (B, T)

    token_weights = token_weights * mask  # (B, T) padding contributes nothing
    sequence_logp = (logp * mask).sum(dim=1)  # (B,)
    pg_loss = -(token_weights * logp).sum(dim=1).mean()
    loss = pg_loss

    metrics = {
        "pg_loss": pg_loss.item(),
        "advantage_mean": weights.mean().item(),
        "advantage_std": weights.std(unbiased=False).item(),
        "logprob_mean": sequence_logp.mean().item(),
        "tokens_mean": mask.sum(dim=1).float().mean().item(),
        "guarded_fraction": guarded.float().mean().item(),
    }

    if kl_coef < 0:
        raise ValueError(f"kl_coef must be non-negative, got {kl_coef}")
    if kl_coef > 0 and ref_logprobs is None:
        raise ValueError("kl_coef > 0 needs ref_logprobs: the reference policy's log-probs")
    if ref_logprobs is not None:
        check_aligned("ref_logprobs", ref_logprobs, token_logprobs)
        ref, _ = padded("ref_logprobs", [r.detach() for r in ref_logprobs], batch)
        log_ratio = ref.to(logp.dtype) - logp  # (B, T) log(ref / pi)
        k3 = (torch.exp(log_ratio) - log_ratio - 1.0) * mask  # (B, T) >= 0
        kl = k3.sum(dim=1).mean()
        metrics["kl"] = kl.item()
        if kl_coef > 0:
            loss = loss + kl_coef * kl

    metrics["actor_loss"] = loss.item()
    return loss, metrics


def token_baseline_loss(
    token_values: Sequence[torch.Tensor], advantages: torch.Tensor
) -> tuple[torch.Tensor, Metrics]:
    """The paper's token-level baseline: regress b(s, a_<t) onto the utterance's advantage.

    Args:
        token_values: B tensors (T_b,) with gradient; entry t is the baseline's
            value for the prefix before token t (the observation plus the first
            t tokens of the utterance), aligned with the actor's token_logprobs.
        advantages: (B,) utterance-level advantages A_b (the regression target,
            detached).

    Loss: mean over all tokens of the batch of (b_bt - A_b)^2, so every token
    prefix is one regression sample.
    """
    batch = len(token_values)
    check_vector("advantages", advantages, batch)
    values, mask = padded("token_values", token_values, batch)  # (B, T), (B, T)
    target = advantages.detach().to(values.dtype)[:, None]  # (B, 1)
    squared = ((values - target) ** 2) * mask  # (B, T)
    loss = squared.sum() / mask.sum().clamp(min=1)
    metrics = {
        "baseline_loss": loss.item(),
        "baseline_mean": (values * mask).sum().item() / max(int(mask.sum()), 1),
    }
    return loss, metrics


# ----------------------------------------------------------- offline (IQL) ---


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Elementwise |tau - 1(diff < 0)| * diff^2 with diff = target - prediction.

    With expectile > 0.5, predicting below the target (diff > 0) costs more than
    predicting above it, so the prediction settles at an upper expectile.
    """
    if not 0.0 < expectile < 1.0:
        raise ValueError(f"expectile must lie in (0, 1), got {expectile}")
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return weight * diff**2


def iql_critic_loss(
    q_pred: torch.Tensor,
    v_pred: torch.Tensor,
    rewards: torch.Tensor,
    dones: torch.Tensor,
    target_v_next: torch.Tensor,
    target_q_data: torch.Tensor,
    gamma: float,
    expectile: float = 0.9,
) -> tuple[torch.Tensor, Metrics]:
    """Offline ArCHer's critic (IQL): Q by TD onto target V, V by expectile regression.

    Args:
        q_pred: (B, 2) online Q_k(s, a_data).
        v_pred: (B, 2) online V_k(s).
        rewards: (B,); dones: (B,) terminated OR truncated.
        target_v_next: (B, 2) target Vbar_k(s').
        target_q_data: (B, 2) target Qbar_k(s, a_data) at the DATA action: no
            policy sample, so no out-of-distribution action is ever queried.
        gamma: discount. expectile: tau_e (0.9 in the authors' code).

    y_Qk = r + gamma * (1 - done) * Vbar_k(s') (MSE, each head its own target);
    each V_k is regressed onto min_k Qbar_k(s, a_data) with the expectile loss.
    Loss = sum of the two Q MSEs and the two V expectile losses.
    """
    batch = check_pair("q_pred", q_pred)
    check_pair("v_pred", v_pred, batch)
    check_pair("target_v_next", target_v_next, batch)
    check_pair("target_q_data", target_q_data, batch)
    check_vector("rewards", rewards, batch)
    check_vector("dones", dones, batch)

    y_q = td_target(rewards, dones, target_v_next, gamma)  # (B, 2)
    y_v = target_q_data.detach().min(dim=-1, keepdim=True).values  # (B, 1)
    q_mse = ((q_pred - y_q) ** 2).mean(dim=0)  # (2,)
    v_exp = expectile_loss(y_v - v_pred, expectile).mean(dim=0)  # (2,)
    loss = q_mse.sum() + v_exp.sum()
    metrics = {
        "critic_loss": loss.item(),
        "q_loss": q_mse.sum().item(),
        "v_loss": v_exp.sum().item(),
        "q_mean": q_pred.mean().item(),
        "v_mean": v_pred.mean().item(),
        "v_target_mean": y_v.mean().item(),
    }
    return loss, metrics


def awr_actor_loss(
    token_logprobs: Sequence[torch.Tensor],
    advantages: torch.Tensor,
    beta: float = 1.0,
    max_weight: float = 100.0,
) -> tuple[torch.Tensor, Metrics]:
    """Advantage-weighted regression: -mean_b( min(exp(beta * A_b), max_weight) * sum_t log pi ).

    Args:
        token_logprobs: B tensors (T_b,), log pi of the DATA utterance's tokens.
        advantages: (B,) min Q(s, a_data) - min V(s); detached here.
        beta: inverse temperature (1.0 in the authors' code).
        max_weight: cap on the weight, so one large advantage cannot dominate.
    """
    if max_weight <= 0:
        raise ValueError(f"max_weight must be positive, got {max_weight}")
    batch = len(token_logprobs)
    check_vector("advantages", advantages, batch)
    logp, mask = padded("token_logprobs", token_logprobs, batch)  # (B, T)
    exponent = (beta * advantages.detach().to(logp.dtype)).clamp(max=math.log(max_weight))
    weights = torch.exp(exponent)  # (B,) in (0, max_weight]
    sequence_logp = (logp * mask).sum(dim=1)  # (B,)
    loss = -(weights * sequence_logp).mean()
    metrics = {
        "awr_loss": loss.item(),
        "weight_mean": weights.mean().item(),
        "weight_max": weights.max().item() if batch else 0.0,
        "weight_capped_fraction": (exponent >= math.log(max_weight)).float().mean().item(),
        "logprob_mean": sequence_logp.mean().item(),
    }
    return loss, metrics


# --------------------------------------------------------------------- PPO ---


def ppo_policy_loss(
    new_logprobs: Sequence[torch.Tensor],
    old_logprobs: Sequence[torch.Tensor],
    advantages: torch.Tensor | Sequence[torch.Tensor],
    clip: float = 0.2,
    level: Literal["token", "utterance"] = "token",
) -> tuple[torch.Tensor, Metrics]:
    """PPO's clipped surrogate, per token or per utterance.

    Args:
        new_logprobs: B tensors (T_b,), log-probs under the current weights, with gradient.
        old_logprobs: B tensors (T_b,), log-probs at sampling time (detached here).
        advantages: (B,) one advantage per utterance, given to each of its tokens;
            or, at ``level="token"`` only, B tensors (T_b,) of per-token advantages.
        clip: epsilon, the ratio is kept in [1 - clip, 1 + clip].
        level: ``"token"``: one ratio per token, pi(t)/pi_old(t), and the loss is
            the mean over all tokens of the batch (token-level PPO, the paper's
            baseline). ``"utterance"``: one ratio per utterance,
            exp(sum_t log pi - sum_t log pi_old), and the loss is the mean over
            utterances.
    """
    if clip <= 0:
        raise ValueError(f"clip must be positive, got {clip}")
    batch = len(new_logprobs)
    check_aligned("old_logprobs", old_logprobs, new_logprobs)
    new, mask = padded("new_logprobs", new_logprobs, batch)  # (B, T)
    old, _ = padded("old_logprobs", [o.detach() for o in old_logprobs], batch)  # (B, T)

    if level == "token":
        if isinstance(advantages, torch.Tensor):
            check_vector("advantages", advantages, batch)
            adv = advantages.detach().to(new.dtype)[:, None].expand_as(new)  # (B, T)
        else:
            check_aligned("advantages", advantages, new_logprobs)
            adv, _ = padded("advantages", [a.detach() for a in advantages], batch)  # (B, T)
        log_ratio = (new - old.to(new.dtype)) * mask  # (B, T)
        weight = mask.to(new.dtype)
        count = mask.sum().clamp(min=1)
    elif level == "utterance":
        if not isinstance(advantages, torch.Tensor):
            raise ValueError("level='utterance' takes one advantage per utterance: a (B,) tensor")
        check_vector("advantages", advantages, batch)
        adv = advantages.detach().to(new.dtype)  # (B,)
        log_ratio = ((new - old.to(new.dtype)) * mask).sum(dim=1)  # (B,)
        weight = torch.ones_like(adv)
        count = torch.tensor(max(batch, 1))
    else:
        raise ValueError(f"level must be 'token' or 'utterance', got {level!r}")

    ratio = torch.exp(log_ratio)
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * adv
    surrogate = torch.minimum(unclipped, clipped)
    loss = -(surrogate * weight).sum() / count
    with torch.no_grad():
        was_clipped = ((ratio - 1.0).abs() > clip).to(new.dtype)
        approx_kl = (ratio - 1.0) - log_ratio  # >= 0, the k3 estimate of KL(old || new)
        metrics = {
            "ppo_loss": loss.item(),
            "clip_fraction": ((was_clipped * weight).sum() / count).item(),
            "approx_kl": ((approx_kl * weight).sum() / count).item(),
            "ratio_mean": ((ratio * weight).sum() / count).item(),
        }
    return loss, metrics


def value_loss(
    values: torch.Tensor,
    returns: torch.Tensor,
    old_values: torch.Tensor | None = None,
    clip: float | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """MSE of a value model onto returns, optionally PPO-clipped around old values.

    values, returns and old_values share one shape (e.g. (B,) per utterance).
    With ``clip`` and ``old_values``, the prediction may move at most ``clip`` from ``old_values``
    before the loss stops rewarding the move: mean(max((v - R)^2, (v_clip - R)^2)).
    """
    if values.shape != returns.shape:
        raise ValueError(
            f"values {tuple(values.shape)} and returns {tuple(returns.shape)} must match"
        )
    if (clip is None) != (old_values is None):
        raise ValueError(
            "value clipping needs both clip and old_values (the predictions at sampling "
            "time); pass both, or neither for a plain MSE"
        )
    target = returns.detach().to(values.dtype)
    squared = (values - target) ** 2
    if clip is not None and old_values is not None:
        if old_values.shape != values.shape:
            raise ValueError(
                f"old_values {tuple(old_values.shape)} must match values {tuple(values.shape)}"
            )
        old = old_values.detach().to(values.dtype)
        moved = old + (values - old).clamp(-clip, clip)
        squared = torch.maximum(squared, (moved - target) ** 2)
    loss = squared.mean()
    return loss, {"value_loss": loss.item(), "value_mean": values.mean().item()}


__all__ = [
    "actor_loss",
    "advantage",
    "awr_actor_loss",
    "critic_loss",
    "expectile_loss",
    "iql_critic_loss",
    "ppo_policy_loss",
    "td_target",
    "token_baseline_loss",
    "value_loss",
]
