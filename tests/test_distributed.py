"""Training in several processes: two real CPU processes over gloo, launched as torchrun would.

Each test starts two Python processes with the environment a launcher sets
(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so the code under test finds
its process group exactly as under ``accelerate launch`` or ``torchrun``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from archer_agents.data.episode_log import read_episodes
from archer_agents.training.checkpoint import load_latest
from archer_agents.training.distributed import Distributed, average_gradients, shard
from archer_agents.training.run_log import read_metrics
from archer_agents.training.spawn import free_port, launcher_environment

ENV_ID = "archer/TwentyQuestions-v0"


def launch(script: Path, *args: str, processes: int = 2, timeout: float = 240) -> None:
    """Run ``script`` in ``processes`` processes of one gloo group; fail with their output."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    port = free_port()
    logs = [script.with_name(f"{script.stem}.rank{rank}.log") for rank in range(processes)]
    running = []
    for rank, log in enumerate(logs):
        with log.open("wb") as out:
            running.append(
                subprocess.Popen(
                    [sys.executable, str(script), *args],
                    env={**env, **launcher_environment(rank, processes, port)},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    deadline = time.monotonic() + timeout
    try:
        # One failed process leaves the others waiting in a collective: stop them all.
        while any(p.poll() is None for p in running) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in running):
                break
            time.sleep(0.1)
    finally:
        for p in running:
            if p.poll() is None:
                p.kill()
                p.wait()
    outputs = "\n".join(f"--- rank {r} ---\n{log.read_text()}" for r, log in enumerate(logs))
    assert all(p.returncode == 0 for p in running), outputs


COLLECTIVES = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from archer_agents.training.distributed import Distributed, average_gradients, shard

    rank = int(os.environ["RANK"])
    group = Distributed.from_environment(cpu=True)
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(2))
    c = torch.nn.Parameter(torch.zeros(1))
    a.grad = torch.full((3,), float(rank + 1))  # 1 and 2: mean 1.5
    if rank == 0:
        b.grad = torch.tensor([2.0, 4.0])  # only process 0 reached b: mean [1, 2]
    average_gradients([a, b, c])  # nobody reached c: it keeps no gradient

    torch.manual_seed(rank)  # different starting weights and data on each process
    layer = torch.nn.Linear(4, 2)
    group.broadcast_module(layer)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1)
    for _ in range(3):
        layer(torch.randn(5, 4)).pow(2).mean().backward()
        average_gradients(list(layer.parameters()))  # as updates.clip_and_step does
        torch.nn.utils.clip_grad_norm_(layer.parameters(), 0.5)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    report = {
        "world": [group.rank, group.world_size],
        "a": a.grad.tolist(),
        "b": b.grad.tolist(),
        "c_has_grad": c.grad is not None,
        "shard": shard(list(range(5))),
        "split": list(group.split(5)),
        "gather": group.gather(rank * 10),
        "broadcast": group.broadcast(rank + 7),
        "metrics": group.mean_metrics({"x": float(rank), **({"y": 3.0} if rank else {})}),
        "layer": [p.tolist() for p in layer.parameters()],
    }
    with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as out:
        json.dump(report, out)
    """
)


@pytest.mark.slow
def test_two_processes_average_gradients_and_share_batches(tmp_path: Path) -> None:
    script = tmp_path / "collectives.py"
    script.write_text(COLLECTIVES)
    launch(script, str(tmp_path))
    zero, one = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (zero["world"], one["world"]) == ([0, 2], [1, 2])
    for report in (zero, one):
        assert report["a"] == [1.5, 1.5, 1.5]
        assert report["b"] == [1.0, 2.0]
        assert report["c_has_grad"] is False
        assert report["gather"] == [0, 10]
        assert report["broadcast"] == 7
        assert report["metrics"] == {"x": 0.5, "y": 3.0}
    assert (zero["shard"], one["shard"]) == ([0, 2, 4], [1, 3])
    assert (zero["split"], one["split"]) == ([0, 3], [3, 2])
    # Broadcast start, averaged gradients: different data, the same weights after every step.
    assert zero["layer"] == one["layer"]


def test_one_process_is_a_no_op() -> None:
    assert "WORLD_SIZE" not in os.environ
    group = Distributed.from_environment()
    assert (group.rank, group.world_size, group.enabled, group.is_main) == (0, 1, False, True)
    assert group.split(5) == (0, 5)
    assert group.gather("x") == ["x"] and group.broadcast(3) == 3
    assert group.mean_metrics({"x": 1.0}) == {"x": 1.0}
    assert shard([1, 2, 3]) == [1, 2, 3]
    parameter = torch.nn.Parameter(torch.zeros(2))
    parameter.grad = torch.tensor([1.0, -1.0])
    average_gradients([parameter])
    assert parameter.grad.tolist() == [1.0, -1.0]


ARCHER = {
    "critic_steps": 2,
    "critic_batch_size": 8,
    "critic_batches": "episodes",
    "actor_steps": 1,
    "actor_batch_size": 8,
    "warmup_iterations": 1,
    "max_new_tokens": 4,
    "critic_lr": 1e-3,
    "actor_lr": 1e-3,
}
TRAINER = {
    "episodes_per_iteration": 4,
    "num_envs": 2,
    "eval_every": 1,
    "eval_episodes": 3,
    "checkpoint_every": 1,
    "tensorboard": False,
}

TRAIN = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from archer_agents.policies.local_policy import LocalPolicy
    from archer_agents.training.algorithms.archer import Archer, ArcherConfig
    from archer_agents.training.algorithms.filtered_bc import FilteredBC, FilteredBCConfig
    from archer_agents.training.algorithms.ppo import PPO, PPOConfig
    from archer_agents.training.algorithms.reinforce import Reinforce, ReinforceConfig
    from archer_agents.training.trainer import Trainer, TrainerConfig
    from archer_agents.training.updates import trainable_state

    model_dir, run_dir, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    archer_settings, trainer_settings = json.loads(sys.argv[4]), json.loads(sys.argv[5])
    rank = int(os.environ["RANK"])
    records = []

    def weights(archer):
        return {
            "policy": trainable_state(archer.policy.model),
            "critic": {k: v.clone() for k, v in archer.critic.state_dict().items()},
            "target": {k: v.clone() for k, v in archer.target.state_dict().items()},
        }

    def train(iterations, resume, **changes):
        policy = LocalPolicy.from_pretrained(model_dir, seed=0)
        archer = Archer(ArcherConfig(**{**archer_settings, **changes}), policy)
        if rank == 1 and not resume:  # the trainer must start every process from process 0's
            with torch.no_grad():
                for p in [*policy.model.parameters(), *archer.critic.parameters()]:
                    p.add_(0.1)
        config = TrainerConfig(iterations=iterations, **trainer_settings)
        trainer = Trainer(archer, "archer/TwentyQuestions-v0", run_dir, config,
                          run_info={"model": model_dir},
                          on_iteration=lambda iteration, record: records.append(record))
        result = trainer.train(resume=resume)
        return archer, result

    initial = trainable_state(LocalPolicy.from_pretrained(model_dir).model)
    archer, first = train(2, resume=False)
    after_two = weights(archer)
    # Resumed in new trainers; the actor now takes its states from the newest rollout.
    archer, result = train(3, resume=True, actor_states="latest")

    # The baselines shard their batches too (each process scores its share of the episodes).
    baselines = {}
    for name, algorithm in (
        ("reinforce", Reinforce(ReinforceConfig(learning_rate=1e-2, max_new_tokens=4),
                                LocalPolicy.from_pretrained(model_dir, seed=0))),
        ("filtered_bc", FilteredBC(FilteredBCConfig(percentile=0.0, steps_per_update=2,
                                                    batch_size=8, learning_rate=1e-2,
                                                    max_new_tokens=4),
                                   LocalPolicy.from_pretrained(model_dir, seed=0))),
        ("ppo", PPO(PPOConfig(policy_lr=1e-2, epochs=2, minibatch_size=4, max_new_tokens=4),
                    LocalPolicy.from_pretrained(model_dir, seed=0))),
    ):
        config = TrainerConfig(iterations=1, **{**trainer_settings, "eval_every": 0})
        Trainer(algorithm, "archer/TwentyQuestions-v0", run_dir.with_name(name), config).train()
        baselines[name] = trainable_state(algorithm.policy.model)
    torch.save(
        {
            "initial": initial,
            "after_two": after_two,
            "final": weights(archer),
            "buffer": [len(archer.buffer), archer.buffer.num_added],
            "counters": result.counters.as_dict(),
            "resumed_from": result.resumed_from,
            "updates": [archer.critic_updates, archer.actor_updates],
            "records": json.dumps(records),
            "baselines": baselines,
        },
        out / f"rank{rank}.pt",
    )
    """
)


