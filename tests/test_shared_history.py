"""Scoring and sampling that compute a shared history once give exactly the per-turn results."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from archer_agents.data.schema import Episode
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import SamplingParams
from archer_agents.training.algorithms.bc import action_token_ids
from archer_agents.training.cached_rollout import CachedPolicyActor
from archer_agents.training.rollout import PolicyActor, ScriptedActor, collect, make_env_factory

ENV_ID = "archer/TwentyQuestions-v0"
SAMPLING = SamplingParams(max_new_tokens=6)


@pytest.fixture(scope="module")
def weak_episodes() -> list[Episode]:
    factory = make_env_factory(ENV_ID)
    return collect(factory, ScriptedActor("weak"), 4, num_envs=4, seed=3).episodes


def pairs(policy: LocalPolicy, episodes: list[Episode]) -> tuple[list[str], list[list[int]]]:
    turns = [t for e in episodes for t in e.transitions]
    return [t.observation for t in turns], [
        action_token_ids(policy.tokenizer, t.action) for t in turns
    ]


def test_packed_scores_equal_per_turn_scores_in_any_order(
    tiny_policy: LocalPolicy, weak_episodes: list[Episode]
) -> None:
    observations, actions = pairs(tiny_policy, weak_episodes)
    order = list(range(len(observations)))
    random.Random(0).shuffle(order)
    observations = [observations[i] for i in order]
    actions = [actions[i] for i in order]
    plain = tiny_policy.log_probs(observations, actions)
    packed = tiny_policy.log_probs_packed(observations, actions)
    assert len(packed) == len(plain)
    for a, b in zip(plain, packed, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    # The packed loss has the same gradient.
    torch.cat(plain).sum().backward()
    expected = {n: p.grad.clone() for n, p in tiny_policy.model.named_parameters()}
    tiny_policy.model.zero_grad()
    torch.cat(packed).sum().backward()
    for name, p in tiny_policy.model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], atol=1e-4, rtol=1e-4, msg=name)


def test_packed_scoring_handles_unrelated_and_repeated_observations(
    tiny_policy: LocalPolicy,
) -> None:
    observations = ["Questions:\n", "Questions:\n", "Hello there\n", "Questions:\nIs it red? No.\n"]
    actions = [[5, 6, tiny_policy.eos_id], [7, tiny_policy.eos_id], [8], [9, 10]]
    plain = tiny_policy.log_probs(observations, actions)
    packed = tiny_policy.log_probs_packed(observations, actions)
    for a, b in zip(plain, packed, strict=True):
        torch.testing.assert_close(b.detach(), a.detach(), atol=1e-5, rtol=0)
    assert tiny_policy.log_probs_packed([], []) == []


def test_cached_generation_samples_what_it_would_without_the_cache(
    tiny_model_dir: Path, weak_episodes: list[Episode]
) -> None:
    policy = LocalPolicy.from_pretrained(tiny_model_dir, seed=0)
    turns = [e.transitions for e in weak_episodes]
    caches = [None] * len(turns)
    for step in range(3):
        observations = [t[min(step, len(t) - 1)].observation for t in turns]
        state = policy.generator.get_state()
        cached, caches = policy.generate_cached(observations, caches, SAMPLING)
        policy.generator.set_state(state)
        plain = policy.generate(observations, SAMPLING)
        assert [g.token_ids for g in cached] == [g.token_ids for g in plain]
        for a, b in zip(cached, plain, strict=True):
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
            assert a.prompt_token_ids == b.prompt_token_ids
        assert [c.ids for c in caches] == [g.prompt_token_ids for g in plain]
    with pytest.raises(ValueError, match="one cache"):
        policy.generate_cached(["Questions:\n"], [], SAMPLING)


def test_shared_generation_equals_generation(
    tiny_model_dir: Path, weak_episodes: list[Episode]
) -> None:
    policy = LocalPolicy.from_pretrained(tiny_model_dir, seed=1)
    observations = [t.observation for e in weak_episodes for t in e.transitions]
    caches = policy.prefix_caches(observations)
    assert all(
        c is not None and c.ids == policy.prompt_ids(o)[:-1]
        for c, o in zip(caches, observations, strict=True)
    )
    state = policy.generator.get_state()
    shared = policy.generate_shared(observations, SAMPLING)
    policy.generator.set_state(state)
    plain = policy.generate(observations, SAMPLING)
    assert [g.token_ids for g in shared] == [g.token_ids for g in plain]
    scored = policy.log_probs(observations, [g.token_ids for g in shared])
    for generation, score in zip(shared, scored, strict=True):
        torch.testing.assert_close(
            torch.tensor(generation.logprobs), score.detach(), atol=1e-5, rtol=0
        )


def test_cached_actor_plays_the_same_episodes_as_the_plain_actor(tiny_model_dir: Path) -> None:
    factory = make_env_factory(ENV_ID)
    runs = []
    for actor_class in (CachedPolicyActor, PolicyActor):
        policy = LocalPolicy.from_pretrained(tiny_model_dir, seed=2)
        episodes = collect(factory, actor_class(policy, SAMPLING), 4, num_envs=2, seed=9).episodes
        runs.append([[t.action_token_ids for t in e.transitions] for e in episodes])
    assert runs[0] == runs[1]
