"""Training a chat-template model on chat-format episodes: the ids trained on are the ids seen.

A tiny Qwen2 model (Hermes tool calls, ChatML template) records SupportSim's
scripted expert in its own format (`ChatScriptedActor`), is behaviour-cloned on
exactly those prompt and reply ids, and trains with ArCHer through the
`Trainer`, which plays it in chat form (`chat_env_factory`, `chat_actor_for`).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import gymnasium as gym
import pytest
import torch

import archer_agents.environments  # noqa: F401  (registers the archer ids)
from archer_agents.formats.conversation import ChatTemplate
from archer_agents.formats.tool_formats import HERMES
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import SamplingParams, policy_prompt
from archer_agents.training.algorithms.archer import Archer
from archer_agents.training.algorithms.archer_config import ArcherConfig
from archer_agents.training.algorithms.bc import BCConfig, behaviour_clone, encoded_pairs
from archer_agents.training.chat_rollout import (
    ChatPolicyActor,
    ChatScriptedActor,
    chat_actor_for,
    chat_env_factory,
    in_env_format,
)
from archer_agents.training.rollout import PolicyActor, ScriptedActor, collect
from archer_agents.training.trainer import Trainer
from archer_agents.training.trainer_config import TrainerConfig

SUPPORT = {"size": "small", "n_train": 8, "n_test": 4}


def support(**kwargs):
    return gym.make("archer/SupportSim-v0", **SUPPORT, **kwargs)


@pytest.fixture(scope="module")
def qwen(qwen2_chat_dir: Path) -> LocalPolicy:
    return LocalPolicy.from_pretrained(qwen2_chat_dir, seed=0)


@pytest.fixture(scope="module")
def expert_chat_episodes(qwen: LocalPolicy):
    factory = chat_env_factory(support, qwen.tokenizer)
    actor = ChatScriptedActor("expert", qwen.tokenizer, seed=0)
    return collect(factory, actor, 6, num_envs=3, seed=0).episodes


def test_the_environment_reads_the_models_format_and_other_actors_stay(qwen) -> None:
    factory = chat_env_factory(support, qwen.tokenizer)
    assert factory().unwrapped.tool_format is HERMES
    game = chat_env_factory(lambda: gym.make("archer/TwentyQuestionsMini-v0"), qwen.tokenizer)
    assert game().unwrapped.spec.id == "archer/TwentyQuestionsMini-v0"  # not a tool env: as is
    sampling = SamplingParams(max_new_tokens=4)
    assert isinstance(chat_actor_for(PolicyActor(qwen, sampling)), ChatPolicyActor)
    scripted = ScriptedActor("expert")
    assert chat_actor_for(scripted) is scripted


def test_a_scripted_call_is_written_in_the_environments_format(qwen) -> None:
    env = chat_env_factory(support, qwen.tokenizer)().unwrapped
    env.reset(seed=0)
    text = in_env_format(env, 'respond(message="Hi, your email?")')
    assert text.startswith("<tool_call>") and text.endswith("</tool_call>")
    payload = json.loads(text.removeprefix("<tool_call>").removesuffix("</tool_call>"))
    assert payload == {"name": "respond", "arguments": {"message": "Hi, your email?"}}
    assert in_env_format(env, "just words") == "just words"


def test_the_expert_plays_as_well_in_chat_form(qwen, expert_chat_episodes) -> None:
    text = collect(support, ScriptedActor("expert", seed=0), 6, num_envs=3, seed=0).episodes
    assert [e.success for e in expert_chat_episodes] == [e.success for e in text]
    assert any(e.success for e in expert_chat_episodes)
    im_end = qwen.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for episode in expert_chat_episodes:
        for t in episode.transitions:
            assert t.action.startswith("<tool_call>")
            assert t.action_token_ids[-1] == im_end and t.action_logprobs is None
            decoded = qwen.tokenizer.decode(t.action_token_ids[:-1])
            assert decoded == t.action
        for before, after in itertools.pairwise(episode.transitions):
            head = [*before.prompt_token_ids, *before.action_token_ids]
            assert after.prompt_token_ids[: len(head)] == head


def test_the_first_prompt_is_the_models_template(qwen, expert_chat_episodes) -> None:
    episode = expert_chat_episodes[0]
    env = chat_env_factory(support, qwen.tokenizer)().unwrapped
    env.reset(seed=episode.seed, options={"split": "train", "task_id": episode.task_id})
    template = ChatTemplate(qwen.tokenizer, env.tool_specs)
    assert episode.transitions[0].prompt_token_ids == template.prompt_ids(env.chat_messages())
    text = template.render(env.chat_messages(), add_generation_prompt=True)
    assert "<tools>" in text and text.endswith("<|im_start|>assistant\n")


def test_behaviour_cloning_trains_on_the_recorded_ids(qwen2_chat_dir, expert_chat_episodes):
    policy = LocalPolicy.from_pretrained(qwen2_chat_dir, seed=0)
    pairs = encoded_pairs(expert_chat_episodes, policy.tokenizer)
    first = expert_chat_episodes[0].transitions[0]
    assert pairs[0] == (tuple(first.prompt_token_ids), first.action_token_ids)
    retokenized = encoded_pairs(expert_chat_episodes, policy.tokenizer, retokenize=True)
    assert retokenized[0][0] == first.observation  # the project's text format instead
    prompts = [p for p, _ in pairs[:8]]
    ids = [a for _, a in pairs[:8]]

    def loss() -> float:
        with torch.no_grad():
            return float(-torch.cat(policy.log_probs(prompts, ids)).mean())

    before = loss()
    config = BCConfig(steps=30, batch_size=8, learning_rate=3e-3, warmup_steps=0, packed=True)
    behaviour_clone(policy, expert_chat_episodes, config)
    assert loss() < before - 0.5


def test_packed_scoring_chains_chat_prompts(qwen, expert_chat_episodes) -> None:
    turns = expert_chat_episodes[0].transitions
    prompts = [policy_prompt(t) for t in turns]
    ids = [t.action_token_ids for t in turns]
    with torch.no_grad():
        one_by_one = qwen.log_probs(prompts, ids)
        packed = qwen.log_probs_packed(prompts, ids)
    for a, b in zip(one_by_one, packed, strict=True):
        assert torch.allclose(a, b, atol=1e-4)


def test_archer_trains_a_chat_model_in_chat_form(qwen2_chat_dir: Path, tmp_path: Path) -> None:
    policy = LocalPolicy.from_pretrained(qwen2_chat_dir, seed=0)
    config = ArcherConfig(
        critic_steps=1,
        critic_batch_size=4,
        actor_steps=1,
        actor_batch_size=8,
        warmup_iterations=0,
        max_new_tokens=12,
    )
    archer = Archer(config, policy)
    trainer = Trainer(
        archer,
        "archer/SupportSim-v0",
        tmp_path / "run",
        TrainerConfig(
            iterations=1,
            episodes_per_iteration=2,
            num_envs=2,
            eval_every=0,
            eval_episodes=1,
            checkpoint_every=0,
            tensorboard=False,
        ),
        env_factory=support,
    )
    trainer.train()
    episodes = [t for e in archer._latest for t in e]
    assert episodes
    for t in episodes:
        assert t.prompt_token_ids and t.action_token_ids and t.action_logprobs
        assert policy_prompt(t) == tuple(t.prompt_token_ids)
    assert trainer.env_factory().unwrapped.tool_format is HERMES
    assert archer.actor_updates == 1 and archer.critic_updates >= 1


def test_the_cli_records_an_expert_in_a_models_format_and_clones_it(
    qwen2_chat_dir: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from archer_agents.cli.app import app
    from archer_agents.data.episode_log import read_episodes

    log = tmp_path / "expert.jsonl"
    env_args = ["--env-arg", "size=small", "--env-arg", "n_train=4", "--env-arg", "n_test=4"]
    rollout = [
        "rollout", "archer/SupportSim-v0", "--policy", "expert", "--episodes", "2",
        "--num-envs", "2", "--out", str(log), "--chat-model", str(qwen2_chat_dir), *env_args,
    ]  # fmt: skip
    result = CliRunner().invoke(app, rollout)
    assert result.exit_code == 0, result.output
    episodes, _ = read_episodes(log)
    turns = [t for e in episodes for t in e.transitions]
    assert turns and all(t.action.startswith("<tool_call>") for t in turns)
    assert all(t.prompt_token_ids and t.action_token_ids for t in turns)
    assert any(e.success for e in episodes)

    out = tmp_path / "cloned"
    bc = ["bc", str(log), "--model", str(qwen2_chat_dir), "--out", str(out), "--steps", "3",
          "--batch-size", "4", "--warmup-steps", "0", "--lora"]  # fmt: skip
    result = CliRunner().invoke(app, bc)
    assert result.exit_code == 0, result.output
    assert (out / "adapter_config.json").is_file()
    refused = CliRunner().invoke(app, ["rollout", "archer/SupportSim-v0", "--policy", str(out),
                                       "--chat-model", str(qwen2_chat_dir), *env_args])  # fmt: skip
    assert refused.exit_code != 0 and "scripted" in refused.output


def test_an_actor_that_only_reads_text_refuses_a_chat_model(qwen) -> None:
    from archer_agents.training.algorithms.chai import ChaiActor

    ranking = ChaiActor(qwen, None, 2, SamplingParams(max_new_tokens=4))  # ranks text candidates
    with pytest.raises(ValueError, match="chat template"):
        chat_actor_for(ranking)
