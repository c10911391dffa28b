"""More tests for mutants that survived `make mutation` (benchmarks/results/mutation.md).

Each pins a behaviour no earlier test checked:

- the losses of the baselines (PPO's clipped surrogate and its metrics, the clipped value
  loss, the token-level baseline, AWR and the expectile loss), against the formulas
  written out element by element;
- ArCHer's actor step: micro-batches give the whole batch's update, and the options
  that shape it (advantage normalisation and clipping, the KL anchor, the token
  baseline) each change it;
- ArCHer's critic batches of whole episodes, when asked for;
- ArCHer's state round trip with a token baseline and a KL anchor, and the modules
  it holds;
- checkpoints: how many are kept, and which folders count as checkpoints.
"""

from __future__ import annotations

import copy
import math
import shutil
from pathlib import Path

import pytest
import torch

from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.training.algorithms.archer import Archer, ArcherConfig
from archer_agents.training.checkpoint import (
    LATEST_FILE,
    list_checkpoints,
    load_latest,
    save_checkpoint,
)
from archer_agents.training.losses import (
    actor_loss,
    awr_actor_loss,
    expectile_loss,
    ppo_policy_loss,
    token_baseline_loss,
    value_loss,
)
from archer_agents.training.rollout import collect, make_env_factory

# -- the baselines' losses, by hand ------------------------------------------------------

NEW = [torch.tensor([-0.2, -1.5, -0.6]), torch.tensor([-2.0]), torch.tensor([-0.1, -0.9])]
OLD = [torch.tensor([-0.9, -1.4, -0.2]), torch.tensor([-1.2]), torch.tensor([-0.1, -1.6])]
ADV = torch.tensor([1.5, -0.8, 0.6])


def _ppo_by_hand(clip: float, level: str) -> dict[str, float]:
    """The clipped surrogate, one ratio at a time (a token, or a whole utterance)."""
    rows = []  # (ratio, log ratio, advantage)
    for new, old, adv in zip(NEW, OLD, ADV.tolist(), strict=True):
        if level == "token":
            rows += [
                (math.exp(n - o), n - o, adv)
                for n, o in zip(new.tolist(), old.tolist(), strict=True)
            ]
        else:
            log_ratio = float(new.sum() - old.sum())
            rows.append((math.exp(log_ratio), log_ratio, adv))
    surrogate = [min(r * a, min(max(r, 1 - clip), 1 + clip) * a) for r, _, a in rows]
    n = len(rows)
    return {
        "ppo_loss": -sum(surrogate) / n,
        "clip_fraction": sum(abs(r - 1) > clip for r, _, _ in rows) / n,
        "approx_kl": sum(r - 1 - lr for r, lr, _ in rows) / n,
        "ratio_mean": sum(r for r, _, _ in rows) / n,
    }


@pytest.mark.parametrize("level", ["token", "utterance"])
def test_ppo_policy_loss_and_its_metrics_are_the_clipped_surrogate(level: str) -> None:
    """Kills ``ratio / adv``, clamps without a bound, ``/ weight``, the approx-KL and
    metric mutants, and the dtype and padding ones (ragged utterances, both signs of
    advantage, ratios inside and outside the clip range)."""
    new = [t.clone().requires_grad_(True) for t in NEW]
    loss, metrics = ppo_policy_loss(new, OLD, ADV, clip=0.2, level=level)
    expected = _ppo_by_hand(0.2, level)
    assert loss.item() == pytest.approx(expected["ppo_loss"], rel=1e-5)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    loss.backward()
    assert all(t.grad is not None for t in new)


def test_the_actor_losss_metrics_and_visit_guard_by_hand() -> None:
    """Kills ``sum(dim=None)`` in the ``logprob_mean`` metric and ``> 1`` for ``> 0`` in
    the visit guard: a rare utterance with any positive weight is held back."""
    logp = [torch.tensor([-1.0, -2.0]), torch.tensor([-0.5])]
    _, metrics = actor_loss(
        logp,
        torch.tensor([0.5, 0.5]),
        visit_counts=torch.tensor([1, 100]),
        min_visits=10,
    )
    assert metrics["logprob_mean"] == pytest.approx((-3.0 - 0.5) / 2)
    assert metrics["guarded_fraction"] == pytest.approx(0.5)  # the rare one, raised
    assert metrics["pg_loss"] == pytest.approx(-(0.0 + 0.5 * -0.5) / 2)


