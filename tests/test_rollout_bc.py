"""Rollouts with a real tiny model on Twenty Questions, evaluation summaries, behaviour cloning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from archer_agents.data.episode_log import EpisodeWriter, read_episodes
from archer_agents.data.schema import Episode, Transition
from archer_agents.policies.protocol import SamplingParams
from archer_agents.training.algorithms.bc import (
    BCConfig,
    action_token_ids,
    behaviour_clone,
    utterance_pairs,
)
from archer_agents.training.evaluation import summarize
from archer_agents.training.rollout import PolicyActor, ScriptedActor, collect, make_env_factory

TQ = "archer/TwentyQuestions-v0"


class CountingPolicy:
    """Delegates to a real policy and records the batch size of every generate call."""

    def __init__(self, policy) -> None:
        self.policy = policy
        self.version = policy.version
        self.batches: list[int] = []

    def generate(self, observations, sampling=None):
        self.batches.append(len(observations))
        return self.policy.generate(observations, sampling)

    def log_probs(self, observations, action_token_ids):
        return self.policy.log_probs(observations, action_token_ids)


def test_policy_rollouts_are_batched_logged_and_token_faithful(tiny_policy, tmp_path: Path) -> None:
    policy = CountingPolicy(tiny_policy)
    log = tmp_path / "episodes.jsonl"
    sampling = SamplingParams(max_new_tokens=12)
    with EpisodeWriter(log) as writer:
        result = collect(
            make_env_factory(TQ),
            PolicyActor(policy, sampling),
            6,
            num_envs=3,
            writer=writer,
            policy_version="v7",
        )
    assert len(result.episodes) == 6
    # One generate call per turn covers every running episode.
    assert max(policy.batches) == 3
    assert sum(policy.batches) == sum(e.num_turns for e in result.episodes)
    assert result.generated_tokens == sum(
        len(t.action_token_ids or []) for e in result.episodes for t in e.transitions
    )
    read, report = read_episodes(log)
    assert read == result.episodes and report.lines_skipped == 0
    for episode in read:
        assert episode.env_id == TQ and episode.total_reward == sum(
            t.reward for t in episode.transitions
        )
        for transition in episode.transitions:
            assert transition.policy_version == "v7"
            ids, logprobs = transition.action_token_ids, transition.action_logprobs
            assert ids and logprobs and len(ids) == len(logprobs) <= 12
            assert (
                transition.prompt_token_ids
                and transition.prompt_token_ids[0] == tiny_policy.tokenizer.bos_token_id
            )
        # The observation chain is continuous.
        for before, after in zip(episode.transitions, episode.transitions[1:], strict=False):
            assert after.observation == before.next_observation
    # The logged logprobs are the policy's scores of the logged ids.
    first = read[0].transitions[0]
    rescored = tiny_policy.log_probs([first.observation], [first.action_token_ids])[0]
    assert torch.allclose(rescored, torch.tensor(first.action_logprobs), atol=1e-5)


def test_task_sweep_and_seeds_make_evaluation_reproducible() -> None:
    factory = make_env_factory(TQ)
    tasks = list(factory().unwrapped.task_ids("test"))[:5]
    first = collect(
        factory, ScriptedActor("weak", seed=1), 10, num_envs=4, split="test", task_ids=tasks, seed=5
    )
    again = collect(
        factory, ScriptedActor("weak", seed=1), 10, num_envs=4, split="test", task_ids=tasks, seed=5
    )
    assert sorted(e.task_id for e in first.episodes) == sorted(tasks * 2)
    key = lambda e: e.seed  # noqa: E731
    assert [e.transitions for e in sorted(first.episodes, key=key)] == [
        e.transitions for e in sorted(again.episodes, key=key)
    ]


def test_unknown_environment_lists_the_known_ids() -> None:
    with pytest.raises(ValueError, match="registered archer ids: .*TwentyQuestions"):
        make_env_factory("archer/Nope-v0")


def episode(task: str, rewards: list[float], success: bool, invalid: int = 0) -> Episode:
    transitions = [
        Transition(
            observation="o",
            action="a",
            reward=r,
            next_observation="o",
            terminated=i == len(rewards) - 1,
            info={"invalid_action": i < invalid},
        )
        for i, r in enumerate(rewards)
    ]
    return Episode(env_id="x", task_id=task, transitions=transitions).finalize(success=success)


def test_summary_averages_tasks_before_the_interval() -> None:
    episodes = [
        episode("a", [-1, -1, 0], True, invalid=1),
        episode("a", [-1, -1, -1, -1], False),
        episode("b", [0], True),
    ]
    summary = summarize(episodes)
    assert summary.tasks == 2 and summary.episodes == 3
    assert summary.success.mean == pytest.approx((0.5 + 1.0) / 2)
    assert summary.mean_return.mean == pytest.approx((-3.0 + 0.0) / 2)
    assert summary.mean_turns == pytest.approx(8 / 3)
    assert summary.invalid_action_rate == pytest.approx(1 / 8)
    assert summary.success.low <= summary.success.mean <= summary.success.high
    assert summary.metrics("eval")["eval/return_mean"] == pytest.approx(-1.5)


def test_behaviour_cloning_learns_the_teacher(tiny_policy) -> None:
    data = collect(make_env_factory(TQ), ScriptedActor("expert"), 20, num_envs=10).episodes
    pairs = utterance_pairs(data)
    observations = [o for o, _ in pairs[:16]]
    targets = [action_token_ids(tiny_policy.tokenizer, a) for _, a in pairs[:16]]
    assert targets[0][-1] == tiny_policy.tokenizer.eos_token_id

    def teacher_nll() -> float:
        with torch.no_grad():
            return float(-torch.cat(tiny_policy.log_probs(observations, targets)).mean())

    before = teacher_nll()
    evaluations = []
    result = behaviour_clone(
        tiny_policy,
        data,
        BCConfig(steps=40, batch_size=16, eval_every=20, warmup_steps=5),
        evaluate=lambda step: evaluations.append(step) or {"eval/marker": float(step)},
    )
    after = teacher_nll()
    assert after < before * 0.6, (before, after)
    assert evaluations == [20, 40]
    assert [h["eval/marker"] for h in result.history] == [20.0, 40.0]


def test_behaviour_cloning_refuses_empty_data(tiny_policy) -> None:
    failed = [episode("a", [-1.0], False)]
    with pytest.raises(ValueError, match="none succeeded"):
        behaviour_clone(tiny_policy, failed, BCConfig(steps=1, only_successful=True))
