"""Offline ArCHer: IQL critic and AWR actor trained from an episode log on disk, no environment."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch

from archer_agents.data.episode_log import EpisodeLogError, EpisodeWriter, read_episodes
from archer_agents.data.schema import Episode, Transition
from archer_agents.environments.questions.game import QuestionGameEnv
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.training import rollout
from archer_agents.training.algorithms.bc import action_token_ids
from archer_agents.training.algorithms.offline_archer import (
    OfflineArcher,
    OfflineArcherConfig,
    offline_transitions,
    train_offline,
)
from archer_agents.training.checkpoint import load_latest, save_checkpoint
from archer_agents.training.losses import awr_actor_loss, iql_critic_loss
from archer_agents.training.rollout import PolicyActor, ScriptedActor, collect, make_env_factory

ENV_ID = "archer/TwentyQuestions-v0"


@pytest.fixture(scope="module")
def scripted_episodes() -> list[Episode]:
    """Expert and random Twenty Questions episodes (4 turns at most): varied returns, no ids."""
    factory = make_env_factory(ENV_ID, max_turns=4)
    expert = collect(factory, ScriptedActor("expert"), 3, num_envs=3, seed=0).episodes
    random = collect(factory, ScriptedActor("random"), 3, num_envs=3, seed=10).episodes
    return expert + random


@pytest.fixture
def episode_log(tmp_path: Path, scripted_episodes: list[Episode]) -> Path:
    """The episodes on disk, ending in a torn line as a crashed writer leaves it."""
    path = tmp_path / "episodes.jsonl"
    with EpisodeWriter(path, fsync=False) as writer:
        writer.write_all(scripted_episodes)
    torn = scripted_episodes[0].model_dump_json()[:57]
    with path.open("a") as handle:
        handle.write(torn)
    return path


def config(log: Path, **overrides: Any) -> OfflineArcherConfig:
    settings: dict[str, Any] = {
        "data": [log],
        "critic_hidden_size": 32,
        "critic_lr": 1e-2,
        "critic_steps": 10,
        "critic_batch_size": 16,
        "actor_lr": 3e-3,
        "actor_steps": 3,
        "actor_batch_size": 8,
        "max_new_tokens": 6,
    }
    return OfflineArcherConfig(**{**settings, **overrides})


def parameters_of(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters() if p.requires_grad]


def moved(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    after = [p.detach() for p in module.parameters() if p.requires_grad]
    return any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.fixture
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to build, reset or step an environment, or to collect, fails the test."""

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("offline training touched the environment")

    monkeypatch.setattr(gym, "make", forbidden)
    monkeypatch.setattr(QuestionGameEnv, "reset", forbidden)
    monkeypatch.setattr(QuestionGameEnv, "step", forbidden)
    monkeypatch.setattr(rollout, "collect", forbidden)


def test_trains_from_a_log_on_disk_with_a_torn_last_line_and_no_environment(
    episode_log: Path,
    scripted_episodes: list[Episode],
    tiny_policy: LocalPolicy,
    no_environment: None,
) -> None:
    algo = OfflineArcher(config(episode_log), tiny_policy)
    assert algo.report.torn_last_line and algo.report.episodes_read == len(scripted_episodes)
    assert len(algo.buffer) == sum(e.num_turns for e in scripted_episodes)
    # Scripted utterances carry no ids: each is scored as its tokens plus eos.
    stored = algo.buffer.sample(5)
    for t in stored:
        assert t.action_token_ids == action_token_ids(tiny_policy.tokenizer, t.action)
        assert t.action_logprobs is None

    policy_before, critic_before = parameters_of(tiny_policy.model), parameters_of(algo.critic)
    history = train_offline(algo, 2)
    assert len(history) == 2 and algo.updates == 2
    assert {"critic/critic_loss", "critic/v_loss", "actor/awr_loss", "actor/weight_mean"} <= set(
        history[-1]
    )
    assert moved(policy_before, tiny_policy.model) and moved(critic_before, algo.critic)
    assert isinstance(algo.actor(), PolicyActor)  # for evaluation only
    algo.observe(scripted_episodes)  # observed episodes never enter the fixed buffer
    assert len(algo.buffer) == sum(e.num_turns for e in scripted_episodes)
    assert OfflineArcher.online is False


