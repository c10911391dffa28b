"""Every registered environment: Gymnasium's checker plus our own text-env checks."""

from __future__ import annotations

import sys

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

from archer_agents.environments import registered_ids
from archer_agents.environments.base import TextEnv
from archer_agents.training.rollout import ScriptedActor, collect, make_env_factory

HEAVY_MODULES = ("playwright", "torch", "transformers")


def env_params() -> list:
    return [
        pytest.param(env_id, marks=[pytest.mark.browser, pytest.mark.slow])
        if env_id.endswith("Browser-v0")
        else env_id
        for env_id in registered_ids()
    ]


def small_kwargs(env_id: str) -> dict:
    """Small data sets where an environment offers them, to keep the checks fast."""
    if "SupportSim" in env_id:
        return {"size": "small", "n_train": 10, "n_test": 10}
    if "MiniShop" in env_id:
        return {"catalog": "small"}
    return {}


def test_ids_are_namespaced_and_registered_lazily() -> None:
    ids = registered_ids()
    assert len(ids) >= 5
    for env_id in ids:
        assert env_id.startswith("archer/") and env_id.endswith("-v0")
        entry_point = gym.spec(env_id).entry_point
        assert isinstance(entry_point, str) and ":" in entry_point  # lazy, not a class


def test_importing_the_package_starts_nothing_heavy_and_registers_nothing() -> None:
    import subprocess

    code = (
        "import sys, gymnasium as gym\n"
        "import archer_agents, archer_agents.tools.twenty_questions\n"
        "assert not [i for i in gym.registry if i.startswith('archer/')], 'registered early'\n"
        "import archer_agents.environments\n"
        "assert 'archer/TwentyQuestions-v0' in gym.registry\n"
        f"print([m for m in {HEAVY_MODULES!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_the_public_names_import_lazily_from_the_top() -> None:
    import subprocess

    names = (
        "Archer, ArcherConfig, Trainer, ArcherChatModel, EpisodeRecorder, load_agent, "
        "ToolCallingEnv, Episode, Transition, read_episodes, EpisodeWriter"
    )
    code = (
        "import sys, archer_agents\n"
        "before = 'torch' in sys.modules\n"
        f"from archer_agents import {names}\n"
        "assert set(archer_agents.__all__) <= set(dir(archer_agents))\n"
        "print(before, Archer.__module__, Trainer.__module__, EpisodeRecorder.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "False",
        "archer_agents.training.algorithms.archer",
        "archer_agents.training.trainer",
        "archer_agents.langchain.recorder",
    ]
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        import archer_agents

        _ = archer_agents.Nope


@pytest.mark.parametrize("env_id", env_params())
def test_gymnasium_env_checker(env_id: str) -> None:
    env = gym.make(env_id, **small_kwargs(env_id))
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


@pytest.mark.parametrize("env_id", env_params())
def test_text_env_contract(env_id: str) -> None:
    env = gym.make(env_id, **small_kwargs(env_id))
    try:
        base = env.unwrapped
        assert isinstance(base, TextEnv)
        train, test = list(base.task_ids("train")), list(base.task_ids("test"))
        assert train and test
        assert len(set(train)) == len(train) and len(set(test)) == len(test)
        # Same seed and task, same first observation; the observation lies in the space.
        first, info = env.reset(seed=3, options={"split": "test", "task_id": test[0]})
        again, _ = env.reset(seed=3, options={"split": "test", "task_id": test[0]})
        assert first == again and env.observation_space.contains(first)
        assert info["task_id"] == test[0]
        # A nonsense utterance is the model's mistake: an observation, never an exception.
        observation, reward, terminated, truncated, info = env.step("\x00 ]]} not an action ((")
        assert info["invalid_action"] is True and info.get("error")
        assert env.observation_space.contains(observation)
        assert reward <= 0.0
        with pytest.raises(ValueError, match="unknown scripted agent"):
            base.make_scripted_agent("oracle-of-delphi")
    finally:
        env.close()


@pytest.mark.parametrize("env_id", [p for p in env_params() if isinstance(p, str)])
def test_scripted_agents_finish_episodes_and_expert_leads(env_id: str) -> None:
    factory = make_env_factory(env_id, **small_kwargs(env_id))
    probe = factory()
    tasks = list(probe.unwrapped.task_ids("test"))[:8]
    probe.close()
    success = {}
    for kind in ("expert", "random"):
        result = collect(factory, ScriptedActor(kind), 8, num_envs=4, split="test", task_ids=tasks)
        assert len(result.episodes) == 8
        for episode in result.episodes:
            assert episode.transitions[-1].terminated or episode.transitions[-1].truncated
            assert episode.success is not None and episode.total_reward is not None
        success[kind] = sum(bool(e.success) for e in result.episodes)
    assert success["expert"] == 8
    assert success["random"] < success["expert"]
