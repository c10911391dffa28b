"""Online ArCHer with tiny real models on the real Twenty Questions environment."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from archer_agents.data.schema import Episode, Transition
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.training import updates
from archer_agents.training.algorithms.archer import Archer, ArcherConfig
from archer_agents.training.algorithms.bc import BCConfig, behaviour_clone
from archer_agents.training.rollout import collect, make_env_factory

ENV_ID = "archer/TwentyQuestions-v0"
START = "Questions:\n"

SMALL = {
    "critic_steps": 2,
    "critic_batch_size": 8,
    "actor_steps": 1,
    "actor_batch_size": 8,
    "warmup_iterations": 1,
    "max_new_tokens": 5,
    "critic_lr": 1e-3,
    "actor_lr": 1e-2,
}


def small_archer(policy: LocalPolicy, **changes: object) -> Archer:
    return Archer(ArcherConfig(**{**SMALL, **changes}), policy)


def gae_archer(policy: LocalPolicy, **changes: object) -> Archer:
    """ArCHer with GAE over the newest rollout, the actor on from the first iteration."""
    return small_archer(
        policy, actor_states="latest", advantage_estimator="gae", warmup_iterations=0, **changes
    )


def play(archer: Archer, episodes: int = 3, seed: int = 0) -> list[Episode]:
    result = collect(
        make_env_factory(ENV_ID), archer.actor(), episodes, num_envs=episodes, seed=seed
    )
    return result.episodes


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def moved(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[name], p) for name, p in module.named_parameters())


def make_eos_likely(policy: LocalPolicy, observation: str) -> None:
    """Point the (tied) eos embedding along the last hidden state so eos is sampled at once."""
    ids = torch.tensor([policy.prompt_ids(observation)])
    with torch.no_grad():
        hidden = policy.model.model(ids).last_hidden_state[0, -1]  # (H,)
        weight = policy.model.get_output_embeddings().weight
        weight[policy.eos_id] = 50.0 * hidden / hidden.norm()


def transition(action: str, reward: float, *, done: bool = True) -> Transition:
    return Transition(
        observation=START,
        action=action,
        reward=reward,
        next_observation=f"{START}{action} Yes.\n",
        terminated=done,
    )


def test_critic_steps_during_warm_up_then_the_actor_moves_the_policy(
    tiny_policy: LocalPolicy,
) -> None:
    archer = small_archer(tiny_policy, warmup_iterations=2)
    archer.observe(play(archer))
    assert len(archer.buffer) > 0
    policy_before, critic_before = snapshot(tiny_policy.model), snapshot(archer.critic)
    target_before = snapshot(archer.target)

    for iteration in (1, 2):  # warm-up: the critic alone
        metrics = archer.update(iteration)
        assert metrics["actor/active"] == 0.0
        assert "time/critic_s" in metrics and "time/actor_s" not in metrics
    assert not moved(policy_before, tiny_policy.model)
    assert moved(critic_before, archer.critic)
    assert moved(target_before, archer.target)
    assert archer.critic_updates == 4 and archer.actor_updates == 0

    metrics = archer.update(3)
    assert metrics["actor/active"] == 1.0
    assert moved(policy_before, tiny_policy.model)
    assert archer.actor_updates == 1
    for key in ("critic/q1_loss", "critic/v_target_mean", "actor/advantage_mean", "actor/pg_loss"):
        assert key in metrics and torch.isfinite(torch.tensor(metrics[key]))


def test_v_target_is_the_target_q_at_a_fresh_policy_sample(tiny_policy: LocalPolicy) -> None:
    make_eos_likely(
        tiny_policy, START
    )  # the policy now says "" (just eos), never the buffer's action
    archer = small_archer(tiny_policy, gamma=0.9, critic_batch_size=4)
    archer.buffer.add(transition("Is it alive?", -1.0, done=False))
    sample = tiny_policy.generate([START], archer.sampling)[0]
    assert sample.text == "" and sample.token_ids == [tiny_policy.eos_id]

    target = copy.deepcopy(archer.target)
    with torch.no_grad():
        fresh = target.q([START], [""])  # (1, 2)
        logged = target.q([START], ["Is it alive?"])
        v_next = target.v([f"{START}Is it alive? Yes.\n"])
    assert not torch.allclose(fresh, logged)

    metrics = archer.critic_step()
    assert metrics["v_target_mean"] == pytest.approx(fresh.mean().item(), abs=1e-5)
    assert metrics["q_target_mean"] == pytest.approx((-1.0 + 0.9 * v_next).mean().item(), abs=1e-5)


def test_time_limit_ends_do_not_bootstrap(tiny_policy: LocalPolicy) -> None:
    archer = small_archer(tiny_policy)
    truncated = transition("Is it alive?", -1.0, done=False).model_copy(update={"truncated": True})
    metrics = archer.critic_step([truncated] * 4)
    assert metrics["q_target_mean"] == pytest.approx(-1.0)


def test_each_optimiser_clips_only_its_own_parameters(
    tiny_policy: LocalPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    archer = small_archer(tiny_policy, warmup_iterations=0)
    archer.observe(play(archer, episodes=2))
    calls: list[set[int]] = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, *args, **kwargs):  # type: ignore[no-untyped-def]
        parameters = list(parameters)
        calls.append({id(p) for p in parameters})
        return real_clip(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(updates.torch.nn.utils, "clip_grad_norm_", spy)
    archer.update(1)
    critic_ids = {id(p) for p in archer.critic.parameters() if p.requires_grad}
    actor_ids = {id(p) for p in tiny_policy.trainable_parameters()}
    assert critic_ids and actor_ids and not critic_ids & actor_ids
    assert calls.count(critic_ids) == SMALL["critic_steps"]
    assert calls.count(actor_ids) == SMALL["actor_steps"]
    assert len(calls) == SMALL["critic_steps"] + SMALL["actor_steps"]


def test_actor_raises_the_probability_of_a_high_advantage_utterance(
    tiny_policy: LocalPolicy,
) -> None:
    """A one-step bandit: "Is it alive?" wins (reward 0), "Is it red?" loses (reward -1)."""
    good, bad = "Is it alive?", "Is it red?"
    episodes = [
        Episode(env_id="bandit", transitions=[transition(action, 0.0)]) for action in (good, bad)
    ]
    behaviour_clone(
        tiny_policy,
        episodes * 8,
        BCConfig(steps=60, batch_size=16, learning_rate=1e-2, warmup_steps=0),
    )
    ids = {
        text: [*tiny_policy.tokenizer.encode(text, add_special_tokens=False), tiny_policy.eos_id]
        for text in (good, bad)
    }

    def logprob(text: str) -> float:
        with torch.no_grad():
            return float(tiny_policy.log_probs([START], [ids[text]])[0].sum())

    assert logprob(good) > -3.0 and logprob(bad) > -3.0  # both are likely samples

    archer = small_archer(
        tiny_policy,
        critic_steps=60,
        critic_batch_size=16,
        actor_steps=0,
        actor_batch_size=32,
        critic_lr=3e-3,
        actor_lr=3e-3,
        gamma=0.0,
        # The critic has seen only these two utterances; its values of any other sample are
        # arbitrary, and over five steps the actor would chase them. The guard leaves them out.
        min_visits=8,
    )
    for _ in range(8):
        archer.buffer.add(transition(good, 0.0))
        archer.buffer.add(transition(bad, -1.0))
    archer.update(1)
    with torch.no_grad():
        q = archer.critic.q([START, START], [good, bad]).min(dim=-1).values
    assert q[0] - q[1] > 0.5  # the critic has learnt which utterance wins

    before_good, before_bad = logprob(good), logprob(bad)
    for _ in range(5):
        archer.actor_step([START] * 32)
    assert logprob(good) > before_good + 0.1
    assert logprob(bad) < before_bad


def test_kl_anchor_holds_a_frozen_copy_of_the_starting_policy(tiny_policy: LocalPolicy) -> None:
    archer = small_archer(tiny_policy, warmup_iterations=0, kl_coef=0.5)
    assert archer.reference is not None
    reference_before = snapshot(archer.reference.model)
    archer.observe(play(archer, episodes=2))
    metrics = archer.update(1)
    assert "actor/kl" in metrics and metrics["actor/kl"] >= 0.0
    assert not moved(reference_before, archer.reference.model)
    assert moved(reference_before, tiny_policy.model)
    assert not any(p.requires_grad for p in archer.reference.model.parameters())


def test_visit_count_guard_never_raises_rare_utterances(tiny_policy: LocalPolicy) -> None:
    archer = small_archer(tiny_policy, min_visits=10**6)
    with torch.no_grad():  # every utterance now has advantage 20 > 0
        for head in archer.critic.q_heads:
            head[-1].bias.fill_(10.0)
        for head in archer.critic.v_heads:
            head[-1].bias.fill_(-10.0)
    before = snapshot(tiny_policy.model)
    metrics = archer.actor_step([START] * 8)
    assert metrics["guarded_fraction"] == 1.0
    assert not moved(before, tiny_policy.model)  # every sample is rare: nothing was raised

    archer.config = archer.config.model_copy(update={"min_visits": 0})
    metrics = archer.actor_step([START] * 8)
    assert metrics["guarded_fraction"] == 0.0
    assert moved(before, tiny_policy.model)


def test_invalid_action_penalty_lowers_only_invalid_turns(tiny_policy: LocalPolicy) -> None:
    archer = small_archer(tiny_policy, invalid_action_penalty=0.5)
    valid = transition("Is it alive?", -1.0, done=False)
    invalid = valid.model_copy(update={"action": "blah", "info": {"invalid_action": True}})
    archer.observe([Episode(env_id="x", transitions=[valid, invalid])])
    rewards = [t.reward for t in archer.buffer.sample(64)]
    assert set(rewards) == {-1.0, -1.5}


def test_token_baseline_trains_beside_the_actor(tiny_policy: LocalPolicy) -> None:
    archer = small_archer(tiny_policy, warmup_iterations=0, token_baseline=True)
    assert archer.baseline is not None
    before = snapshot(archer.baseline)
    archer.observe(play(archer, episodes=2))
    metrics = archer.update(1)
    assert moved(before, archer.baseline)
    assert torch.isfinite(torch.tensor(metrics["actor/actor_loss"]))


def test_state_dict_round_trip_continues_identically(tiny_model_dir: Path) -> None:
    first = small_archer(LocalPolicy.from_pretrained(tiny_model_dir, seed=0), warmup_iterations=0)
    first.observe(play(first, episodes=2))
    first.update(1)
    state = copy.deepcopy(first.state_dict())

    second = small_archer(LocalPolicy.from_pretrained(tiny_model_dir, seed=5), warmup_iterations=0)
    second.load_state_dict(state)
    assert len(second.buffer) == len(first.buffer)
    assert (second.critic_updates, second.actor_updates) == (first.critic_updates, 1)
    first.update(2)
    second.update(2)
    for (name, a), b in zip(
        first.policy.model.named_parameters(), second.policy.model.parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    for a, b in zip(first.critic.parameters(), second.critic.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_a_policy_without_trainable_parameters_is_refused(tiny_policy: LocalPolicy) -> None:
    tiny_policy.model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        small_archer(tiny_policy)
    assert small_archer(tiny_policy, actor_steps=0).actor_updates == 0


def test_episode_batches_and_latest_states_train_and_survive_a_reload(
    tiny_model_dir: Path,
) -> None:
    changes = {"critic_batches": "episodes", "actor_states": "latest", "warmup_iterations": 0}
    first = small_archer(LocalPolicy.from_pretrained(tiny_model_dir, seed=0), **changes)
    first.observe(play(first, episodes=3))
    batch = first._episode_batch()
    assert len(batch) >= SMALL["critic_batch_size"] and batch[-1].done
    policy_before = snapshot(first.policy.model)
    metrics = first.update(1)
    assert metrics["actor/active"] == 1.0 and moved(policy_before, first.policy.model)
    # The first actor step scored the rollout's own samples: nothing was re-sampled.
    assert first._latest_policy == 0 and first.actor_updates == 1

    second = small_archer(LocalPolicy.from_pretrained(tiny_model_dir, seed=0), **changes)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    assert [[t.observation for t in e] for e in second._episodes] == [
        [t.observation for t in e] for e in first._episodes
    ]


def test_gae_with_lambda_zero_is_the_one_step_error_of_the_online_v(
    tiny_policy: LocalPolicy,
) -> None:
    archer = gae_archer(tiny_policy, actor_batch_size=64, gamma=0.9)
    episodes = play(archer, episodes=2)
    archer.observe(episodes)
    turns = [t for e in episodes for t in e.transitions]
    with torch.no_grad():
        v = archer.critic.v([t.observation for t in turns]).min(dim=-1).values
        v_next = archer.critic.v([t.next_observation for t in turns]).min(dim=-1).values
    expected = [
        t.reward + (0.0 if t.done else 0.9 * float(vn)) - float(vs)
        for t, vs, vn in zip(turns, v, v_next, strict=True)
    ]
    metrics = archer.actor_step()
    assert metrics["raw_advantage_mean"] == pytest.approx(sum(expected) / len(expected), abs=1e-4)
    with pytest.raises(ValueError, match="rollout's own turns"):
        archer.actor_step([START] * 4)


def test_gae_needs_the_newest_rollout() -> None:
    with pytest.raises(ValueError, match="actor_states: latest"):
        ArcherConfig(advantage_estimator="gae")


def test_gae_minibatch_steps_take_the_rollout_in_turn_with_its_own_samples(
    tiny_policy: LocalPolicy,
) -> None:
    archer = gae_archer(tiny_policy, actor_steps=2, actor_batch_size=1)  # one episode per step
    episodes = play(archer, episodes=2)
    archer.observe(episodes)
    seen: list[list[list[int]]] = []
    original = archer._score

    def recording_score(observations, token_ids, policy=None):  # type: ignore[no-untyped-def]
        if policy is None:
            seen.append([list(ids) for ids in token_ids])
        return original(observations, token_ids, policy)

    archer._score = recording_score  # type: ignore[method-assign]
    archer.update(1)
    assert archer.actor_updates == 2
    logged = sorted([[list(t.action_token_ids or []) for t in e.transitions] for e in episodes])
    # each step scored one whole episode with the rollout's own sampled ids, each episode once
    assert sorted(seen) == logged


def test_gae_by_hand_restarts_at_each_episode_end() -> None:
    from archer_agents.training.advantages import gae

    def turn(reward: float, done: bool) -> Transition:
        return Transition(
            observation="s", action="a", reward=reward, next_observation="s'", terminated=done
        )

    turns = [turn(-1.0, False), turn(-1.0, False), turn(0.0, True), turn(-1.0, True)]
    values = torch.tensor([-2.0, -1.5, -1.0, -3.0])
    next_values = torch.tensor([-1.5, -1.0, 9.0, 9.0])  # after an end: never used
    gamma, lam = 0.9, 0.5
    d2 = 0.0 - (-1.0)
    d1 = -1.0 + gamma * -1.0 - (-1.5)
    d0 = -1.0 + gamma * -1.5 - (-2.0)
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    a3 = -1.0 - (-3.0)
    torch.testing.assert_close(
        gae(
            torch.tensor([t.reward for t in turns]),
            values,
            next_values,
            torch.tensor([t.done for t in turns]),
            gamma,
            lam,
        )[0],
        torch.tensor([a0, a1, a2, a3]),
    )