def test_ppo_refuses_a_clip_of_zero() -> None:
    with pytest.raises(ValueError, match="clip must be positive"):
        ppo_policy_loss(NEW, OLD, ADV, clip=0.0)


def test_the_clipped_value_loss_takes_the_larger_error_per_element() -> None:
    """Kills the `value_loss` clipping mutants (``values + old``, ``clamp(+clip, clip)``,
    ``clamp(None, clip)``, ``or`` for ``and``)."""
    values = torch.tensor([1.0, -1.0, 0.25, 3.0])
    returns = torch.tensor([0.0, 0.5, 0.3, 1.0])
    old = torch.tensor([0.5, 0.0, 0.2, 1.0])
    clip = 0.3
    by_hand = []
    for v, r, o in zip(values.tolist(), returns.tolist(), old.tolist(), strict=True):
        moved = o + min(max(v - o, -clip), clip)
        by_hand.append(max((v - r) ** 2, (moved - r) ** 2))
    loss, metrics = value_loss(values, returns, old_values=old, clip=clip)
    assert loss.item() == pytest.approx(sum(by_hand) / 4, rel=1e-6)
    assert metrics["value_mean"] == pytest.approx(0.8125)
    plain, _ = value_loss(values, returns)
    assert plain.item() == pytest.approx(
        sum((v - r) ** 2 for v, r in zip(values, returns, strict=True)) / 4
    )
    with pytest.raises(ValueError, match="must match"):
        value_loss(values, returns, old_values=old[:2], clip=clip)


def test_the_token_baseline_regresses_every_prefix_onto_the_advantage() -> None:
    """Kills ``clamp(min=2)`` (one token in all), the metrics set to None, and the
    ``baseline_mean`` mutants."""
    values = [torch.tensor([0.5, 1.0]), torch.tensor([-1.0])]
    advantages = torch.tensor([1.0, 0.0])
    loss, metrics = token_baseline_loss(values, advantages)
    assert loss.item() == pytest.approx(((0.5 - 1) ** 2 + 0.0 + 1.0) / 3)
    assert metrics["baseline_mean"] == pytest.approx((0.5 + 1.0 - 1.0) / 3)
    one, metrics = token_baseline_loss([torch.tensor([2.0])], torch.tensor([0.5]))
    assert one.item() == pytest.approx(2.25) and metrics["baseline_mean"] == pytest.approx(2.0)


def test_awr_weights_defaults_and_bounds() -> None:
    """Kills the default ``beta``/``max_weight`` mutants and the ``max_weight <= 0``
    boundary ones: weights are exp(A) capped at 100 by default, any positive cap works."""
    logp = [torch.tensor([-1.0, -1.0]), torch.tensor([-0.5])]
    advantages = torch.tensor([math.log(4.0), math.log(500.0)])
    loss, metrics = awr_actor_loss(logp, advantages)
    assert loss.item() == pytest.approx(-(4.0 * -2.0 + 100.0 * -0.5) / 2, rel=1e-5)
    assert metrics["weight_max"] == pytest.approx(100.0, rel=1e-5)
    small, _ = awr_actor_loss(logp, advantages, beta=0.5, max_weight=0.5)
    assert small.item() == pytest.approx(-(0.5 * -2.0 + 0.5 * -0.5) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="max_weight must be positive"):
        awr_actor_loss(logp, advantages, max_weight=0.0)


def test_the_expectile_must_lie_strictly_between_zero_and_one() -> None:
    with pytest.raises(ValueError, match="expectile must lie in"):
        expectile_loss(torch.ones(2), 0.0)


# -- ArCHer's actor step -----------------------------------------------------------------

