"""Analytic checks of the losses: every target and gradient below is computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from archer_agents.critic.encoders import HashingEncoder
from archer_agents.critic.model import DoubleCritic, make_target, polyak_update
from archer_agents.training.losses import (
    actor_loss,
    advantage,
    awr_actor_loss,
    critic_loss,
    expectile_loss,
    iql_critic_loss,
    ppo_policy_loss,
    td_target,
    token_baseline_loss,
    value_loss,
)

GAMMA = 0.9

# A three-state chain s0 -> s1 -> s2 -> end, reward -1, -1, 0; the last step terminates.
REWARDS = torch.tensor([-1.0, -1.0, 0.0])
DONES = torch.tensor([False, False, True])
# Target V_k at the next states s1, s2 and end (end's value must be ignored).
TARGET_V_NEXT = torch.tensor([[2.0, 4.0], [1.0, 3.0], [5.0, 7.0]])
# y_Q1 = [-1 + 0.9*2, -1 + 0.9*1, 0] = [0.8, -0.1, 0]
# y_Q2 = [-1 + 0.9*4, -1 + 0.9*3, 0] = [2.6,  1.7, 0]
EXPECTED_Y_Q = torch.tensor([[0.8, 2.6], [-0.1, 1.7], [0.0, 0.0]])
TARGET_Q_PI = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])


def leaves(*rows: list[float]) -> list[torch.Tensor]:
    return [torch.tensor(row, requires_grad=True) for row in rows]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors run fastest on one thread, and the test machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ critic ---


def test_td_targets_on_the_three_state_chain() -> None:
    torch.testing.assert_close(td_target(REWARDS, DONES, TARGET_V_NEXT, GAMMA), EXPECTED_Y_Q)


def test_critic_loss_is_the_sum_of_four_mses_each_head_toward_its_own_target() -> None:
    q_pred = torch.zeros(3, 2, requires_grad=True)
    v_pred = torch.zeros(3, 2, requires_grad=True)
    loss, metrics = critic_loss(q_pred, v_pred, REWARDS, DONES, TARGET_V_NEXT, TARGET_Q_PI, GAMMA)
    # Q1: (0.64 + 0.01 + 0) / 3;  Q2: (6.76 + 2.89 + 0) / 3
    # V1: (1 + 9 + 25) / 3;       V2: (4 + 16 + 36) / 3
    assert metrics["q1_loss"] == pytest.approx(0.65 / 3)
    assert metrics["q2_loss"] == pytest.approx(9.65 / 3)
    assert metrics["v1_loss"] == pytest.approx(35 / 3)
    assert metrics["v2_loss"] == pytest.approx(56 / 3)
    assert loss.item() == pytest.approx((0.65 + 9.65 + 35 + 56) / 3)
    loss.backward()
    # d/dpred of mean((pred - y)^2) = 2 (pred - y) / B: each column sees only its own target.
    torch.testing.assert_close(q_pred.grad, -2 * EXPECTED_Y_Q / 3)
    torch.testing.assert_close(v_pred.grad, -2 * TARGET_Q_PI / 3)


def test_time_limit_ends_do_not_bootstrap_and_terminal_values_cannot_leak() -> None:
    terminated = torch.tensor([False, False, False])
    truncated = torch.tensor([False, True, False])
    dones = terminated | truncated
    next_v = torch.tensor([[2.0, 4.0], [float("nan"), float("inf")], [1.0, 1.0]])
    y_q = td_target(torch.tensor([-1.0, -1.0, 0.5]), dones, next_v, GAMMA)
    torch.testing.assert_close(y_q, torch.tensor([[0.8, 2.6], [-1.0, -1.0], [1.4, 1.4]]))
    q_pred = torch.zeros(3, 2, requires_grad=True)
    loss, _ = critic_loss(
        q_pred,
        torch.zeros(3, 2),
        torch.tensor([-1.0, -1.0, 0.5]),
        dones,
        next_v,
        torch.zeros(3, 2),
        GAMMA,
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(q_pred.grad).all()


def test_gamma_and_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="gamma"):
        td_target(REWARDS, DONES, TARGET_V_NEXT, 1.5)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        critic_loss(
            torch.zeros(3), torch.zeros(3, 2), REWARDS, DONES, TARGET_V_NEXT, TARGET_Q_PI, GAMMA
        )
    with pytest.raises(ValueError, match="rewards"):
        critic_loss(
            torch.zeros(3, 2),
            torch.zeros(3, 2),
            REWARDS[:2],
            DONES,
            TARGET_V_NEXT,
            TARGET_Q_PI,
            GAMMA,
        )


def test_advantage_takes_the_minimum_over_heads_without_gradient() -> None:
    q_pi = torch.tensor([[1.0, 3.0], [5.0, 2.0]], requires_grad=True)
    v = torch.tensor([[0.5, 0.2], [1.0, 4.0]], requires_grad=True)
    a = advantage(q_pi, v)
    torch.testing.assert_close(a, torch.tensor([1.0 - 0.2, 2.0 - 1.0]))
    assert not a.requires_grad


def test_td_learning_with_a_polyak_target_recovers_the_chain_values() -> None:
    """Q(s2)=0, Q(s1)=-1, Q(s0)=-1.9; V equals Q (one action per state)."""
    observations = ["start", "start middle", "start middle end"]
    next_observations = ["start middle", "start middle end", "over"]
    actions = ["go", "go", "go"]
    torch.manual_seed(0)
    critic = DoubleCritic(HashingEncoder(hidden_size=16, num_buckets=256, seed=0), hidden_size=32)
    target = make_target(critic)
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        with torch.no_grad():
            target_v_next = target.v(next_observations)
            target_q_pi = target.q(observations, actions)
        q_pred, v_pred = critic(observations, actions)
        loss, _ = critic_loss(q_pred, v_pred, REWARDS, DONES, target_v_next, target_q_pi, GAMMA)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        polyak_update(target, critic)  # tau = 0.1, the paper's
    with torch.no_grad():
        q, v = critic(observations, actions)
    truth = torch.tensor([-1.9, -1.0, 0.0])
    torch.testing.assert_close(q.min(dim=1).values, truth, atol=0.05, rtol=0)
    torch.testing.assert_close(v.min(dim=1).values, truth, atol=0.05, rtol=0)
    assert loss.item() < 0.01 * first


# ------------------------------------------------------------------- actor ---


def constant_critic(q_values: tuple[float, float], v_values: tuple[float, float]) -> DoubleCritic:
    """A real DoubleCritic whose heads ignore their input: last layer weight 0, bias constant."""
    critic = DoubleCritic(HashingEncoder(hidden_size=8, num_buckets=64, seed=0), hidden_size=8)
    with torch.no_grad():
        for heads, values in ((critic.q_heads, q_values), (critic.v_heads, v_values)):
            for head, value in zip(heads, values, strict=True):
                head[-1].weight.zero_()
                head[-1].bias.fill_(value)
    return critic


def test_constant_critic_gives_the_known_advantage_and_actor_gradient() -> None:
    critic = constant_critic(q_values=(2.0, 3.0), v_values=(0.5, 1.0))
    with torch.no_grad():
        adv = advantage(critic.q(["s", "t"], ["a", "b"]), critic.v(["s", "t"]))
    torch.testing.assert_close(adv, torch.tensor([1.5, 1.5]))  # min(2, 3) - min(0.5, 1)

    # A one-step token policy over three tokens, p = softmax(theta) = (0.5, 0.25, 0.25).
    theta = torch.log(torch.tensor([0.5, 0.25, 0.25])).requires_grad_(True)
    log_p = torch.log_softmax(theta, dim=0)
    utterances = [[0, 2], [1]]  # token ids, end-of-utterance token included
    token_logprobs = [log_p[ids] for ids in utterances]
    loss, metrics = actor_loss(token_logprobs, adv)
    # loss = -(1/2) * 1.5 * (log .5 + log .25 + log .25)
    assert loss.item() == pytest.approx(-0.75 * (math.log(0.5) + 2 * math.log(0.25)))
    loss.backward()
    # d log p_i / d theta = e_i - p; summed over the three tokens: (1, 1, 1) - 3p = (-.5, .25, .25)
    # grad = -(1/2) * 1.5 * (-.5, .25, .25) = (.375, -.1875, -.1875)
    torch.testing.assert_close(theta.grad, torch.tensor([0.375, -0.1875, -0.1875]))
    assert metrics["tokens_mean"] == 1.5
    assert metrics["guarded_fraction"] == 0.0


def test_actor_loss_scores_exactly_the_given_tokens() -> None:
    logps = leaves([-1.0, -2.0, -0.5], [-3.0])
    loss, _ = actor_loss(logps, torch.tensor([2.0, -1.0]))
    # -(1/2) * (2 * (-3.5) + (-1) * (-3)) = -(1/2) * (-7 + 3) = 2
    assert loss.item() == pytest.approx(2.0)
    loss.backward()
    torch.testing.assert_close(logps[0].grad, torch.tensor([-1.0, -1.0, -1.0]))
    torch.testing.assert_close(logps[1].grad, torch.tensor([0.5]))


def test_advantage_normalisation_and_clipping() -> None:
    logps = leaves([-1.0], [-1.0])
    _, metrics = actor_loss(logps, torch.tensor([1.0, 3.0]), normalize_advantages=True)
    assert metrics["advantage_mean"] == pytest.approx(0.0)  # (-1, 1)
    assert metrics["advantage_std"] == pytest.approx(1.0)
    loss, _ = actor_loss(logps, torch.tensor([5.0, -5.0]), advantage_clip=2.0)
    loss.backward()
    torch.testing.assert_close(logps[0].grad, torch.tensor([-1.0]))  # -(2)/2
    torch.testing.assert_close(logps[1].grad, torch.tensor([1.0]))  # -(-2)/2
    with pytest.raises(ValueError, match="positive"):
        actor_loss(logps, torch.tensor([1.0, 1.0]), advantage_clip=0.0)


def test_visit_count_guard_never_raises_a_rarely_seen_utterance() -> None:
    logps = leaves([-1.0, -1.0], [-2.0], [-0.5])
    advantages = torch.tensor([1.0, 2.0, -1.0])
    visits = torch.tensor([100, 3, 3])
    loss, metrics = actor_loss(logps, advantages, visit_counts=visits, min_visits=50)
    # Effective weights (1, 0, -1): -(1/3) * (1 * -2 + 0 * -2 + -1 * -0.5) = 0.5
    assert loss.item() == pytest.approx(0.5)
    loss.backward()
    torch.testing.assert_close(logps[0].grad, torch.full((2,), -1 / 3))
    torch.testing.assert_close(logps[1].grad, torch.zeros(1))  # positive, rare: zeroed
    torch.testing.assert_close(logps[2].grad, torch.tensor([1 / 3]))  # negative: kept
    assert metrics["guarded_fraction"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="visit_counts"):
        actor_loss(logps, advantages, min_visits=50)


def test_guard_applies_after_normalisation() -> None:
    # Normalised (1, 3) is (-1, 1); the rare second utterance must not be raised.
    logps = leaves([-1.0], [-1.0])
    loss, _ = actor_loss(
        logps,
        torch.tensor([1.0, 3.0]),
        normalize_advantages=True,
        visit_counts=torch.tensor([0, 0]),
        min_visits=1,
    )
    loss.backward()
    torch.testing.assert_close(logps[0].grad, torch.tensor([0.5]))
    torch.testing.assert_close(logps[1].grad, torch.tensor([0.0]))


def test_kl_anchor_uses_the_sampled_token_estimate() -> None:
    logp = torch.tensor([math.log(0.5)], requires_grad=True)
    ref = [torch.tensor([math.log(0.25)])]
    loss, metrics = actor_loss([logp], torch.tensor([0.0]), ref_logprobs=ref, kl_coef=0.1)
    # k3 = exp(ref - logp) - (ref - logp) - 1 = 0.5 + log 2 - 1
    k3 = 0.5 + math.log(2.0) - 1.0
    assert metrics["kl"] == pytest.approx(k3)
    assert loss.item() == pytest.approx(0.1 * k3)
    loss.backward()
    # d k3 / d logp = 1 - exp(ref - logp) = 0.5
    torch.testing.assert_close(logp.grad, torch.tensor([0.05]))
    same, metrics = actor_loss([logp], torch.tensor([0.0]), ref_logprobs=[logp.detach()])
    assert metrics["kl"] == 0.0 and same.item() == 0.0
    with pytest.raises(ValueError, match="ref_logprobs"):
        actor_loss([logp], torch.tensor([0.0]), kl_coef=0.1)


def test_token_level_baseline() -> None:
    logps = leaves([-1.0, -2.0])
    baselines = [torch.tensor([0.5, 1.5], requires_grad=True)]
    loss, _ = actor_loss(logps, torch.tensor([2.0]), token_baselines=baselines)
    # token weights (2 - 0.5, 2 - 1.5) = (1.5, 0.5): loss = -(1.5 * -1 + 0.5 * -2) = 2.5
    assert loss.item() == pytest.approx(2.5)
    loss.backward()
    torch.testing.assert_close(logps[0].grad, torch.tensor([-1.5, -0.5]))
    assert baselines[0].grad is None  # the actor never trains the baseline

    values = [torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([0.0], requires_grad=True)]
    base_loss, _ = token_baseline_loss(values, torch.tensor([2.0, 1.0]))
    # ((1-2)^2 + (2-2)^2 + (0-1)^2) / 3 tokens
    assert base_loss.item() == pytest.approx(2 / 3)
    base_loss.backward()
    torch.testing.assert_close(values[0].grad, torch.tensor([-2 / 3, 0.0]))

    # The guard works per token: A = 0.5 minus baselines (1, 0) gives (-0.5, 0.5) -> (-0.5, 0).
    logps = leaves([-1.0, -1.0])
    loss, _ = actor_loss(
        logps,
        torch.tensor([0.5]),
        token_baselines=[torch.tensor([1.0, 0.0])],
        visit_counts=torch.tensor([0]),
        min_visits=1,
    )
    loss.backward()
    torch.testing.assert_close(logps[0].grad, torch.tensor([0.5, 0.0]))
    with pytest.raises(ValueError, match="one entry per scored token"):
        actor_loss(logps, torch.tensor([0.5]), token_baselines=[torch.tensor([1.0])])


# ------------------------------------------------------------------ offline ---


def test_expectile_loss_is_asymmetric() -> None:
    losses = expectile_loss(torch.tensor([1.0, -1.0, 2.0]), 0.9)
    # diff = target - prediction; under-predicting costs 0.9 x, over-predicting 0.1 x
    torch.testing.assert_close(losses, torch.tensor([0.9, 0.1, 3.6]))
    # Fitting one value to targets {0, 1} settles at the 0.9-expectile:
    # d/dv [0.1 v^2 + 0.9 (1 - v)^2] = 0  ->  v = 0.9
    value = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([value], lr=0.5)
    targets = torch.tensor([0.0, 1.0])
    for _ in range(200):
        optimizer.zero_grad()
        expectile_loss(targets - value, 0.9).mean().backward()
        optimizer.step()
    assert value.item() == pytest.approx(0.9, abs=1e-4)
    with pytest.raises(ValueError, match="expectile"):
        expectile_loss(targets, 1.0)


def test_iql_critic_loss_regresses_v_onto_the_min_target_q_at_the_data_action() -> None:
    q_pred = torch.zeros(3, 2, requires_grad=True)
    v_pred = torch.tensor([[0.0, 2.0]] * 3, requires_grad=True)
    target_q_data = torch.tensor([[1.0, 3.0]] * 3)  # min = 1
    loss, metrics = iql_critic_loss(
        q_pred, v_pred, REWARDS, DONES, TARGET_V_NEXT, target_q_data, GAMMA, expectile=0.9
    )
    # Q: same TD targets as ArCHer: (0.65 + 9.65) / 3.
    # V1 = 0 under target 1: 0.9 * 1; V2 = 2 over target 1: 0.1 * 1.
    assert metrics["q_loss"] == pytest.approx(10.3 / 3)
    assert metrics["v_loss"] == pytest.approx(1.0)
    assert loss.item() == pytest.approx(10.3 / 3 + 1.0)
    loss.backward()
    torch.testing.assert_close(q_pred.grad, -2 * EXPECTED_Y_Q / 3)
    # d/dv of w (y - v)^2 averaged over 3 rows: -2 w (y - v) / 3
    torch.testing.assert_close(v_pred.grad, torch.tensor([[-0.6, 0.2 / 3]] * 3))


def test_awr_weights_are_exponentiated_and_capped() -> None:
    logps = leaves([-1.0], [-1.0, -1.0], [-0.5])
    loss, metrics = awr_actor_loss(logps, torch.tensor([0.0, 1.0, 10.0]), beta=1.0, max_weight=5.0)
    # weights (1, e, 5): loss = -(1 * -1 + e * -2 + 5 * -0.5) / 3
    assert loss.item() == pytest.approx((1 + 2 * math.e + 2.5) / 3)
    loss.backward()
    torch.testing.assert_close(logps[0].grad, torch.tensor([-1 / 3]))
    torch.testing.assert_close(logps[1].grad, torch.full((2,), -math.e / 3))
    torch.testing.assert_close(logps[2].grad, torch.tensor([-5 / 3]))
    assert metrics["weight_max"] == pytest.approx(5.0)
    assert metrics["weight_capped_fraction"] == pytest.approx(1 / 3)
    # beta = 2 squares the weights: exp(2 * 0.5) = e.
    _, metrics = awr_actor_loss(leaves([-1.0]), torch.tensor([0.5]), beta=2.0)
    assert metrics["weight_mean"] == pytest.approx(math.e)


# --------------------------------------------------------------------- PPO ---


def test_ppo_clips_the_ratio_only_where_it_would_help() -> None:
    old = [torch.tensor([math.log(0.5)])]
    new = [torch.tensor([math.log(0.75)], requires_grad=True)]  # ratio 1.5
    loss, metrics = ppo_policy_loss(new, old, torch.tensor([1.0]), clip=0.2)
    assert loss.item() == pytest.approx(-1.2)  # min(1.5, 1.2) * 1
    loss.backward()
    torch.testing.assert_close(new[0].grad, torch.zeros(1))  # clipped: no gradient
    assert metrics["clip_fraction"] == 1.0

    new = [torch.tensor([math.log(0.75)], requires_grad=True)]
    loss, _ = ppo_policy_loss(new, old, torch.tensor([-1.0]), clip=0.2)
    assert loss.item() == pytest.approx(1.5)  # min(-1.5, -1.2) = -1.5: the pessimistic side
    loss.backward()
    torch.testing.assert_close(new[0].grad, torch.tensor([1.5]))  # -A * ratio


def test_ppo_token_and_utterance_levels_differ_as_documented() -> None:
    old = [torch.tensor([math.log(0.5), math.log(0.5)])]
    new = [torch.tensor([math.log(0.55), math.log(0.55)], requires_grad=True)]
    token_loss, token_metrics = ppo_policy_loss(new, old, torch.tensor([1.0]), level="token")
    # Each token's ratio is 1.1, inside [0.8, 1.2]: loss = -mean(1.1, 1.1).
    assert token_loss.item() == pytest.approx(-1.1)
    assert token_metrics["clip_fraction"] == 0.0
    utterance_loss, metrics = ppo_policy_loss(new, old, torch.tensor([1.0]), level="utterance")
    # The utterance's ratio is 1.1^2 = 1.21 > 1.2: clipped.
    assert utterance_loss.item() == pytest.approx(-1.2)
    assert metrics["clip_fraction"] == 1.0
    per_token, _ = ppo_policy_loss(new, old, [torch.tensor([1.0, -1.0])], level="token")
    # mean(min(1.1, 1.1), min(-1.1, -1.1)) = 0
    assert per_token.item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="one advantage per utterance"):
        ppo_policy_loss(new, old, [torch.tensor([1.0, 1.0])], level="utterance")


def test_value_loss_plain_and_clipped() -> None:
    loss, _ = value_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
    assert loss.item() == pytest.approx(2.5)
    values = torch.tensor([1.0], requires_grad=True)
    loss, _ = value_loss(values, torch.tensor([2.0]), old_values=torch.tensor([0.0]), clip=0.5)
    # unclipped (1 - 2)^2 = 1; clipped prediction 0.5: (0.5 - 2)^2 = 2.25; max = 2.25
    assert loss.item() == pytest.approx(2.25)
    loss.backward()
    torch.testing.assert_close(values.grad, torch.zeros(1))
    with pytest.raises(ValueError, match="both clip and old_values"):
        value_loss(values, torch.tensor([2.0]), clip=0.5)


# ------------------------------------------------- losses fall when optimised ---


def test_each_loss_falls_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    logits = torch.zeros(2, 5, requires_grad=True)  # a two-position token policy
    ids = [torch.tensor([1, 4]), torch.tensor([2, 0])]
    advantages = torch.tensor([1.0, 0.5])

    def token_logprobs() -> list[torch.Tensor]:
        log_p = torch.log_softmax(logits, dim=-1)
        return [log_p[torch.arange(2), row] for row in ids]

    old = [row.detach() for row in token_logprobs()]
    baseline_values = torch.zeros(2, requires_grad=True)
    objectives = {
        "actor": lambda: actor_loss(token_logprobs(), advantages)[0],
        "awr": lambda: awr_actor_loss(token_logprobs(), advantages)[0],
        "ppo": lambda: ppo_policy_loss(token_logprobs(), old, advantages, clip=10.0)[0],
        "baseline": lambda: token_baseline_loss(list(baseline_values.view(2, 1)), advantages)[0],
    }
    for name, objective in objectives.items():
        with torch.no_grad():
            logits.zero_()
            baseline_values.zero_()
        optimizer = torch.optim.Adam([logits, baseline_values], lr=0.1)
        start = objective().item()
        for _ in range(50):
            optimizer.zero_grad()
            objective().backward()
            optimizer.step()
        assert objective().item() < start - 0.1, name