@pytest.mark.slow
def test_archer_in_two_processes_keeps_every_copy_equal(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    run_dir = tmp_path / "run"
    launch(
        script,
        str(tiny_model_dir),
        str(run_dir),
        str(tmp_path),
        json.dumps(ARCHER),
        json.dumps(TRAINER),
    )
    zero, one = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))

    for stage in ("after_two", "final"):
        for part in ("policy", "critic", "target"):
            assert zero[stage][part].keys() == one[stage][part].keys()
            for name, tensor in zero[stage][part].items():
                assert torch.equal(tensor, one[stage][part][name]), (stage, part, name)
    assert any(
        not torch.equal(zero["final"]["policy"][name], tensor)
        for name, tensor in zero["initial"].items()
    ), "the policy never changed"
    assert zero["counters"] == one["counters"]
    assert zero["counters"]["iteration"] == 3 and zero["counters"]["episodes"] == 12
    assert zero["resumed_from"] == one["resumed_from"] == 2
    assert zero["updates"] == one["updates"] == [6, 2]
    assert zero["records"] == one["records"]  # on_iteration: process 0's record everywhere
    # REINFORCE and PPO run their sharded updates, but the tiny policy loses every game (equal
    # returns), so only filtered BC's weights are sure to move.
    weights = zero["baselines"]["filtered_bc"]
    assert any(not torch.equal(zero["initial"][k], v) for k, v in weights.items())
    for name, weights in zero["baselines"].items():
        for key, tensor in weights.items():
            assert torch.equal(tensor, one["baselines"][name][key]), (name, key)

    # Process 0 wrote every episode once, both processes' shares, with the one-process seeds.
    episodes, report = read_episodes(run_dir / "episodes.jsonl")
    assert report.lines_skipped == 0
    assert sorted(e.seed for e in episodes) == list(range(12))
    turns = sum(e.num_turns for e in episodes)
    assert zero["buffer"] == one["buffer"] == [turns, turns]
    # Per iteration, episodes 0-1 come from process 0 and 2-3 from process 1: their own draws.
    for start in range(0, 12, 4):
        share_zero, share_one = episodes[start : start + 2], episodes[start + 2 : start + 4]
        assert sorted(e.seed for e in share_zero) == [start, start + 1]
        first = [e.transitions[0].action for e in share_zero]
        assert first != [e.transitions[0].action for e in share_one]

    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [1, 2, 3]
    assert [r["iteration"] for r in json.loads(zero["records"])] == [1, 2, 3]
    assert all(r["rollout/episodes"] == 4.0 for r in records)
    assert all("eval/return_mean" in r and "critic/q1_loss" in r for r in records)
    checkpoint = load_latest(run_dir / "checkpoints")
    assert checkpoint is not None and checkpoint.step == 3
    assert len(checkpoint.state["processes"]) == 2