STEP = {
    "critic_steps": 1,
    "critic_batch_size": 8,
    "actor_steps": 2,
    "actor_batch_size": 8,
    "warmup_iterations": 0,
    "max_new_tokens": 4,
    "actor_lr": 1e-2,
    "normalize_advantages": True,
    "advantage_clip": 0.5,
    "kl_coef": 0.3,
    "token_baseline": True,
}


def _run(model_dir: Path, **changes: object) -> tuple[Archer, dict[str, float]]:
    """One update of a fresh ArCHer on the same two episodes (everything seeded).

    The actor steps with plain SGD, whose step is linear in the gradient: Adam's first
    step is about ``lr`` times the gradient's sign, which turns rounding noise in a
    near-zero gradient into a difference of ``2 * lr``.
    """
    torch.manual_seed(0)
    policy = LocalPolicy.from_pretrained(model_dir, seed=0)
    archer = Archer(ArcherConfig(**{**STEP, **changes}), policy)
    archer.actor_optimizer = torch.optim.SGD(archer.actor_parameters, lr=0.5)
    factory = make_env_factory("archer/TwentyQuestions-v0")
    episodes = collect(factory, archer.actor(), 2, num_envs=2, seed=0).episodes
    archer.observe(episodes)
    return archer, archer.update(1)


@pytest.fixture(scope="module")
def whole_batch(tiny_model_dir: Path) -> tuple[Archer, dict[str, float]]:
    return _run(tiny_model_dir, micro_batch_size=64)