def test_iql_critic_and_awr_actor_lower_their_losses_on_a_fixed_batch(
    episode_log: Path, tiny_policy: LocalPolicy
) -> None:
    algo = OfflineArcher(config(episode_log, critic_steps=20), tiny_policy)
    batch = algo.buffer.sample(32)
    observations = [t.observation for t in batch]
    actions = [t.action for t in batch]
    rewards = torch.tensor([t.reward for t in batch])
    dones = torch.tensor([t.done for t in batch])
    with torch.no_grad():
        q, v = algo.critic(observations, actions)
        fixed_advantages = q.min(dim=-1).values - v.min(dim=-1).values

    def losses() -> tuple[float, float]:
        with torch.no_grad():
            q, v = algo.critic(observations, actions)
            critic, _ = iql_critic_loss(
                q,
                v,
                rewards,
                dones,
                algo.target.v([t.next_observation for t in batch]),
                algo.target.q(observations, actions),
                algo.config.gamma,
                algo.config.expectile,
            )
            logp = tiny_policy.log_probs(observations, [t.action_token_ids for t in batch])
            actor, _ = awr_actor_loss(logp, fixed_advantages)
        return critic.item(), actor.item()

    critic_before, actor_before = losses()
    train_offline(algo, 3)
    critic_after, actor_after = losses()
    assert critic_after < 0.5 * critic_before
    assert actor_after < actor_before - 1.0


def test_warm_up_trains_the_critic_alone(episode_log: Path, tiny_policy: LocalPolicy) -> None:
    algo = OfflineArcher(config(episode_log, warmup_iterations=1, critic_steps=2), tiny_policy)
    policy_before = parameters_of(tiny_policy.model)
    first = algo.update(0)
    assert not any(key.startswith("actor/") for key in first)
    assert not moved(policy_before, tiny_policy.model)
    assert "actor/awr_loss" in algo.update(1)
    assert moved(policy_before, tiny_policy.model)


