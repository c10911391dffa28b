"""Deploy, record, retrain, hot-swap: the whole loop on a real server, end to end.

A LangChain agent (`load_agent` over the local server, following an adapter
registry whose v0001 is active) plays Twenty Questions through the oracle
tool with an `EpisodeRecorder` attached; the game's rewards come back as
feedback; offline ArCHer trains from the recorded log, starting from v0001's
adapter; the result is saved as v0002 and promoted. The same agent object,
untouched, then samples from v0002: its recorded logprobs are v0002's, not
v0001's. Then `archer train --server` retrains from the same log and promotes
v0003, and `archer deploy rollback`, run in another process, brings v0002
back: the agent follows both.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from serving_helpers import start_local_server
from typer.testing import CliRunner

from archer_agents.cli.app import full_app
from archer_agents.data.episode_log import latest_revisions, read_episodes
from archer_agents.data.schema import Episode, Transition
from archer_agents.formats.prompts import render_messages, render_tool_call
from archer_agents.langchain.agent import load_agent
from archer_agents.langchain.recorder import EpisodeRecorder
from archer_agents.policies.adapters import AdapterRegistry, Deployment
from archer_agents.policies.local_policy import LocalPolicy, LoraSettings
from archer_agents.policies.protocol import SamplingParams
from archer_agents.tools.twenty_questions import TwentyQuestionsOracle, make_twenty_questions_tool
from archer_agents.training.algorithms.bc import BCConfig, behaviour_clone
from archer_agents.training.algorithms.offline_archer import (
    OfflineArcher,
    OfflineArcherConfig,
    train_offline,
)

SECRET = "penguin"
TASK = "Find the secret object."
QUESTION = "Is it a penguin?"
FINAL = "The secret object is a penguin."
SAMPLING = SamplingParams(max_new_tokens=48)
OFFLINE = {
    "critic_hidden_size": 32,
    "critic_lr": 1e-2,
    "critic_steps": 5,
    "critic_batch_size": 16,
    "actor_lr": 3e-2,
    "actor_steps": 3,
    "actor_batch_size": 8,
    "max_new_tokens": 8,
}


@pytest.fixture(scope="module")
def player_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model behaviour-cloned to ask the winning question, then say the answer."""
    policy = LocalPolicy.from_pretrained(tiny_model_dir, seed=0)
    tool = make_twenty_questions_tool(SECRET)
    call = {"name": "ask_question", "args": {"question": QUESTION}, "id": "c"}
    asked = [
        HumanMessage(TASK),
        AIMessage("", tool_calls=[call]),
        ToolMessage("Yes.", tool_call_id="c"),
    ]
    first = render_messages([HumanMessage(TASK)], [tool])
    second = render_messages(asked, [tool])
    said = render_tool_call("ask_question", {"question": QUESTION})
    episode = Episode(
        env_id="test",
        transitions=[
            Transition(observation=first, action=said, reward=0.0, next_observation=second),
            Transition(observation=second, action=FINAL, reward=0.0, next_observation=second),
        ],
    )
    config = BCConfig(steps=60, batch_size=2, learning_rate=1e-2, warmup_steps=5, eval_every=0)
    behaviour_clone(policy, [episode], config)
    return policy.save(tmp_path_factory.mktemp("player") / "model")


def game_reward(messages: list) -> tuple[float, bool]:
    """-1 for each model turn until a question guesses the secret (that one costs 0); won?"""
    oracle = TwentyQuestionsOracle.default()
    reward = 0.0
    for message in messages:
        if isinstance(message, AIMessage):
            questions = [str(c["args"].get("question", "")) for c in message.tool_calls]
            if any(oracle.judge(question, SECRET).solved for question in questions):
                return reward, True
            reward -= 1.0
    return reward, False


def rescore_gap(policy: LocalPolicy, episodes: list[Episode]) -> float:
    """The largest gap between the recorded logprobs and ``policy``'s, over every token."""
    gap = 0.0
    with torch.no_grad():
        for t in (t for e in episodes for t in e.transitions):
            assert t.action_token_ids and t.action_logprobs
            (scores,) = policy.log_probs([t.observation], [t.action_token_ids])
            gap = max(gap, (scores - torch.tensor(t.action_logprobs)).abs().max().item())
    return gap