def test_micro_batches_give_the_whole_batchs_update(tiny_model_dir, whole_batch) -> None:
    """Kills the micro-batch slicing and loss-scaling mutants of `Archer.actor_step`
    (``slice(None, ...)``, ``slice(start, None)``, ``loss / share``, ``share * batch``)
    and the metric averaging one: 3 rows at a time must equal all 8 at once."""
    whole, whole_metrics = whole_batch
    parts, part_metrics = _run(tiny_model_dir, micro_batch_size=3)
    for (name, a), b in zip(
        whole.policy.model.named_parameters(), parts.policy.model.parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
    for key in ("actor/actor_loss", "actor/kl"):
        assert part_metrics[key] == pytest.approx(whole_metrics[key], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(
    "change",
    [
        {"advantage_clip": None},
        {"normalize_advantages": False},
        {"kl_coef": 0.0},
        {"token_baseline": False},
    ],
    ids=lambda change: next(iter(change)),
)
def test_each_actor_option_changes_the_update(tiny_model_dir, whole_batch, change) -> None:
    """Kills the mutants that drop an option on its way to `actor_loss` (the clip, the
    normalisation, the reference's log-probabilities, the baselines)."""
    whole, _ = whole_batch
    other, _ = _run(tiny_model_dir, micro_batch_size=64, **change)
    assert any(
        not torch.allclose(a, b, rtol=1e-5, atol=1e-7)
        for a, b in zip(
            whole.policy.model.parameters(), other.policy.model.parameters(), strict=True
        )
    )


def test_the_kl_anchor_is_positive_once_the_policy_moved(whole_batch) -> None:
    """The second actor step of the update scores a moved policy against the frozen
    reference (kills scoring the reference with the policy itself)."""
    _, metrics = whole_batch
    assert metrics["actor/kl"] > 0.0


def test_a_round_trip_keeps_the_baseline_and_the_reference(tiny_model_dir, whole_batch) -> None:
    """Kills the `state_dict`/`load_state_dict` mutants for the token baseline (its
    weights and optimiser) and the KL reference, and `modules` leaving one out."""
    first, _ = whole_batch
    state = copy.deepcopy(first.state_dict())
    assert first.modules() == [
        first.policy.model,
        first.critic,
        first.target,
        first.reference.model,
        first.baseline,
    ]
    torch.manual_seed(1)
    second = Archer(
        ArcherConfig(**{**STEP, "micro_batch_size": 64}),
        LocalPolicy.from_pretrained(tiny_model_dir, seed=1),
    )
    second.load_state_dict(state)
    for mine, theirs in ((first.baseline, second.baseline), (first.target, second.target)):
        for a, b in zip(mine.parameters(), theirs.parameters(), strict=True):
            assert torch.equal(a, b)
    for a, b in zip(
        first.reference.model.parameters(), second.reference.model.parameters(), strict=True
    ):
        assert torch.equal(a, b)
    ours = first.baseline_optimizer.state_dict()["state"]
    theirs = second.baseline_optimizer.state_dict()["state"]
    assert ours.keys() == theirs.keys() and ours
    for key in ours:
        assert torch.equal(ours[key]["exp_avg"], theirs[key]["exp_avg"])


def test_the_episode_count_follows_the_buffer(tiny_policy: LocalPolicy) -> None:
    """Kills the `observe` mutants that miscount the transitions of the kept episodes
    (``=`` or ``-=`` for ``+=``): the kept episodes always hold what the buffer holds."""
    archer = Archer(
        ArcherConfig(**{**STEP, "buffer_capacity": 50, "critic_batches": "episodes"}),
        tiny_policy,
    )
    factory = make_env_factory("archer/TwentyQuestions-v0")
    for seed in range(3):
        archer.observe(collect(factory, archer.actor(), 2, num_envs=2, seed=seed).episodes)
        kept = sum(len(episode) for episode in archer._episodes)
        assert archer._episode_transitions == kept
        assert 0 < kept <= len(archer.buffer)
    assert len(archer.buffer) == 50  # the oldest were evicted, with their episodes


@pytest.mark.parametrize("batches", ["episodes", "transitions"])
def test_the_critic_draws_whole_episodes_only_when_asked(tiny_policy, batches) -> None:
    """Kills the `critic_step` mutants that lose ``critic_batches="episodes"`` (``grouped``
    forced off, negated or compared with another string): the critic's batch comes from
    `_episode_batch` exactly when episodes were asked for."""
    archer = Archer(ArcherConfig(**{**STEP, "critic_batches": batches}), tiny_policy)
    factory = make_env_factory("archer/TwentyQuestions-v0")
    archer.observe(collect(factory, archer.actor(), 2, num_envs=2, seed=0).episodes)
    drawn: list[int] = []
    episode_batch = archer._episode_batch

    def spy() -> list:
        batch = episode_batch()
        drawn.append(len(batch))
        return batch

    archer._episode_batch = spy  # type: ignore[method-assign]
    metrics = archer.critic_step()
    assert bool(drawn) == (batches == "episodes")
    assert math.isfinite(metrics["critic_loss"])


# -- checkpoints -------------------------------------------------------------------------


def test_checkpoints_kept_are_exactly_keep(tmp_path: Path) -> None:
    """Kills ``kept += 2`` in `_prune`, another default ``keep`` and ``keep <= 1``."""
    for step in range(5):
        save_checkpoint(tmp_path / "a", {"step": step}, step=step, keep=3)
    assert [s for s, _ in list_checkpoints(tmp_path / "a")] == [2, 3, 4]
    for step in range(5):
        save_checkpoint(tmp_path / "b", {"step": step}, step=step)
    assert [s for s, _ in list_checkpoints(tmp_path / "b")] == [2, 3, 4]
    for step in range(3):
        save_checkpoint(tmp_path / "c", {"step": step}, step=step, keep=1)
    assert [s for s, _ in list_checkpoints(tmp_path / "c")] == [2]


def test_only_step_folders_are_checkpoints(tmp_path: Path) -> None:
    """Kills ``match or child.is_dir()`` in `list_checkpoints` and a `latest` pointer
    that may name any folder (`_read_latest`)."""
    root = tmp_path / "ckpt"
    for step in (1, 2):
        save_checkpoint(root, {"step": step}, step=step)
    (root / "step-9").write_text("a file, not a checkpoint")
    shutil.copytree(list_checkpoints(root)[0][1], root / "manual")  # a copy of step 1
    assert [s for s, _ in list_checkpoints(root)] == [1, 2]
    (root / LATEST_FILE).write_text("manual\n")
    latest = load_latest(root)
    assert latest is not None and latest.step == 2