def test_recorded_ids_are_kept_missing_ones_tokenized_and_pending_rewards_left_out(
    tiny_policy: LocalPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    tokenizer = tiny_policy.tokenizer
    sampled = Transition(
        observation="Questions:\n",
        action="Is it red?",
        reward=-1.0,
        next_observation="Questions:\nIs it red? No.\n",
        action_token_ids=[5, 6, 7],
        action_logprobs=[-1.0, -2.0, -3.0],
    )
    plain = sampled.model_copy(update={"action_token_ids": None, "action_logprobs": None})
    done = Episode(env_id=ENV_ID, transitions=[sampled, plain]).finalize()
    pending = Episode(env_id="langchain-agent", source="langchain", transitions=[plain])
    with caplog.at_level(logging.WARNING):
        out = offline_transitions([done, pending], tokenizer)
    assert "1 episode(s) whose reward has not arrived" in caplog.text
    assert len(out) == 2
    assert out[0].action_token_ids == [5, 6, 7] and out[0].action_logprobs == [-1.0, -2.0, -3.0]
    assert out[1].action_token_ids == action_token_ids(tokenizer, "Is it red?")
    assert out[1].action_token_ids[-1] == tokenizer.eos_token_id
    retokenized = offline_transitions([done], tokenizer, retokenize=True)
    assert retokenized[0].action_token_ids == out[1].action_token_ids
    assert retokenized[0].action_logprobs is None


def test_developer_mistakes_name_the_fix(
    tmp_path: Path, episode_log: Path, tiny_policy: LocalPolicy
) -> None:
    with pytest.raises(ValueError, match="set data to one or more JSONL files"):
        OfflineArcherConfig()
    with pytest.raises(ValueError, match="Extra inputs"):
        OfflineArcherConfig(data=[episode_log], expectle=0.9)  # type: ignore[call-arg]
    with pytest.raises(FileNotFoundError, match="check the path"):
        OfflineArcher(config(tmp_path / "missing.jsonl"), tiny_policy)

    foreign = Transition(
        observation="Questions:\n",
        action="Is it red?",
        reward=-1.0,
        next_observation="Questions:\nIs it red? No.\n",
        terminated=True,
        action_token_ids=[10**6],
    )
    path = tmp_path / "foreign.jsonl"
    with EpisodeWriter(path, fsync=False) as writer:
        writer.write(Episode(env_id=ENV_ID, transitions=[foreign]).finalize())
    with pytest.raises(ValueError, match="retokenize: true"):
        OfflineArcher(config(path), tiny_policy)
    algo = OfflineArcher(config(path, retokenize=True, critic_steps=1), tiny_policy)
    assert algo.buffer.sample(1)[0].action_token_ids == action_token_ids(
        tiny_policy.tokenizer, "Is it red?"
    )


def test_a_bad_line_in_the_middle_stops_unless_skipped(
    tmp_path: Path, scripted_episodes: list[Episode], tiny_policy: LocalPolicy
) -> None:
    path = tmp_path / "bad.jsonl"
    with EpisodeWriter(path, fsync=False) as writer:
        writer.write(scripted_episodes[0])
    with path.open("a") as handle:
        handle.write("{not json}\n")
    with EpisodeWriter(path, fsync=False) as writer:
        writer.write(scripted_episodes[1])
    with pytest.raises(EpisodeLogError, match=r"bad.jsonl:2"):
        OfflineArcher(config(path), tiny_policy)
    algo = OfflineArcher(config(path, skip_bad_lines=True), tiny_policy)
    assert len(algo.report.bad_lines) == 1 and algo.report.episodes_read == 2


def test_state_round_trip_resumes_identically(
    episode_log: Path, tiny_policy: LocalPolicy, tiny_model_dir: Path, tmp_path: Path
) -> None:
    settings = config(episode_log, critic_steps=3, actor_steps=1)
    algo = OfflineArcher(settings, tiny_policy)
    algo.update(0)
    save_checkpoint(tmp_path / "ckpt", algo.state_dict(), step=1)
    checkpoint = load_latest(tmp_path / "ckpt")  # weights_only=True, as the trainer loads
    assert checkpoint is not None

    other = OfflineArcher(settings, LocalPolicy.from_pretrained(tiny_model_dir, seed=5))
    other.load_state_dict(checkpoint.state)
    for name, value in algo.state_dict().items():
        if isinstance(value, dict) and name in ("critic", "target"):
            for key, tensor in value.items():
                assert torch.equal(tensor, other.state_dict()[name][key]), f"{name}.{key}"
    assert other.updates == algo.updates == 1
    assert other.update(1) == algo.update(1)

    fewer = tmp_path / "fewer.jsonl"
    fewer.write_text(episode_log.read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="resume with the same data files"):
        OfflineArcher(config(fewer), tiny_policy).load_state_dict(checkpoint.state)


# ------------------------------------------------------- offline, then online ---


def untimed(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not k.startswith("time/")}


def offline_then_online_config(log: Path, **overrides: Any) -> Any:
    from archer_agents.training.algorithms.archer import ArcherConfig
    from archer_agents.training.algorithms.offline_then_online import OfflineThenOnlineConfig

    online = ArcherConfig(
        critic_steps=2,
        critic_batch_size=8,
        critic_lr=1e-2,
        actor_steps=1,
        actor_batch_size=4,
        micro_batch_size=4,
        actor_lr=1e-3,
        warmup_iterations=1,
        max_new_tokens=6,
    )
    settings: dict[str, Any] = {
        "offline_iterations": 2,
        "offline": config(log, critic_steps=2, actor_steps=1),
        "online": online,
    }
    return OfflineThenOnlineConfig(**{**settings, **overrides})


def test_offline_then_online_hands_the_same_policy_and_critic_to_online_archer(
    episode_log: Path, tiny_policy: LocalPolicy, tmp_path: Path
) -> None:
    from archer_agents.training.algorithms.offline_then_online import OfflineThenOnline
    from archer_agents.training.run_log import read_metrics
    from archer_agents.training.trainer import Trainer, TrainerConfig

    algo = OfflineThenOnline(offline_then_online_config(episode_log), tiny_policy)
    critic, target = algo.offline.critic, algo.offline.target
    trainer = Trainer(
        algo,
        ENV_ID,
        tmp_path / "run",
        TrainerConfig(
            iterations=4,
            episodes_per_iteration=2,
            num_envs=2,
            eval_every=0,
            eval_episodes=2,
            checkpoint_every=2,
            tensorboard=False,
        ),
        env_factory=make_env_factory(ENV_ID, max_turns=2),
    )
    policy_after_offline: list[torch.Tensor] = []

    def on_iteration(iteration: int, record: dict[str, float]) -> None:
        if iteration == 2:
            policy_after_offline.extend(parameters_of(tiny_policy.model))

    trainer.on_iteration = on_iteration
    result = trainer.train()
    records = [r for r in read_metrics(trainer.metrics_path) if "phase/online" in r]
    assert [r["phase/online"] for r in records] == [0.0, 0.0, 1.0, 1.0]
    assert [r["episodes"] for r in records] == [0, 0, 2, 4]  # no play while offline
    assert "actor/awr_loss" in records[0]  # offline: IQL + AWR
    assert records[2]["actor/active"] == 0.0 and records[3]["actor/active"] == 1.0  # warm-up
    assert result.counters.episodes == 4

    assert algo.online and algo.archer is not None
    assert algo.archer.policy is tiny_policy
    assert algo.archer.critic is critic and algo.archer.target is target
    assert (
        len(algo.archer.buffer) == 8
    )  # its own rollouts only: 2 iterations x 2 episodes x 2 turns
    assert moved(policy_after_offline, tiny_policy.model)  # online ArCHer kept training it


def test_offline_then_online_resumes_in_either_phase(
    episode_log: Path, tiny_policy: LocalPolicy, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from archer_agents.training.algorithms.offline_then_online import OfflineThenOnline

    settings = offline_then_online_config(episode_log)
    algo = OfflineThenOnline(settings, tiny_policy)
    algo.update(1)
    for step, phase_online in ((1, False), (3, True)):
        if step == 3:
            algo.update(2)
            algo.observe(collect(make_env_factory(ENV_ID, max_turns=2), algo.actor(), 2).episodes)
        save_checkpoint(tmp_path / str(step), algo.state_dict(), step=step)
        checkpoint = load_latest(tmp_path / str(step))
        assert checkpoint is not None
        other = OfflineThenOnline(settings, LocalPolicy.from_pretrained(tiny_model_dir, seed=9))
        other.load_state_dict(checkpoint.state)
        assert other.online is phase_online and other.offline_updates == algo.offline_updates
        assert untimed(other.update(step + 1)) == untimed(algo.update(step + 1))


def test_offline_then_online_keeps_one_critic_shape(episode_log: Path) -> None:
    from archer_agents.training.algorithms.archer import ArcherConfig

    with pytest.raises(ValueError, match="set these under offline only"):
        offline_then_online_config(episode_log, online=ArcherConfig(critic_hidden_size=8))


def test_archer_train_runs_offline_then_online_from_overrides(
    episode_log: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from archer_agents.cli.app import UserError
    from archer_agents.cli.train import train

    small = [
        "offline.critic_steps=1",
        "offline.critic_batch_size=8",
        "offline.actor_batch_size=4",
        "offline.max_new_tokens=6",
        "online.critic_steps=1",
        "online.critic_batch_size=8",
        "online.actor_batch_size=4",
        "online.micro_batch_size=4",
        "online.warmup_iterations=0",
        "online.max_new_tokens=6",
        "iterations=2",
        "episodes_per_iteration=2",
        "num_envs=2",
        "eval_episodes=2",
        "tensorboard=false",
    ]
    result = train(
        algo="offline_then_online",
        env_id=ENV_ID,
        model=str(tiny_model_dir),
        out=tmp_path / "run",
        overrides=[f"offline.data=[{episode_log}]", "offline_iterations=1", *small],
    )
    assert result.counters.iteration == 2 and result.counters.episodes == 2  # one online iteration
    with pytest.raises(UserError, match="set data to one or more JSONL files"):
        train(
            algo="offline_archer",
            env_id=ENV_ID,
            model=str(tiny_model_dir),
            out=tmp_path / "run2",
            overrides=["iterations=1"],
        )


def test_archer_train_offline_takes_episode_logs_directly(
    episode_log: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from archer_agents.cli.app import full_app
    from archer_agents.training.run_log import read_metrics

    settings = ["critic_steps=1", "critic_batch_size=8", "actor_batch_size=4", "max_new_tokens=6"]
    loop = ["iterations=2", "eval_every=2", "eval_episodes=2", "num_envs=2", "tensorboard=false"]
    args = ["train", "--offline", "--episodes", str(episode_log), "--env", ENV_ID]
    args += ["--model", str(tiny_model_dir), "--out", str(tmp_path / "run")]
    for override in settings + loop:
        args += ["--set", override]
    result = CliRunner().invoke(full_app(), args)
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["algorithm"] == "offline_archer", run
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["iteration"] for r in records][-1] == 2 and "eval/return_mean" in records[-1]
    assert (
        not (tmp_path / "run" / "episodes.jsonl").exists()
        or not (tmp_path / "run" / "episodes.jsonl").read_text()
    )  # offline: nothing collected


def test_episodes_rewritten_by_late_feedback_count_once_in_their_latest_revision(
    tmp_path: Path, tiny_policy: LocalPolicy
) -> None:
    from archer_agents.langchain.agent import load_agent
    from archer_agents.langchain.recorder import EpisodeRecorder
    from archer_agents.policies.protocol import SamplingParams
    from archer_agents.tools.twenty_questions import make_twenty_questions_tool

    log = tmp_path / "production.jsonl"
    recorder = EpisodeRecorder(log, wait_for_feedback=False)  # each run written at once, unrewarded
    agent = load_agent(
        tiny_policy,
        [make_twenty_questions_tool("penguin")],
        sampling=SamplingParams(max_new_tokens=6),
        callbacks=[recorder],
    )
    ids = []
    for _ in range(3):
        agent.invoke({"messages": [("user", "Find the secret object.")]})
        ids.append(recorder.last_episode_id or "")
    recorder.feedback(ids[0], -2.0, success=False)  # revision 2
    recorder.feedback(ids[1], -5.0, success=False)  # revision 2 ...
    recorder.feedback(ids[1], -1.0, success=True)  # ... corrected by revision 3
    recorder.close()  # ids[2] never gets its reward
    lines, _ = read_episodes(log)
    assert len(lines) == 6
    rewarded = {e.episode_id: e for e in lines if e.metadata["revision"] > 1}

    algo = OfflineArcher(config(log), tiny_policy)
    stored = algo.buffer.in_order()
    assert len(stored) == rewarded[ids[0]].num_turns + rewarded[ids[1]].num_turns
    assert sum(t.reward for t in stored) == pytest.approx(-2.0 + -1.0)
    assert algo.report.episodes_read == 6
