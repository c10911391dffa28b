"""The replay buffer: FIFO capacity, seeded uniform sampling, visit counts, exact resume."""

from __future__ import annotations

import io
import json
from collections import Counter

import pytest
import torch

from archer_agents.data.schema import Episode, Transition
from archer_agents.training.replay_buffer import ReplayBuffer


def transition(index: int, action: str | None = None) -> Transition:
    return Transition(
        observation=f"obs {index}",
        action=action if action is not None else f"act {index}",
        reward=-1.0,
        next_observation=f"obs {index + 1}",
        action_token_ids=[index, 2],
        action_logprobs=[-0.5, -0.1],
        policy_version="v1",
    )


def episode(start: int, length: int) -> Episode:
    steps = [transition(i) for i in range(start, start + length)]
    steps[-1] = steps[-1].model_copy(update={"terminated": True})
    return Episode(env_id="archer/Test-v0", transitions=steps)


def test_add_episode_stores_every_transition_with_its_tokens() -> None:
    buffer = ReplayBuffer(capacity=10, seed=0)
    buffer.add_episode(episode(0, 3))
    assert len(buffer) == 3
    sampled = buffer.sample(20)
    assert {t.observation for t in sampled} <= {"obs 0", "obs 1", "obs 2"}
    first = next(t for t in sampled if t.observation == "obs 0")
    assert first.action_token_ids == [0, 2]
    assert first.action_logprobs == [-0.5, -0.1]


def test_fifo_eviction_keeps_the_newest() -> None:
    buffer = ReplayBuffer(capacity=3, seed=0)
    for index in range(5):
        buffer.add(transition(index))
    assert len(buffer) == 3
    assert buffer.num_added == 5
    assert {t.observation for t in buffer.sample(200)} == {"obs 2", "obs 3", "obs 4"}
    buffer.add(transition(5))
    assert {t.observation for t in buffer.sample(200)} == {"obs 3", "obs 4", "obs 5"}


def test_sampling_is_uniform_and_seeded() -> None:
    a, b, c = ReplayBuffer(4, seed=7), ReplayBuffer(4, seed=7), ReplayBuffer(4, seed=8)
    for buffer in (a, b, c):
        buffer.add_episode(episode(0, 4))
    draws_a = [t.observation for t in a.sample(4000)]
    assert draws_a == [t.observation for t in b.sample(4000)]
    assert draws_a != [t.observation for t in c.sample(4000)]
    counts = Counter(draws_a)
    # Each of 4 items expects 1000 draws; the binomial standard deviation is about 27.
    assert all(880 < count < 1120 for count in counts.values()), counts


def test_visit_counts_follow_the_stored_transitions() -> None:
    buffer = ReplayBuffer(capacity=3, seed=0)
    for index, action in enumerate(["ask", "ask", "guess"]):
        buffer.add(transition(index, action))
    assert buffer.visit_count("ask") == 2
    assert buffer.visit_count("never said") == 0
    torch.testing.assert_close(buffer.visit_counts(["ask", "guess", "x"]), torch.tensor([2, 1, 0]))
    buffer.add(transition(3, "guess"))  # evicts the first "ask"
    assert buffer.visit_count("ask") == 1
    assert buffer.visit_count("guess") == 2
    buffer.add(transition(4, "guess"))
    buffer.add(transition(5, "guess"))
    assert buffer.visit_count("ask") == 0
    assert buffer.visit_count("guess") == 3


def test_a_resumed_buffer_samples_as_an_uninterrupted_one() -> None:
    original = ReplayBuffer(capacity=5, seed=3)
    for index in range(7):  # wraps around: the write slot is mid-buffer
        original.add(transition(index))
    original.sample(9)

    stream = io.BytesIO()
    torch.save(original.state_dict(), stream)
    stream.seek(0)
    resumed = ReplayBuffer(capacity=5, seed=999)
    resumed.load_state_dict(torch.load(stream, weights_only=True))

    assert len(resumed) == len(original)
    for buffer in (original, resumed):
        buffer.add(transition(100))
    assert resumed.sample(50) == original.sample(50)
    assert resumed.visit_count("act 100") == 1
    assert resumed.visit_count("act 2") == 0  # evicted before the save
    assert resumed.num_added == original.num_added == 8


def test_in_order_lists_the_stored_transitions_oldest_first() -> None:
    buffer = ReplayBuffer(capacity=3)
    buffer.add(transition(0))
    buffer.add(transition(1))
    assert [t.action for t in buffer.in_order()] == ["act 0", "act 1"]
    for index in (2, 3, 4):  # wraps: slots hold 3, 4, 2
        buffer.add(transition(index))
    assert [t.action for t in buffer.in_order()] == ["act 2", "act 3", "act 4"]


def test_a_version_1_state_still_loads() -> None:
    """Version 1 held a list of transition dicts; checkpoints written then still resume."""
    original = ReplayBuffer(capacity=4, seed=1)
    for index in range(6):
        original.add(transition(index))
    state = original.state_dict()
    lines = state.pop("transitions_jsonl").split("\n")
    old = {**state, "version": 1, "transitions": [json.loads(line) for line in lines]}
    resumed = ReplayBuffer(capacity=4, seed=5)
    resumed.load_state_dict(old)
    assert resumed.in_order() == original.in_order()
    assert resumed.sample(20) == original.sample(20)
    with pytest.raises(ValueError, match="reads versions 1 and 2"):
        ReplayBuffer(capacity=4).load_state_dict({**state, "version": 7})


def test_developer_errors_say_what_to_do() -> None:
    buffer = ReplayBuffer(capacity=2)
    with pytest.raises(ValueError, match="add episodes first"):
        buffer.sample(1)
    with pytest.raises(TypeError, match="Transition"):
        buffer.add({"observation": "x"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 1"):
        ReplayBuffer(capacity=0)
    buffer.add(transition(0))
    with pytest.raises(ValueError, match=r"ReplayBuffer\(capacity=2\)"):
        ReplayBuffer(capacity=3).load_state_dict(buffer.state_dict())
