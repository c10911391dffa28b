"""benchmarks/oracle_actor.py: ArCHer's actor against a critic that knows the wasted turns."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch
from benchmark_scripts import load_benchmark

from archer_agents.data.schema import Episode, Transition
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.tools.twenty_questions import TwentyQuestionsOracle
from archer_agents.training.algorithms.archer import ArcherConfig
from archer_agents.training.algorithms.bc import action_token_ids

MINI = "archer/TwentyQuestionsMini-v0"
START = "Questions:\n"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("oracle_actor")


@pytest.fixture(scope="module")
def critic(bench: ModuleType):
    return bench.RuleCritic(TwentyQuestionsOracle.mini())


def test_the_rule_critic_marks_exactly_the_turns_the_history_shows_are_wasted(
    critic,
) -> None:
    alive = f"{START}Is it alive? Yes.\n"
    after_cat = f"{alive}Is it a cat? No.\n"
    cases = [
        (alive, "Is it a cat?", 0.0),  # a guess the answers allow
        (alive, "Is it made of metal?", 0.0),  # a new question
        (alive, "Is it a hammer?", -1.0),  # a hammer is not alive
        (alive, "Is it alive?", -1.0),  # asked already
        (alive, "Tell me more", -1.0),  # not a question the game understands
        (after_cat, "Is it a cat?", -1.0),  # guessed already, and ruled out
        (after_cat, "Is it a lion?", 0.0),
        (START, "Is it a hammer?", 0.0),  # nothing ruled out yet
    ]
    q = critic.q([c[0] for c in cases], [c[1] for c in cases])
    assert q.shape == (len(cases), 2)
    assert q[:, 0].tolist() == [c[2] for c in cases]
    assert torch.equal(q[:, 0], q[:, 1])
    assert torch.equal(critic.v([alive, START]), torch.zeros(2, 2))

    said, consistent = critic.history(after_cat)
    secrets = critic.secrets
    assert said == ["Is it alive?", "Is it a cat?"]
    assert not consistent[secrets.index("cat")] and not consistent[secrets.index("hammer")]
    assert consistent[secrets.index("lion")]


def turn(observation: str, action: str, answer: str, policy: LocalPolicy) -> Transition:
    return Transition(
        observation=observation,
        action=action,
        reward=-1.0,
        next_observation=f"{observation}{action} {answer}\n",
        action_token_ids=action_token_ids(policy.tokenizer, action),
    )


def test_the_actor_steps_on_the_oracle_advantage_and_no_critic_step_happens(
    bench: ModuleType, critic, tiny_policy: LocalPolicy
) -> None:
    alive = f"{START}Is it alive? Yes.\n"
    episode = Episode(
        env_id=MINI,
        task_id="cat",
        transitions=[
            turn(START, "Is it alive?", "Yes.", tiny_policy),
            turn(alive, "Is it a hammer?", "No.", tiny_policy),  # wasted
            turn(f"{alive}Is it a hammer? No.\n", "Is it alive?", "Yes.", tiny_policy),  # wasted
            turn(
                f"{alive}Is it a hammer? No.\nIs it alive? Yes.\n",
                "Is it a lion?",
                "No.",
                tiny_policy,
            ),
        ],
    )
    config = ArcherConfig(
        advantage_estimator="q",
        actor_states="latest",
        actor_steps=1,
        actor_batch_size=4,
        warmup_iterations=0,
        critic_steps=1,
        actor_lr=1e-2,
    )
    archer = bench.ActorOnlyArcher(config, tiny_policy, critic=critic, target=critic)
    before = {n: p.detach().clone() for n, p in tiny_policy.model.named_parameters()}
    observations = [t.observation for t in episode.transitions]
    ids = [t.action_token_ids or [] for t in episode.transitions]

    def wasted_logp() -> float:
        with torch.no_grad():
            scored = tiny_policy.log_probs_packed(observations, ids)
        return float(scored[1].sum() + scored[2].sum())

    start = wasted_logp()
    archer.observe([episode])
    metrics = archer.update(1)

    assert not any(key.startswith("critic/") and key != "critic/buffer_size" for key in metrics)
    assert metrics["actor/raw_advantage_mean"] == pytest.approx(-0.5)  # 2 of 4 turns wasted
    assert archer.critic_updates == 0 and archer.actor_updates == 1
    assert wasted_logp() < start  # the actor pushed the two wasted utterances down
    assert any(not torch.equal(before[n], p) for n, p in tiny_policy.model.named_parameters())
