"""The one GAE and the one advantage normalisation every algorithm uses, checked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from archer_agents.training.advantages import NORMALIZE_EPS, gae, normalize


def test_gae_by_hand_over_two_episodes() -> None:
    # Episode 1: three steps, the last terminal; episode 2: one step cut off by the
    # end of the sequence (not done), so it bootstraps from V(s').
    rewards = torch.tensor([1.0, 0.0, 2.0, -1.0])
    values = torch.tensor([0.5, 1.0, 1.5, 0.25])
    next_values = torch.tensor([1.0, 1.5, 100.0, 2.0])  # 100 follows a done step: ignored
    dones = torch.tensor([False, False, True, False])
    gamma, lam = 0.5, 0.5
    d0 = 1.0 + 0.5 * 1.0 - 0.5  # 1.0
    d1 = 0.0 + 0.5 * 1.5 - 1.0  # -0.25
    d2 = 2.0 - 1.5  # 0.5
    d3 = -1.0 + 0.5 * 2.0 - 0.25  # -0.25
    a2 = d2  # 0.5
    a1 = d1 + 0.25 * a2  # -0.125
    a0 = d0 + 0.25 * a1  # 0.96875
    a3 = d3  # the last step: nothing after it
    advantages, targets = gae(rewards, values, next_values, dones, gamma, lam)
    torch.testing.assert_close(advantages, torch.tensor([a0, a1, a2, a3]))
    torch.testing.assert_close(advantages, torch.tensor([0.96875, -0.125, 0.5, -0.25]))
    torch.testing.assert_close(targets, advantages + values)


def test_gae_lambda_zero_is_the_td_error_and_one_the_return() -> None:
    rewards = torch.tensor([-1.0, -1.0, 0.0])
    values = torch.tensor([3.0, -2.0, 7.0])
    next_values = torch.tensor([-2.0, 7.0, 0.0])
    dones = torch.tensor([False, False, True])
    td, _ = gae(rewards, values, next_values, dones, 0.9, 0.0)
    torch.testing.assert_close(td, torch.tensor([-1.0 - 1.8 - 3.0, -1.0 + 6.3 + 2.0, -7.0]))
    _, returns = gae(rewards, values, next_values, dones, 0.9, 1.0)
    torch.testing.assert_close(returns, torch.tensor([-1.0 - 0.9, -1.0, 0.0]))


def test_gae_ignores_a_non_finite_value_after_the_end() -> None:
    advantages, _ = gae(
        torch.tensor([1.0]),
        torch.tensor([0.5]),
        torch.tensor([math.inf]),
        torch.tensor([True]),
        0.99,
        0.95,
    )
    torch.testing.assert_close(advantages, torch.tensor([0.5]))


def test_gae_checks_shapes() -> None:
    with pytest.raises(ValueError, match="next_values must have shape"):
        gae(torch.zeros(3), torch.zeros(3), torch.zeros(2), torch.zeros(3), 0.9, 0.9)


def test_normalize_by_hand() -> None:
    # mean 2, population std sqrt(((1-2)^2 + (3-2)^2 + 0) / 3) = sqrt(2/3)
    out = normalize(torch.tensor([1.0, 3.0, 2.0]))
    std = math.sqrt(2.0 / 3.0)
    torch.testing.assert_close(out, torch.tensor([-1.0, 1.0, 0.0]) / (std + NORMALIZE_EPS))
    assert float(out.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(out.std(unbiased=False)) == pytest.approx(1.0, abs=1e-6)


def test_normalize_of_one_or_equal_values_is_zero_and_without_scale_only_centres() -> None:
    torch.testing.assert_close(normalize(torch.tensor([5.0])), torch.tensor([0.0]))
    torch.testing.assert_close(normalize(torch.tensor([2.0, 2.0])), torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(
        normalize(torch.tensor([0.0, -10.0, -20.0]), scale=False), torch.tensor([10.0, 0.0, -10.0])
    )
