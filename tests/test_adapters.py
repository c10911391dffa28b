"""Adapter versions: the registry on disk, and hot swaps on a running local server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from serving_helpers import OBSERVATIONS, start_local_server
from typer.testing import CliRunner

from archer_agents.policies.adapters import AdapterRegistry, Deployment
from archer_agents.policies.local_policy import LocalPolicy, LoraSettings
from archer_agents.policies.protocol import SamplingParams
from archer_agents.policies.server_policy import ServerPolicy


@pytest.fixture
def trainee(tiny_model_dir: Path) -> LocalPolicy:
    return LocalPolicy.from_pretrained(tiny_model_dir, lora=LoraSettings(r=8, alpha=16), seed=0)


def test_versions_are_numbered_and_carry_their_metadata(tmp_path, trainee, tiny_model_dir) -> None:
    registry = AdapterRegistry(tmp_path / "reg")
    assert registry.versions() == [] and registry.active is None
    first = registry.save(trainee, note="start", metrics={"success": 0.25})
    second = registry.save(trainee)
    assert [v.version for v in registry.versions()] == ["v0001", "v0002"]
    assert first.path == tmp_path / "reg" / "versions" / "v0001"
    assert (first.path / "adapter_config.json").is_file()
    assert first.base_model == str(tiny_model_dir)
    again = AdapterRegistry(tmp_path / "reg").get("1")
    assert again.note == "start" and again.metrics == {"success": 0.25}
    assert registry.get("v2") == registry.get("v0002") == second
    assert registry.served_name("v2") == "archer-v0002"
    assert registry.version_of("archer-v0002") == "v0002"
    assert registry.version_of("tiny") is None and registry.version_of("archer-x") is None
    with pytest.raises(KeyError, match="v0001, v0002"):
        registry.get("v9")
    with pytest.raises(ValueError, match="not a version"):
        registry.get("latest")
    assert not list((tmp_path / "reg" / "versions").glob(".staging-*"))


def test_promotion_history_survives_reopening_and_rolls_back(tmp_path, trainee) -> None:
    registry = AdapterRegistry(tmp_path / "reg", name="agent")
    for _ in range(3):
        registry.save(trainee)
    registry.set_active("v1")
    registry.set_active("v3")
    reopened = AdapterRegistry(tmp_path / "reg", name="agent")
    assert reopened.history == ["v0001", "v0003"]
    assert reopened.active is not None and reopened.active.version == "v0003"
    assert reopened.pop_active().version == "v0001"
    with pytest.raises(ValueError, match="no earlier promoted version"):
        reopened.pop_active()
    with pytest.raises(ValueError, match="is the registry 'agent'"):
        AdapterRegistry(tmp_path / "reg")
    with pytest.raises(ValueError, match="letters, digits"):
        AdapterRegistry(tmp_path / "other", name="a b")


def test_saving_needs_an_adapter(tmp_path, tiny_policy) -> None:
    with pytest.raises(ValueError, match="no LoRA adapter"):
        AdapterRegistry(tmp_path / "reg").save(tiny_policy)


def _scores(policy: LocalPolicy, generations) -> list[torch.Tensor]:
    with torch.no_grad():
        return policy.log_probs(list(OBSERVATIONS), [g.token_ids for g in generations])


def _gap(generations, scores) -> float:
    return max(
        (torch.tensor(g.logprobs) - s).abs().max().item()
        for g, s in zip(generations, scores, strict=True)
    )


def test_training_then_a_swap_routes_rollouts_to_the_new_weights(
    tmp_path, tiny_model_dir, trainee
) -> None:
    registry = AdapterRegistry(tmp_path / "reg")
    server = start_local_server(tiny_model_dir)
    sampling = SamplingParams(max_new_tokens=12)
    try:
        rollouts = ServerPolicy(server.url, "tiny", tiny_model_dir)
        deployment = Deployment(registry, server.url, keep=0)
        first = deployment.promote(registry.save(trainee).version, [rollouts])
        assert first.served_name == "archer-v0001" and rollouts.version == "archer-v0001"
        before = rollouts.generate(list(OBSERVATIONS), sampling)
        assert _gap(before, _scores(trainee, before)) < 1e-5

        # A few policy-gradient steps that make the sampled utterances more likely.
        optimiser = torch.optim.Adam(trainee.trainable_parameters(), lr=3e-2)
        old_weights = [p.detach().clone() for p in trainee.trainable_parameters()]
        for _ in range(5):
            logprobs = trainee.log_probs(list(OBSERVATIONS), [g.token_ids for g in before])
            loss = -torch.stack([lp.sum() for lp in logprobs]).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        moved = [
            (p - o).abs().max().item()
            for p, o in zip(trainee.trainable_parameters(), old_weights, strict=True)
        ]
        assert max(moved) > 1e-3

        second = deployment.promote(registry.save(trainee, note="5 steps").version, [rollouts])
        assert rollouts.version == "archer-v0002"
        assert second.unloaded == ["archer-v0001"]
        assert second.load_seconds > 0
        after = rollouts.generate(list(OBSERVATIONS), sampling)
        old = LocalPolicy.from_pretrained(registry.get("v1").path)
        assert _gap(after, _scores(trainee, after)) < 1e-5  # the new weights sampled them
        assert _gap(after, _scores(old, after)) > 1e-2  # and not the old ones
        assert deployment.loaded() == ["archer-v0002"]

        back = deployment.rollback([rollouts])
        assert back.version.version == "v0001" and rollouts.version == "archer-v0001"
        again = rollouts.generate(list(OBSERVATIONS), sampling)
        assert _gap(again, _scores(old, again)) < 1e-5
        assert registry.history == ["v0001"]
        with pytest.raises(ValueError, match="no earlier promoted version"):
            deployment.rollback([rollouts])
        deployment.close()
        rollouts.close()
    finally:
        server.stop()


def test_deploy_command_lists_promotes_and_rolls_back(tmp_path, tiny_model_dir, trainee) -> None:
    import archer_agents.cli.serve  # noqa: F401  (registers `deploy` on the app)
    from archer_agents.cli.app import app

    registry = AdapterRegistry(tmp_path / "reg")
    registry.save(trainee, metrics={"success": 0.5})
    registry.save(trainee, note="second")
    server = start_local_server(tiny_model_dir)
    runner = CliRunner()
    reg = ["--registry", str(tmp_path / "reg"), "--server", server.url]
    try:
        promoted = runner.invoke(app, ["deploy", "promote", "v1", *reg])
        assert promoted.exit_code == 0, promoted.output
        assert "promoted v0001 as archer-v0001" in promoted.output
        promoted = runner.invoke(app, ["deploy", "promote", "2", *reg])
        assert promoted.exit_code == 0, promoted.output
        listing = runner.invoke(app, ["deploy", "list", *reg], env={"COLUMNS": "200"})
        assert listing.exit_code == 0, listing.output
        rows = {line.split()[1]: line for line in listing.output.splitlines() if "archer-v" in line}
        assert "active, loaded" in rows["v0002"] and "success=0.5" in rows["v0001"]
        assert "loaded" in rows["v0001"]  # kept for rollback (keep=1)
        back = runner.invoke(app, ["deploy", "rollback", *reg])
        assert back.exit_code == 0 and "rolled back to v0001" in back.output
        assert json.loads((tmp_path / "reg" / "registry.json").read_text())["history"] == ["v0001"]
        missing = runner.invoke(app, ["deploy", "promote", "v7", *reg])
        assert missing.exit_code == 2 and "no adapter version" in missing.output
        down = runner.invoke(
            app,
            [
                "deploy",
                "promote",
                "v1",
                "--registry",
                str(tmp_path / "reg"),
                "--server",
                "http://127.0.0.1:9",
            ],
        )
        assert down.exit_code == 2 and "cannot reach the server" in down.output
    finally:
        server.stop()


def test_a_policy_following_the_registry_samples_from_each_promoted_version(
    tmp_path, tiny_model_dir
) -> None:
    from serving_helpers import random_lora_policy

    from archer_agents.policies.server_policy import ServerError

    registry = AdapterRegistry(tmp_path / "reg", name="agent")
    first, second = random_lora_policy(tiny_model_dir, 1), random_lora_policy(tiny_model_dir, 2)
    registry.save(first)
    registry.save(second)
    sampling = SamplingParams(max_new_tokens=12)
    server = start_local_server(tiny_model_dir)
    try:
        with pytest.raises(ValueError, match="no active version"):
            ServerPolicy(server.url, registry=tmp_path / "reg")
        Deployment(registry, server.url, keep=0).promote("v1")
        follower = ServerPolicy(server.url, registry=tmp_path / "reg")  # tokenizer: v0001's
        assert follower.model == follower.version == "agent-v0001"
        before = follower.generate(list(OBSERVATIONS), sampling)
        assert {g.policy_version for g in before} == {"agent-v0001"}
        assert _gap(before, _scores(first, before)) < 1e-5

        # Promoted elsewhere (its own registry object and client): the next call follows.
        elsewhere = Deployment(AdapterRegistry.open(tmp_path / "reg"), server.url, keep=0)
        assert elsewhere.promote("v2").unloaded == ["agent-v0001"]
        after = follower.generate(list(OBSERVATIONS), sampling)
        assert {g.policy_version for g in after} == {"agent-v0002"}
        assert _gap(after, _scores(second, after)) < 1e-5

        # A rollback that lands between the registry check and the request: the request
        # names the just-unloaded version, gets a 404, re-reads the registry and is retried.
        sent: list[str] = []

        def roll_back_first(request) -> None:  # type: ignore[no-untyped-def]
            if request.url.path.endswith("/completions"):
                sent.append(json.loads(request.content)["model"])
                if len(sent) == 1:
                    elsewhere.rollback()

        follower.client.event_hooks["request"] = [roll_back_first]
        again = follower.generate(list(OBSERVATIONS), sampling)
        assert sent == ["agent-v0002", "agent-v0001"]
        assert {g.policy_version for g in again} == {"agent-v0001"}
        assert _gap(again, _scores(first, again)) < 1e-5
        follower.client.event_hooks["request"] = []

        elsewhere.unload("agent-v0001")
        with pytest.raises(ServerError, match="deploy promote v0001"):
            follower.generate(list(OBSERVATIONS), sampling)
        with pytest.raises(ValueError, match="both given"):
            ServerPolicy(server.url, "tiny", registry=tmp_path / "reg")
        with pytest.raises(ValueError, match="registry=DIR"):
            ServerPolicy(server.url, "tiny")
        follower.close()
        elsewhere.close()
    finally:
        server.stop()
