"""benchmarks/question_game_diagnostics.py: how a policy spends its turns, what its critic knows."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from benchmark_scripts import load_benchmark

from archer_agents.data.schema import Episode, Transition
from archer_agents.tools.twenty_questions import TwentyQuestionsOracle

MINI = "archer/TwentyQuestionsMini-v0"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("question_game_diagnostics")


def episode(task: str, actions: list[str], solved: bool) -> Episode:
    transitions = [
        Transition(
            observation=f"turn {i}",
            action=action,
            reward=0.0 if solved and i == len(actions) - 1 else -1.0,
            next_observation=f"turn {i + 1}",
            terminated=solved and i == len(actions) - 1,
        )
        for i, action in enumerate(actions)
    ]
    return Episode(env_id=MINI, task_id=task, transitions=transitions, success=solved)


def test_turns_are_counted_by_kind(bench: ModuleType) -> None:
    oracle = TwentyQuestionsOracle.mini()
    played = episode(
        "cat",
        [
            "Is it alive?",  # yes for a cat
            "Is it a hammer?",  # wrong, and contradicts "alive: yes"
            "Is it a lion?",  # wrong, consistent with the answers so far
            "Is it a lion?",  # wrong again, a repeat
            "Tell me more",  # not a question the oracle understands
            "Is it a cat?",
        ],
        solved=True,
    )
    report = bench.turn_report([played], oracle)
    assert report["questions"] == 1
    assert report["wrong_guesses"] == 3
    assert report["contradicting_guesses"] == 1
    assert report["invalid"] == 1
    assert report["repeats"] == 1.0
    assert report["success"] == 1.0 and report["return"] == -5.0


def test_the_scripted_expert_never_contradicts_an_answer(bench: ModuleType) -> None:
    episodes = bench.play(MINI, "expert", 52, 1.0, seed=0)
    report = bench.turn_report(episodes, TwentyQuestionsOracle.mini())
    assert report["success"] == 1.0
    assert report["contradicting_guesses"] == 0.0 and report["repeats"] == 0.0
    assert report["questions"] > 2


def test_critic_report_reads_an_archer_run(
    bench: ModuleType, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from archer_agents.policies.local_policy import LocalPolicy
    from archer_agents.training.algorithms.archer import Archer, ArcherConfig
    from archer_agents.training.trainer import Trainer, TrainerConfig

    policy = LocalPolicy.from_pretrained(tiny_model_dir, seed=0)
    archer = Archer(
        ArcherConfig(critic_steps=2, critic_batch_size=8, actor_steps=0, max_new_tokens=4),
        policy,
    )
    config = TrainerConfig(
        iterations=1,
        episodes_per_iteration=4,
        num_envs=4,
        eval_every=0,
        eval_episodes=2,
        tensorboard=False,
    )
    Trainer(archer, MINI, tmp_path / "run", config).train()
    episodes = bench.play(MINI, "random", 6, 1.0, seed=0)
    oracle = TwentyQuestionsOracle.mini()
    report = bench.critic_report(episodes, str(tmp_path / "run" / "checkpoints"), oracle)
    assert report["checkpoint_step"] == 1.0
    assert report["objects"] == 52.0
    assert 0 <= report["hidden_object_rank_median"] < 52
    assert -1.0 <= report["v_return_correlation"] <= 1.0