def test_launched_rank_reads_the_launcher_and_defaults_to_zero(monkeypatch) -> None:
    from archer_agents.training.distributed import RANK_VARIABLES, launched_rank

    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert launched_rank() == 0
    monkeypatch.setenv("RANK", "1")
    assert launched_rank() == 1


BC = textwrap.dedent(
    """
    import os, runpy, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from archer_agents.data.episode_log import read_episodes
    from archer_agents.policies.local_policy import LocalPolicy
    from archer_agents.training.algorithms.bc import BCConfig, behaviour_clone
    from archer_agents.training.distributed import Distributed
    from archer_agents.training.updates import trainable_state

    model_dir, log, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    rank = int(os.environ["RANK"])
    Distributed.from_environment(cpu=True)
    episodes, _ = read_episodes(log)
    states = {}
    for packed in (False, True):
        policy = LocalPolicy.from_pretrained(model_dir, seed=0)
        if rank == 1:  # behaviour cloning must start every process from process 0's weights
            with torch.no_grad():
                for p in policy.model.parameters():
                    p.add_(0.1)
        config = BCConfig(steps=3, batch_size=6, learning_rate=1e-2, warmup_steps=0,
                          packed=packed)
        behaviour_clone(policy, episodes, config)
        states[str(packed)] = trainable_state(policy.model)
    torch.save(states, out / f"bc_rank{rank}.pt")
    # The CLI in the same processes: process 0 alone saves the policy.
    sys.argv = ["archer", "bc", str(log), "--model", model_dir, "--out", str(out / "cli"),
                "--steps", "2", "--batch-size", "6"]
    try:
        runpy.run_module("archer_agents.cli", run_name="__main__")
    except SystemExit as stop:
        assert not stop.code, stop.code
    # A batch too small to split ends with one line in every process, and nothing saved.
    sys.argv[sys.argv.index("--batch-size") + 1] = "1"
    sys.argv[sys.argv.index("--out") + 1] = str(out / "too_small")
    try:
        runpy.run_module("archer_agents.cli", run_name="__main__")
    except SystemExit as stop:
        assert stop.code, "a batch of 1 across 2 processes was accepted"
    """
)