def test_a_deployed_agent_is_retrained_from_its_own_log_and_follows_each_new_version(
    player_dir: Path, tmp_path: Path
) -> None:
    registry_dir, log = tmp_path / "adapters", tmp_path / "production.jsonl"
    registry = AdapterRegistry(registry_dir)
    first = registry.save(LocalPolicy.from_pretrained(player_dir, lora=LoraSettings(r=8, alpha=16)))
    server = start_local_server(player_dir)
    try:
        deployment = Deployment(registry, server.url, keep=0)
        deployment.promote(first.version)
        recorder = EpisodeRecorder(log)
        agent = load_agent(
            f"{server.url}/v1",
            [make_twenty_questions_tool(SECRET)],
            registry=registry_dir,
            tokenizer=player_dir,
            sampling=SAMPLING,
            callbacks=[recorder],
        )
        outcomes: dict[str | None, tuple[float, bool]] = {}

        def play(games: int, late_feedback: bool = False) -> list[Episode]:
            for _ in range(games):
                reward, won = game_reward(agent.invoke({"messages": [("user", TASK)]})["messages"])
                outcomes[recorder.last_episode_id] = (reward, won)
                if late_feedback:  # written once without its reward, then again with it
                    recorder.flush()
                recorder.feedback(recorder.last_episode_id or "", reward, success=won)
            recorder.drain()  # the recorder writes in the background
            episodes, _ = read_episodes(log)
            return latest_revisions(episodes)[-games:]

        served_first = play(6, late_feedback=True)
        assert {t.policy_version for e in served_first for t in e.transitions} == {"archer-v0001"}
        for episode in served_first:
            assert (episode.total_reward, episode.success) == outcomes[episode.episode_id]
            assert episode.metadata["revision"] == 2
        assert rescore_gap(LocalPolicy.from_pretrained(first.path), served_first) < 1e-4

        # Offline ArCHer from the recorder's log, starting from v0001's adapter.
        policy = LocalPolicy.from_pretrained(first.path, seed=0)
        algorithm = OfflineArcher(OfflineArcherConfig(data=[log], **OFFLINE), policy)
        assert len(algorithm.buffer) == sum(e.num_turns for e in served_first)  # each counted once
        train_offline(algorithm, iterations=3)
        second = registry.save(policy, note="offline ArCHer on production.jsonl")
        promotion = deployment.promote(second.version)  # the agent is not told
        assert second.version == "v0002" and promotion.unloaded == ["archer-v0001"]

        served_second = play(3)
        versions = {t.policy_version for e in served_second for t in e.transitions}
        assert versions == {"archer-v0002"}
        trained = LocalPolicy.from_pretrained(second.path)
        assert rescore_gap(trained, served_second) < 1e-4
        assert rescore_gap(LocalPolicy.from_pretrained(first.path), served_second) > 1e-2

        # `archer train --server` takes the recorder's log as it is and promotes v0003 ...
        run = tmp_path / "retrain"
        settings = [f"{key}={value}" for key, value in OFFLINE.items()]
        settings += [f"data=[{log}]", "trainer.iterations=1", "eval_episodes=1", "num_envs=1"]
        settings += ["tensorboard=false"]
        command = ["train", "--algo", "offline_archer", "--model", str(second.path)]
        command += ["--out", str(run), "--server", server.url, "--registry", str(registry_dir)]
        command += ["--keep", "0", *(item for s in settings for item in ("--set", s))]
        result = CliRunner().invoke(full_app(), command)
        assert result.exit_code == 0, result.output
        assert registry.history == ["v0001", "v0002", "v0003"]
        assert deployment.loaded() == ["archer-v0003"]
        served_third = play(2)
        assert {t.policy_version for e in served_third for t in e.transitions} == {"archer-v0003"}
        third = LocalPolicy.from_pretrained(registry.get("v3").path)
        assert rescore_gap(third, served_third) < 1e-4

        # ... and a rollback made by another process reaches the agent as well.
        rollback = [sys.executable, "-m", "archer_agents.cli", "deploy", "rollback"]
        rollback += ["--registry", str(registry_dir), "--server", server.url, "--keep", "0"]
        done = subprocess.run(rollback, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        served_again = play(2)
        assert {t.policy_version for e in served_again for t in e.transitions} == {"archer-v0002"}
        assert rescore_gap(trained, served_again) < 1e-4
        recorder.close()
        deployment.close()
    finally:
        server.stop()
