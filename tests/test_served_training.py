"""Training with rollouts on a server: each actor update is a new adapter version, hot-loaded.

A real local server samples the rollouts; ArCHer trains a LoRA adapter on the
tiny model locally; `ServedAlgorithm` saves, loads and routes each update.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from serving_helpers import start_local_server
from typer.testing import CliRunner

from archer_agents.data.episode_log import read_episodes
from archer_agents.policies.adapters import AdapterRegistry, Deployment
from archer_agents.policies.local_policy import LocalPolicy, LoraSettings
from archer_agents.policies.server_policy import ServerPolicy
from archer_agents.training.algorithms.archer import Archer, ArcherConfig
from archer_agents.training.algorithms.chai import Chai, ChaiActor, ChaiConfig
from archer_agents.training.rollout import Actor, PolicyActor, ScriptedActor, make_env_factory
from archer_agents.training.run_log import read_metrics
from archer_agents.training.served import ServedAlgorithm, holds_weights
from archer_agents.training.trainer import Trainer, TrainerConfig

ENV_ID = "archer/TwentyQuestions-v0"
ARCHER = {
    "critic_steps": 1,
    "critic_batch_size": 8,
    "actor_steps": 2,
    "actor_batch_size": 8,
    "warmup_iterations": 0,
    "max_new_tokens": 6,
    "critic_lr": 1e-3,
    "actor_lr": 3e-2,
}
TRAINER = {
    "episodes_per_iteration": 3,
    "num_envs": 3,
    "eval_every": 0,
    "eval_episodes": 2,
    "checkpoint_every": 1,
    "tensorboard": False,
}


def lora_policy(model_dir: Path) -> LocalPolicy:
    return LocalPolicy.from_pretrained(model_dir, lora=LoraSettings(r=8, alpha=16), seed=0)


def served_trainer(model_dir: Path, url: str, run_dir: Path, iterations: int) -> Trainer:
    served = ServedAlgorithm.connect(
        Archer(ArcherConfig(**ARCHER), lora_policy(model_dir)), url, run_dir / "adapters", keep=0
    )
    return Trainer(
        served,
        ENV_ID,
        run_dir,
        TrainerConfig(iterations=iterations, **TRAINER),
        env_factory=make_env_factory(ENV_ID, max_turns=3),
    )


def rescore(policy: LocalPolicy, episodes) -> float:
    """The largest gap between recorded logprobs and ``policy``'s, over every turn, on the
    prompt ids each turn was sampled from."""
    gap = 0.0
    with torch.no_grad():
        for t in (t for e in episodes for t in e.transitions):
            (scores,) = policy.log_probs([t.prompt_token_ids], [t.action_token_ids])
            gap = max(gap, (scores - torch.tensor(t.action_logprobs)).abs().max().item())
    return gap


def test_each_update_is_served_as_a_new_version_and_a_resume_continues_the_numbering(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    server = start_local_server(tiny_model_dir)
    try:
        trainer = served_trainer(tiny_model_dir, server.url, run_dir, iterations=2)
        trainer.train()
        registry = AdapterRegistry(run_dir / "adapters")
        assert [v.version for v in registry.versions()] == ["v0001", "v0002", "v0003"]
        assert registry.history == ["v0001", "v0002", "v0003"]
        with Deployment(registry, server.url) as deployment:
            assert deployment.loaded() == ["archer-v0003"]  # keep=0: older ones unloaded

        episodes, _ = read_episodes(run_dir / "episodes.jsonl")
        first, second = episodes[:3], episodes[3:]
        assert {t.policy_version for e in first for t in e.transitions} == {"archer-v0001"}
        assert {t.policy_version for e in second for t in e.transitions} == {"archer-v0002"}
        # The server sampled iteration 2 with the weights of the first update, not the start.
        assert rescore(LocalPolicy.from_pretrained(registry.get("v2").path), second) < 1e-4
        assert rescore(LocalPolicy.from_pretrained(registry.get("v1").path), second) > 1e-2
        records = [r for r in read_metrics(run_dir / "metrics.jsonl") if "serve/version" in r]
        assert [r["serve/version"] for r in records] == [2.0, 3.0]
        assert all(r["serve/swap_s"] >= r["serve/load_s"] > 0 for r in records)
        trainer.algorithm.close()  # type: ignore[attr-defined]

        # A restarted server holds nothing; the resumed run serves the checkpoint's weights
        # (the active version holds them: no new version) and numbers on from there.
        server.stop()
        server = start_local_server(tiny_model_dir)
        resumed = served_trainer(tiny_model_dir, server.url, run_dir, iterations=3)
        resumed.train(resume=True)
        assert [v.version for v in registry.versions()][-1] == "v0004"
        assert registry.history == ["v0001", "v0002", "v0003", "v0004"]
        episodes, _ = read_episodes(run_dir / "episodes.jsonl")
        third = episodes[6:]
        assert len(third) == 3
        assert {t.policy_version for e in third for t in e.transitions} == {"archer-v0003"}
        assert rescore(LocalPolicy.from_pretrained(registry.get("v3").path), third) < 1e-4
        resumed.algorithm.close()  # type: ignore[attr-defined]
    finally:
        server.stop()


def test_a_version_holds_the_weights_it_was_saved_from_and_no_others(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    registry = AdapterRegistry(tmp_path / "reg")
    policy = lora_policy(tiny_model_dir)
    saved = registry.save(policy)
    assert holds_weights(saved, policy)
    assert holds_weights(saved, LocalPolicy.from_pretrained(saved.path))
    with torch.no_grad():
        policy.trainable_parameters()[0].add_(1e-3)
    assert not holds_weights(saved, policy)
    wider = LocalPolicy.from_pretrained(tiny_model_dir, lora=LoraSettings(r=4, alpha=16))
    assert not holds_weights(saved, wider)


def test_module_names_in_another_order_are_the_same_adapter(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # PEFT writes target_modules in the process's string-hash order, so a reloaded
    # adapter may list them differently (PYTHONHASHSEED=10 did, before the fix).
    import json

    policy = lora_policy(tiny_model_dir)
    saved = AdapterRegistry(tmp_path / "reg").save(policy)
    config_path = saved.path / "adapter_config.json"
    config = json.loads(config_path.read_text())
    for order in (sorted, lambda names: sorted(names, reverse=True)):
        config["target_modules"] = order(config["target_modules"])
        config_path.write_text(json.dumps(config))
        assert holds_weights(saved, policy)
    config["target_modules"] = config["target_modules"][:-1]  # one module fewer differs
    config_path.write_text(json.dumps(config))
    assert not holds_weights(saved, policy)


class ScriptedArcher(Archer):
    """ArCHer that acts with the scripted expert: its actor is no sampler of its policy."""

    def actor(self) -> Actor:
        return ScriptedActor("expert")


def test_what_cannot_be_served_is_refused_and_chai_ranks_the_servers_candidates(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    nowhere = "http://127.0.0.1:9"
    rollouts = ServerPolicy(nowhere, "tiny", tiny_model_dir)
    deployment = Deployment(AdapterRegistry(tmp_path / "reg"), nowhere)
    full = Archer(ArcherConfig(**ARCHER), LocalPolicy.from_pretrained(tiny_model_dir))
    with pytest.raises(ValueError, match="no LoRA adapter to hot-load.*--lora"):
        ServedAlgorithm(full, rollouts, deployment)
    scripted = ScriptedArcher(ArcherConfig(**ARCHER), lora_policy(tiny_model_dir))
    with pytest.raises(ValueError, match="ScriptedActor.*without a server"):
        ServedAlgorithm(scripted, rollouts, deployment)

    server = start_local_server(tiny_model_dir)
    try:
        chai = Chai(
            ChaiConfig(critic_hidden_size=16, max_new_tokens=4), lora_policy(tiny_model_dir)
        )
        served = ServedAlgorithm.connect(chai, server.url, tmp_path / "chai", keep=0)
        actor: Any = served.actor()
        assert isinstance(actor, ChaiActor) and actor.policy is served.server_policy
        assert actor.critic is chai.target and actor.num_candidates == 5
        (generation,) = actor.act([0], ["Questions:\n"])
        assert generation.policy_version == "archer-v0001"
        online = ServedAlgorithm.connect(
            Archer(ArcherConfig(**ARCHER), lora_policy(tiny_model_dir)), server.url, tmp_path / "a"
        )
        sampler: Any = online.actor()
        assert isinstance(sampler, PolicyActor) and sampler.policy is online.server_policy
        assert sampler.sampling == online.algorithm.sampling  # type: ignore[attr-defined]
        served.close()
        online.close()
    finally:
        server.stop()


def test_archer_train_on_a_server_from_the_command_line(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from archer_agents.cli.app import full_app

    runner = CliRunner()
    out = tmp_path / "run"
    args = ["train", "--algo", "archer", "--env", ENV_ID, "--model", str(tiny_model_dir)]
    args += ["--out", str(out), "--set", "trainer.iterations=1", "--set", "max_new_tokens=4"]
    args += ["--set", "episodes_per_iteration=2", "--set", "num_envs=2"]
    args += ["--set", "eval_episodes=2", "--set", "critic_steps=1", "--set", "tensorboard=false"]
    args += ["--set", "critic_batch_size=4", "--set", "actor_batch_size=4"]
    args += ["--set", "warmup_iterations=0"]

    result = runner.invoke(full_app(), [*args, "--server", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "--lora" in result.output  # full fine-tuning
    result = runner.invoke(full_app(), [*args, "--registry", str(tmp_path / "reg")])
    assert result.exit_code == 2 and "needs --server" in result.output
    result = runner.invoke(full_app(), [*args, "--lora", "--server", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "cannot reach the server" in result.output

    server = start_local_server(tiny_model_dir)
    try:
        result = runner.invoke(full_app(), [*args, "--lora", "--server", server.url, "--keep", "0"])
        assert result.exit_code == 0, result.output
        assert "serves archer-v0002" in " ".join(result.output.split())
        registry = AdapterRegistry(out / "adapters")
        assert registry.history == ["v0001", "v0002"]
        episodes, _ = read_episodes(out / "episodes.jsonl")
        assert {t.policy_version for e in episodes for t in e.transitions} == {"archer-v0001"}
    finally:
        server.stop()