@pytest.mark.slow
def test_behaviour_cloning_in_two_processes_keeps_the_copies_equal(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from archer_agents.data.episode_log import EpisodeWriter
    from archer_agents.policies.local_policy import LocalPolicy
    from archer_agents.training.rollout import ScriptedActor, collect, make_env_factory
    from archer_agents.training.updates import trainable_state

    log = tmp_path / "expert.jsonl"
    with EpisodeWriter(log, fsync=False) as writer:
        collect(make_env_factory(ENV_ID), ScriptedActor("expert"), 6, num_envs=3, writer=writer)
    script = tmp_path / "bc.py"
    script.write_text(BC)
    launch(script, str(tiny_model_dir), str(log), str(tmp_path))
    zero, one = (torch.load(tmp_path / f"bc_rank{r}.pt", weights_only=True) for r in (0, 1))
    initial = trainable_state(LocalPolicy.from_pretrained(tiny_model_dir).model)
    for packed in ("False", "True"):
        for name, tensor in zero[packed].items():
            assert torch.equal(tensor, one[packed][name]), (packed, name)
        assert any(not torch.equal(initial[k], v) for k, v in zero[packed].items()), packed
    assert (tmp_path / "cli" / "config.json").exists()
    rank1_log = (tmp_path / "bc.rank1.log").read_text()
    assert "policy saved" not in rank1_log
    rank0_log = (tmp_path / "bc.rank0.log").read_text()
    assert "policy saved" in rank0_log
    for log in (rank0_log, rank1_log):
        assert "--batch-size 1 cannot be split across 2 processes" in log
        assert "Traceback" not in log
    assert not (tmp_path / "too_small").exists()
