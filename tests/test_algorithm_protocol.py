"""Every algorithm implements the trainer's `Algorithm` protocol, members and all."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from archer_agents.data.episode_log import EpisodeWriter
from archer_agents.data.schema import Episode, Transition
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.training import algorithms
from archer_agents.training.algorithm import Algorithm
from archer_agents.training.algorithms.archer import Archer, ArcherConfig
from archer_agents.training.algorithms.chai import Chai, ChaiConfig
from archer_agents.training.algorithms.filtered_bc import FilteredBC, FilteredBCConfig
from archer_agents.training.algorithms.offline_archer import OfflineArcher, OfflineArcherConfig
from archer_agents.training.algorithms.offline_then_online import (
    OfflineThenOnline,
    OfflineThenOnlineConfig,
)
from archer_agents.training.algorithms.ppo import PPO, PPOConfig
from archer_agents.training.algorithms.reinforce import Reinforce, ReinforceConfig

PROTOCOL_MEMBERS = (
    "name",
    "online",
    "config",
    "policy",
    "modules",
    "actor",
    "observe",
    "update",
    "state_dict",
    "load_state_dict",
)


@pytest.fixture
def episode_log(tmp_path: Path) -> Path:
    path = tmp_path / "episodes.jsonl"
    turn = Transition(
        observation="Questions so far:\n",
        action="Is it an animal?",
        reward=-1.0,
        next_observation="Questions so far:\nIs it an animal? No.\n",
        terminated=True,
    )
    with EpisodeWriter(path, fsync=False) as writer:
        writer.write_all(
            [Episode(env_id="archer/TwentyQuestions-v0", transitions=[turn], total_reward=-1.0)]
        )
    return path


def build_all(policy: LocalPolicy, log: Path) -> list[Any]:
    small: dict[str, Any] = {"critic_hidden_size": 8, "max_new_tokens": 4}
    return [
        Archer(ArcherConfig(**small), policy),
        Archer(ArcherConfig(**small, kl_coef=0.1, token_baseline=True), policy),
        Chai(ChaiConfig(**small), policy),
        FilteredBC(FilteredBCConfig(), policy),
        OfflineArcher(OfflineArcherConfig(**small, data=[log]), policy),
        OfflineThenOnline(
            OfflineThenOnlineConfig(offline=OfflineArcherConfig(**small, data=[log])), policy
        ),
        PPO(PPOConfig(max_new_tokens=4, value_hidden_size=8), policy),
        Reinforce(ReinforceConfig(), policy),
    ]


def test_the_protocol_names_everything_the_trainer_reads() -> None:
    declared = {
        name
        for name in dir(Algorithm)
        if not name.startswith("_") and name not in dir(object) and name != "unique_modules"
    }
    assert declared == set(PROTOCOL_MEMBERS)


def test_every_algorithm_class_is_covered() -> None:
    """A new algorithm in training/algorithms must be added to `build_all` above."""
    import pkgutil

    found = set()
    for info in pkgutil.iter_modules(algorithms.__path__):
        module = __import__(f"{algorithms.__name__}.{info.name}", fromlist=["_"])
        for _, cls in inspect.getmembers(module, inspect.isclass):
            is_algorithm = hasattr(cls, "update") and hasattr(cls, "observe")
            if cls.__module__ == module.__name__ and is_algorithm:
                found.add(cls)
    assert found == {Archer, Chai, FilteredBC, OfflineArcher, OfflineThenOnline, PPO, Reinforce}


def test_every_algorithm_satisfies_the_protocol(
    tiny_policy: LocalPolicy, episode_log: Path
) -> None:
    for algorithm in build_all(tiny_policy, episode_log):
        assert isinstance(algorithm, Algorithm), type(algorithm).__name__
        assert isinstance(algorithm.name, str) and algorithm.name
        assert isinstance(algorithm.online, bool)
        assert algorithm.policy is tiny_policy
        assert algorithm.config is not None
        modules = algorithm.modules()
        assert all(isinstance(m, nn.Module) for m in modules)
        assert len({id(m) for m in modules}) == len(modules), "each module once"
        assert any(m is tiny_policy.model for m in modules)
        assert isinstance(algorithm.state_dict(), dict)


def test_modules_list_critics_and_the_extra_models(
    tiny_policy: LocalPolicy, episode_log: Path
) -> None:
    archer, with_extras, chai, _, offline, then_online, ppo, _ = build_all(tiny_policy, episode_log)
    assert archer.modules() == [tiny_policy.model, archer.critic, archer.target]
    assert with_extras.modules() == [
        tiny_policy.model,
        with_extras.critic,
        with_extras.target,
        with_extras.reference.model,
        with_extras.baseline,
    ]
    assert chai.modules() == [tiny_policy.model, chai.critic, chai.target]
    assert offline.modules() == [tiny_policy.model, offline.critic, offline.target]
    assert then_online.modules() == then_online.offline.modules()
    assert ppo.modules() == [tiny_policy.model, ppo.value]
    assert offline.online is False and then_online.online is False
    assert torch.is_tensor(next(ppo.value.parameters()))
