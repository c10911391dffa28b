"""The paper's baselines: online filtered BC, CHAI, token-level PPO and trajectory REINFORCE."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from archer_agents.critic.encoders import HashingEncoder
from archer_agents.critic.model import DoubleCritic
from archer_agents.critic.ranking import candidate_values, rank_candidates
from archer_agents.data.schema import Episode, Transition
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.training.advantages import gae as utterance_gae
from archer_agents.training.algorithms.bc import action_token_ids, nll_loss
from archer_agents.training.algorithms.chai import (
    Chai,
    ChaiActor,
    ChaiConfig,
)
from archer_agents.training.algorithms.filtered_bc import (
    FilteredBC,
    FilteredBCConfig,
    return_threshold,
    select_episodes,
)
from archer_agents.training.algorithms.ppo import PPO, PPOConfig, PPOSample
from archer_agents.training.algorithms.reinforce import (
    Reinforce,
    ReinforceConfig,
    batch_mean_advantages,
)
from archer_agents.training.checkpoint import load_latest, save_checkpoint
from archer_agents.training.losses import actor_loss, critic_loss
from archer_agents.training.rollout import ScriptedActor, collect, make_env_factory

ENV_ID = "archer/TwentyQuestions-v0"


# ---------------------------------------------------------------- helpers ---


def episode(
    rewards: Sequence[float],
    actions: Sequence[str] | None = None,
    tokenizer: Any = None,
    task: str = "t",
) -> Episode:
    """A hand-built episode: one turn per reward, the last one terminal."""
    actions = actions or ["Is it an animal?"] * len(rewards)
    transitions = []
    observation = "Questions:\n"
    for turn, (reward, action) in enumerate(zip(rewards, actions, strict=True)):
        nxt = f"{observation}{action} No.\n"
        transitions.append(
            Transition(
                observation=observation,
                action=action,
                reward=reward,
                next_observation=nxt,
                terminated=turn == len(rewards) - 1,
                action_token_ids=action_token_ids(tokenizer, action) if tokenizer else None,
            )
        )
        observation = nxt
    return Episode(env_id=ENV_ID, task_id=task, transitions=transitions).finalize()


def with_return(value: float) -> Episode:
    return episode([value])


def play(actor: Any, n: int = 2, max_turns: int = 2) -> list[Episode]:
    """Real Twenty Questions episodes, short enough for a unit test."""
    factory = make_env_factory(ENV_ID, max_turns=max_turns)
    return collect(factory, actor, n, num_envs=n, seed=0).episodes


def parameters_of(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters() if p.requires_grad]


def moved(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    after = [p.detach() for p in module.parameters() if p.requires_grad]
    return any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def assert_same_state(a: Any, b: Any, where: str = "state") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a.cpu(), b.cpu()), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def through_checkpoint(state: dict[str, Any], directory: Path) -> dict[str, Any]:
    """Save and reload exactly as the trainer does (torch.load with weights_only=True)."""
    save_checkpoint(directory, state, step=1)
    checkpoint = load_latest(directory)
    assert checkpoint is not None
    return checkpoint.state


def fresh_policy(tiny_model_dir: Path) -> LocalPolicy:
    """A second copy of the tiny model, sampling with another seed until a state is loaded."""
    return LocalPolicy.from_pretrained(tiny_model_dir, seed=123)


# ------------------------------------------------------------ filtered BC ---


def test_threshold_is_numpys_linear_percentile_and_keeps_ties() -> None:
    returns = [float(r) for r in range(11)]  # 0 .. 10
    assert return_threshold(returns, 90) == 9.0
    kept, threshold = select_episodes([with_return(r) for r in returns], returns, 90)
    assert threshold == 9.0
    assert [e.total_reward for e in kept] == [9.0, 10.0]  # "at or above": the tie stays

    returns = [-20.0, -15.0, -10.0, -5.0, -3.0, -3.0, 0.0, -8.0, -12.0, -1.0]
    # sorted: -20 -15 -12 -10 -8 -5 -3 -3 -1 0; 80th: position 7.2 -> -3 + 0.2 * 2 = -2.6
    kept, threshold = select_episodes([with_return(r) for r in returns], returns, 80)
    assert threshold == pytest.approx(-2.6)
    assert sorted(e.total_reward for e in kept) == [-1.0, 0.0]
    # 90th: position 8.1 -> -1 + 0.1 * 1 = -0.9: only the best episode
    kept, _ = select_episodes([with_return(r) for r in returns], returns, 90)
    assert [e.total_reward for e in kept] == [0.0]


def test_threshold_counts_every_return_so_far_and_filters_the_pool(
    tiny_policy: LocalPolicy,
) -> None:
    algo = FilteredBC(FilteredBCConfig(percentile=50, pool_capacity=3), tiny_policy)
    algo.observe([with_return(r) for r in (10.0, 9.0, 8.0)])
    kept, threshold = algo.kept()
    assert threshold == 9.0 and [e.total_reward for e in kept] == [10.0, 9.0]
    # Three poor episodes push the good ones out of the pool but their returns still count:
    # median of 10 9 8 0 1 2 is 5, and no pooled episode reaches it.
    algo.observe([with_return(r) for r in (0.0, 1.0, 2.0)])
    kept, threshold = algo.kept()
    assert algo.returns == [10.0, 9.0, 8.0, 0.0, 1.0, 2.0]
    assert threshold == 5.0 and kept == []
    assert algo.update(0) == {"filtered_bc/threshold": 5.0, "filtered_bc/kept_episodes": 0.0}
    # The threshold can fall: many low returns bring it below the pooled 2.0.
    algo.observe([with_return(-5.0)] * 10)
    assert algo.kept()[1] == -5.0


def test_percentile_given_as_a_fraction_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="did you mean|pass 90"):
        FilteredBCConfig(percentile=0.9)
    with pytest.raises(ValueError, match="Extra inputs"):
        FilteredBCConfig(percentil=90)  # type: ignore[call-arg]


def test_filtered_bc_clones_the_kept_episodes_and_lowers_their_loss(
    tiny_policy: LocalPolicy,
) -> None:
    tok = tiny_policy.tokenizer
    good = episode([-1.0, 0.0], ["Is it a bird?", "Is it a penguin?"], tok)
    bad = episode([-1.0] * 3, ["Is it red?"] * 3, tok)
    config = FilteredBCConfig(steps_per_update=10, batch_size=8, learning_rate=1e-2)
    algo = FilteredBC(config, tiny_policy)
    algo.observe([good, bad])
    pairs = [(t.observation, t.action_token_ids) for t in good.transitions]

    def good_loss() -> float:
        with torch.no_grad():
            return nll_loss(tiny_policy, [p[0] for p in pairs], [p[1] for p in pairs]).item()

    before_loss, before = good_loss(), parameters_of(tiny_policy.model)
    metrics = algo.update(0)
    assert metrics["filtered_bc/kept_episodes"] == 1.0
    assert metrics["filtered_bc/kept_utterances"] == 2.0
    assert metrics["filtered_bc/threshold"] == pytest.approx(-1.2)  # 90th of [-1, -3]
    assert moved(before, tiny_policy.model)
    assert good_loss() < before_loss - 0.5


def test_filtered_bc_on_the_real_environment_saves_and_resumes(
    tiny_policy: LocalPolicy, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = FilteredBCConfig(max_new_tokens=6, steps_per_update=2, batch_size=4)
    algo = FilteredBC(config, tiny_policy)
    algo.observe(play(algo.actor()))
    algo.update(0)
    algo.observe(play(algo.actor()))

    other = FilteredBC(config, fresh_policy(tiny_model_dir))
    other.load_state_dict(through_checkpoint(algo.state_dict(), tmp_path))
    assert_same_state(other.state_dict(), algo.state_dict())
    # Resumed, it draws the same batches and takes the same steps.
    assert other.update(1) == algo.update(1)


# ------------------------------------------------------------------- CHAI ---


class TableCritic(DoubleCritic):
    """A critic whose Q values are set by the test: q1 and q2 are functions of the action."""

    def __init__(self, q1: Any, q2: Any) -> None:
        super().__init__(HashingEncoder(hidden_size=4, num_buckets=16), hidden_size=4)
        self.q1, self.q2 = q1, q2
        self.calls = 0

    def q(self, observations: Sequence[str], actions: Sequence[str]) -> torch.Tensor:
        self.calls += 1
        return torch.tensor([[float(self.q1(a)), float(self.q2(a))] for a in actions])


def test_rank_candidates_takes_the_highest_minimum_over_heads() -> None:
    table = {"a": (5.0, -1.0), "b": (0.0, 0.0), "c": (3.0, 2.0), "d": (2.0, 9.0)}
    critic = TableCritic(lambda a: table[a][0], lambda a: table[a][1])
    # min over heads: a -1, b 0, c 2, d 2; ragged rows; ties go to the earliest
    best = rank_candidates(critic, ["s1", "s2", "s3"], [["a", "b", "c"], ["b", "a"], ["d", "c"]])
    assert best == [2, 0, 0]
    assert critic.calls == 1  # all pairs in one batch
    values = candidate_values(critic, ["s1"], [["a", "d"]])
    torch.testing.assert_close(values[0], torch.tensor([-1.0, 2.0]))


def test_rank_candidates_names_developer_mistakes() -> None:
    critic = TableCritic(len, len)
    with pytest.raises(ValueError, match="one list of candidate"):
        rank_candidates(critic, ["s1", "s2"], [["a"]])
    with pytest.raises(ValueError, match="no candidates"):
        rank_candidates(critic, ["s1"], [[]])


def test_chai_actor_generates_k_per_observation_in_one_batch_and_says_the_best(
    tiny_policy: LocalPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    generate = tiny_policy.generate

    def recording(observations: Sequence[str], sampling: Any = None) -> Any:
        calls.append(list(observations))
        out = generate(observations, sampling)
        recording.out = out  # type: ignore[attr-defined]
        return out

    monkeypatch.setattr(tiny_policy, "generate", recording)

    def score(text: str) -> float:
        return len(set(text)) - 0.01 * len(text)

    critic = TableCritic(score, lambda a: score(a) + 1.0)  # min is always q1
    actor = ChaiActor(tiny_policy, critic, num_candidates=5)
    observations = ["Questions:\n", "Questions:\nIs it an animal? Yes.\n", "Questions:\n"]
    chosen = actor.act([0, 1, 2], observations)
    assert calls == [[obs for obs in observations for _ in range(5)]]
    candidates = recording.out  # type: ignore[attr-defined]
    for i, generation in enumerate(chosen):
        group = candidates[5 * i : 5 * i + 5]
        best = max(range(5), key=lambda j: (score(group[j].text), -j))
        assert generation is group[best]
    assert len({g.text for g in candidates}) > 1  # the ranking had a real choice


def chai_config(**overrides: Any) -> ChaiConfig:
    settings: dict[str, Any] = {
        "critic_hidden_size": 32,
        "critic_lr": 1e-2,
        "critic_steps": 30,
        "critic_batch_size": 16,
        "max_new_tokens": 6,
        "num_candidates": 3,
    }
    return ChaiConfig(**{**settings, **overrides})


def test_chai_trains_the_critic_only_and_lowers_its_loss(tiny_policy: LocalPolicy) -> None:
    algo = Chai(chai_config(), tiny_policy)
    data = [episode([-1.0, -1.0, 0.0]), episode([-1.0, -1.0, -1.0], ["Is it red?"] * 3)]
    algo.observe(data)
    batch = [t for e in data for t in e.transitions]
    observations = [t.observation for t in batch]
    a_pi = ["Is it a bird?"] * len(batch)  # a fixed policy sample for the fixed-batch loss
    rewards = torch.tensor([t.reward for t in batch])
    dones = torch.tensor([t.done for t in batch])

    def fixed_batch_loss() -> float:
        with torch.no_grad():
            q, v = algo.critic(observations, [t.action for t in batch])
            loss, _ = critic_loss(
                q,
                v,
                rewards,
                dones,
                algo.target.v([t.next_observation for t in batch]),
                algo.target.q(observations, a_pi),
                algo.config.gamma,
            )
        return loss.item()

    policy_before = parameters_of(tiny_policy.model)
    critic_before = parameters_of(algo.critic)
    target_before = [p.detach().clone() for p in algo.target.parameters()]
    loss_before = fixed_batch_loss()
    metrics = algo.update(0)
    assert set(metrics) >= {"critic/critic_loss", "critic/q1_loss", "critic/buffer_size"}
    assert moved(critic_before, algo.critic)
    assert any(
        not torch.equal(a, b) for a, b in zip(target_before, algo.target.parameters(), strict=True)
    )
    assert not moved(policy_before, tiny_policy.model)  # no actor update
    assert fixed_batch_loss() < 0.5 * loss_before
    assert algo.critic_updates == 30


def test_chai_trains_its_critic_exactly_as_online_archer_does(tiny_model_dir: Path) -> None:
    from archer_agents.training.algorithms.archer import Archer, ArcherConfig

    settings: dict[str, Any] = {
        "critic_hidden_size": 32,
        "critic_lr": 1e-2,
        "critic_batch_size": 8,
        "max_new_tokens": 6,
        "seed": 3,
    }
    chai = Chai(ChaiConfig(**settings), LocalPolicy.from_pretrained(tiny_model_dir, seed=0))
    archer = Archer(
        ArcherConfig(**settings, actor_steps=0), LocalPolicy.from_pretrained(tiny_model_dir, seed=0)
    )
    data = [episode([-1.0, -1.0, 0.0]), episode([-1.0, -1.0, -1.0], ["Is it red?"] * 3)]
    chai.observe(data)
    archer.observe(data)
    for _ in range(3):
        chai_metrics, archer_metrics = chai.critic_step(), archer.critic_step()
        assert chai_metrics == pytest.approx(archer_metrics)
    for mine, theirs in ((chai.critic, archer.critic), (chai.target, archer.target)):
        for name, tensor in mine.state_dict().items():
            torch.testing.assert_close(tensor, theirs.state_dict()[name])


def test_chai_on_the_real_environment_saves_and_resumes(
    tiny_policy: LocalPolicy, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = chai_config(critic_steps=2)
    algo = Chai(config, tiny_policy)
    episodes = play(algo.actor())
    assert all(
        len(t.action_token_ids or []) == len(t.action_logprobs or []) > 0
        for e in episodes
        for t in e.transitions
    )
    algo.observe(episodes)
    algo.update(0)

    other = Chai(config, fresh_policy(tiny_model_dir))
    other.load_state_dict(through_checkpoint(algo.state_dict(), tmp_path))
    assert_same_state(other.state_dict(), algo.state_dict())
    assert other.update(1) == algo.update(1)


# -------------------------------------------------------------------- PPO ---


def test_gae_over_utterance_steps_matches_the_hand_computation() -> None:
    rewards = torch.tensor([-1.0, -1.0, 0.0])
    values = torch.tensor([0.5, 0.2, -0.4])
    next_values = torch.tensor([0.2, -0.4, 7.0])  # the terminal next value must be ignored
    dones = torch.tensor([False, False, True])
    gamma, lam = 0.9, 0.5
    d2 = 0.0 - (-0.4)
    d1 = -1.0 + 0.9 * -0.4 - 0.2
    d0 = -1.0 + 0.9 * 0.2 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    advantages, targets = utterance_gae(rewards, values, next_values, dones, gamma, lam)
    torch.testing.assert_close(advantages, torch.tensor([a0, a1, a2]))
    torch.testing.assert_close(targets, torch.tensor([a0, a1, a2]) + values)
    # lambda = 1 gives Monte Carlo returns as value targets, whatever the values.
    _, targets = utterance_gae(rewards, values, next_values, dones, gamma, 1.0)
    torch.testing.assert_close(targets, torch.tensor([-1.0 - 0.9, -1.0, 0.0]))
    # A time-limit end (truncated counts as done) does not bootstrap either.
    _, targets = utterance_gae(
        torch.tensor([-1.0]), torch.zeros(1), torch.tensor([5.0]), torch.tensor([True]), 0.9, 0.9
    )
    torch.testing.assert_close(targets, torch.tensor([-1.0]))


def ppo_config(**overrides: Any) -> PPOConfig:
    settings: dict[str, Any] = {
        "max_new_tokens": 6,
        "value_hidden_size": 32,
        "policy_lr": 3e-3,
        "value_lr": 1e-2,
        "minibatch_size": 8,
        "epochs": 4,
    }
    return PPOConfig(**{**settings, **overrides})


def test_ppo_ratio_and_clipping_use_the_recorded_sampling_logprobs(
    tiny_policy: LocalPolicy,
) -> None:
    algo = PPO(ppo_config(), tiny_policy)
    samples = algo.samples(play(algo.actor()))
    # Recorded at sampling by the same weights: every ratio is 1, nothing is clipped.
    _, metrics = algo.policy_loss(samples)
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["clip_fraction"] == 0.0
    # Recorded log-probs one log(2) lower: every token's ratio is 2, all are clipped, and
    # with positive advantages the clipped surrogate has no gradient at all.
    halved = [
        dataclasses.replace(
            s, old_logprobs=[lp - math.log(2.0) for lp in s.old_logprobs], advantage=1.0
        )
        for s in samples
    ]
    loss, metrics = algo.policy_loss(halved)
    assert metrics["ratio_mean"] == pytest.approx(2.0, rel=1e-4)
    assert metrics["clip_fraction"] == 1.0
    assert loss.item() == pytest.approx(-1.2, rel=1e-4)  # -(1 + clip) * A
    tiny_policy.model.zero_grad()
    loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in tiny_policy.model.parameters())


def test_ppo_update_moves_policy_and_value_and_lowers_both_losses(
    tiny_policy: LocalPolicy,
) -> None:
    algo = PPO(ppo_config(), tiny_policy)
    episodes = play(algo.actor(), n=4)
    fixed = algo.samples(episodes)
    observations = [s.observation for s in fixed]
    targets = torch.tensor([s.value_target for s in fixed])

    def losses() -> tuple[float, float]:
        with torch.no_grad():
            policy = algo.policy_loss(fixed)[0].item()
            value = ((algo.value(observations) - targets) ** 2).mean().item()
        return policy, value

    policy_before, value_before = losses()
    policy_params, value_params = parameters_of(tiny_policy.model), parameters_of(algo.value)
    algo.observe(episodes)
    metrics = algo.update(0)
    assert metrics["ppo/utterances"] == len(fixed) == 8
    assert algo.pending == []  # on-policy: the batch is used once
    assert moved(policy_params, tiny_policy.model) and moved(value_params, algo.value)
    policy_after, value_after = losses()
    assert policy_after < policy_before - 0.05
    assert value_after < 0.8 * value_before


def test_ppo_minibatches_hold_whole_episodes_each_once_per_epoch(
    tiny_policy: LocalPolicy,
) -> None:
    algo = PPO(ppo_config(minibatch_size=5), tiny_policy)
    groups = [
        [PPOSample(f"{e}-{t}", [1], [0.0], 0.0, 0.0) for t in range(n)]
        for e, n in enumerate([3, 1, 4, 2, 3])
    ]
    batches = algo.minibatches(groups)
    assert sorted(s.observation for b in batches for e in b for s in e) == sorted(
        s.observation for g in groups for s in g
    )
    for batch in batches:
        for episode in batch:  # an episode is whole, in turn order
            e = int(episode[0].observation.split("-")[0])
            assert episode == groups[e]
    assert all(sum(len(e) for e in b) >= 5 for b in batches[:-1])
    assert algo.minibatches(groups) != batches  # a fresh order each epoch


def test_ppo_invalid_action_penalty_shapes_only_invalid_turns_returns(
    tiny_policy: LocalPolicy,
) -> None:
    episodes = play(PPO(ppo_config(), tiny_policy).actor(), n=1)
    turns = episodes[0].transitions
    assert len(turns) >= 2
    flagged = [  # only the first turn is invalid, whatever the environment said
        t.model_copy(update={"info": {**t.info, "invalid_action": i == 0}})
        for i, t in enumerate(turns)
    ]
    marked = [episodes[0].model_copy(update={"transitions": flagged})]
    monte_carlo = {"gamma": 1.0, "gae_lambda": 1.0, "normalize_advantages": False}
    plain = PPO(ppo_config(**monte_carlo), tiny_policy).samples(marked)
    shaped = PPO(ppo_config(**monte_carlo, invalid_action_penalty=0.5), tiny_policy).samples(marked)
    # Value targets are returns-to-go: the first turn's return drops by the penalty, later
    # turns' returns (after the invalid one) do not.
    assert shaped[0].value_target == pytest.approx(plain[0].value_target - 0.5, abs=1e-5)
    for a, b in zip(shaped[1:], plain[1:], strict=True):
        assert a.value_target == pytest.approx(b.value_target, abs=1e-5)
    assert marked[0].transitions[0].reward == turns[0].reward  # the episode keeps the env's reward


def test_ppo_refuses_utterances_without_sampling_logprobs(tiny_policy: LocalPolicy) -> None:
    algo = PPO(ppo_config(), tiny_policy)
    scripted = play(ScriptedActor("expert"), n=1)
    algo.observe(scripted)
    with pytest.raises(ValueError, match=r"recorded when it was sampled.*PPO.actor\(\)"):
        algo.update(0)


def test_ppo_saves_and_resumes(
    tiny_policy: LocalPolicy, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = ppo_config(epochs=1)
    algo = PPO(config, tiny_policy)
    algo.observe(play(algo.actor()))
    algo.update(0)
    algo.observe(play(algo.actor()))  # a pending batch travels with the state
    other = PPO(config, fresh_policy(tiny_model_dir))
    other.load_state_dict(through_checkpoint(algo.state_dict(), tmp_path))
    assert_same_state(other.state_dict(), algo.state_dict())
    assert other.update(1) == algo.update(1)


# -------------------------------------------------------------- REINFORCE ---


def test_batch_mean_baseline() -> None:
    torch.testing.assert_close(
        batch_mean_advantages(torch.tensor([0.0, -10.0, -20.0])), torch.tensor([10.0, 0.0, -10.0])
    )
    torch.testing.assert_close(batch_mean_advantages(torch.tensor([-3.0])), torch.tensor([0.0]))
    with pytest.raises(ValueError, match="non-empty"):
        batch_mean_advantages(torch.tensor([]))


def reinforce_batch(tokenizer: Any) -> list[Episode]:
    return [
        episode([-1.0, 0.0], ["Is it a bird?", "Is it a penguin?"], tokenizer),
        episode([-1.0, -1.0, -1.0], ["Is it red?"] * 3, tokenizer),
        episode([-1.0, -1.0], ["Is it a fruit?", "Is it a banana?"], tokenizer),
    ]


def test_reinforce_loss_is_the_baselined_trajectory_log_likelihood(
    tiny_policy: LocalPolicy,
) -> None:
    episodes = reinforce_batch(tiny_policy.tokenizer)
    algo = Reinforce(ReinforceConfig(learning_rate=1e-3, chunk_episodes=2), tiny_policy)
    # By hand: G = -1, -3, -2; b = -2; weights 1, -1, 0 on each episode's summed log-probs.
    with torch.no_grad():
        sums = [
            sum(
                float(tiny_policy.log_probs([t.observation], [t.action_token_ids or []])[0].sum())
                for t in e.transitions
            )
            for e in episodes
        ]
    expected = -(1.0 * sums[0] - 1.0 * sums[1] + 0.0 * sums[2]) / 3
    algo.observe(episodes)
    metrics = algo.update(0)
    assert metrics["reinforce/loss"] == pytest.approx(expected, rel=1e-4)
    assert metrics["reinforce/return_mean"] == pytest.approx(-2.0)


def test_reinforce_chunks_accumulate_to_the_same_gradient(tiny_model_dir: Path) -> None:
    grads = []
    for chunk in (1, 3):
        policy = LocalPolicy.from_pretrained(tiny_model_dir)
        algo = Reinforce(ReinforceConfig(chunk_episodes=chunk), policy)
        episodes = reinforce_batch(policy.tokenizer)
        advantages = batch_mean_advantages(torch.tensor([e.total_reward for e in episodes]))
        for start in range(0, 3, chunk):
            part = episodes[start : start + chunk]
            loss, _ = actor_loss(algo.episode_logprobs(part), advantages[start : start + chunk])
            (loss * len(part) / 3).backward()
        grads.append([p.grad.clone() for p in algo.parameters])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_reinforce_update_moves_the_policy_and_lowers_its_loss(
    tiny_policy: LocalPolicy,
) -> None:
    episodes = reinforce_batch(tiny_policy.tokenizer)
    algo = Reinforce(ReinforceConfig(learning_rate=1e-2), tiny_policy)
    losses = []
    before = parameters_of(tiny_policy.model)
    for iteration in range(4):
        algo.observe(episodes)  # the same fixed batch each time
        losses.append(algo.update(iteration)["reinforce/loss"])
    assert moved(before, tiny_policy.model)
    assert losses[-1] < losses[0] - 1.0


def test_reinforce_on_the_real_environment_saves_and_resumes(
    tiny_policy: LocalPolicy, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = ReinforceConfig(max_new_tokens=6, learning_rate=1e-3)
    algo = Reinforce(config, tiny_policy)
    algo.observe(play(algo.actor(), max_turns=3))
    algo.update(0)
    algo.observe(reinforce_batch(tiny_policy.tokenizer))
    other = Reinforce(config, fresh_policy(tiny_model_dir))
    other.load_state_dict(through_checkpoint(algo.state_dict(), tmp_path))
    assert_same_state(other.state_dict(), algo.state_dict())
    assert other.update(1) == algo.update(1)


# ------------------------------------------------- through `archer train` ---

SMALL = {
    "filtered_bc": ["batch_size=4", "steps_per_update=1"],
    "chai": ["critic_steps=1", "critic_batch_size=4", "num_candidates=2", "critic_hidden_size=16"],
    "ppo": ["minibatch_size=8", "epochs=1", "value_hidden_size=16"],
    "reinforce": [],
}


@pytest.mark.slow
@pytest.mark.parametrize("algo", sorted(SMALL))
def test_archer_train_runs_checkpoints_and_resumes_each_baseline(
    algo: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from archer_agents.cli.train import train

    loop = ["episodes_per_iteration=2", "num_envs=2", "eval_episodes=2", "tensorboard=false"]
    overrides = ["max_new_tokens=4", *SMALL[algo], *loop]
    run = tmp_path / "run"
    first = train(
        algo=algo,
        env_id=ENV_ID,
        model=str(tiny_model_dir),
        out=run,
        overrides=[*overrides, "iterations=1"],
    )
    assert first.counters.iteration == 1 and first.counters.episodes == 2
    assert (run / "checkpoints" / "latest").is_file()  # saving works (docs/algorithm.md, defect 7)
    resumed = train(
        algo=algo,
        env_id=ENV_ID,
        model=None,
        out=run,
        overrides=[*overrides, "iterations=2"],
        resume=True,
    )
    assert resumed.resumed_from == 1
    assert resumed.counters.iteration == 2 and resumed.counters.episodes == 4
