"""The shared training loop: metrics, curve, checkpoints, resume (also after SIGKILL), genericity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from archer_agents.data.episode_log import read_episodes
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.training.algorithms.archer import Archer, ArcherConfig
from archer_agents.training.algorithms.offline_archer import OfflineArcher, OfflineArcherConfig
from archer_agents.training.checkpoint import load_latest
from archer_agents.training.rollout import ScriptedActor, collect, make_env_factory
from archer_agents.training.run_dir import is_run_path, load_run_policy
from archer_agents.training.run_log import read_metrics
from archer_agents.training.trainer import Trainer, TrainerConfig

ENV_ID = "archer/TwentyQuestions-v0"

ARCHER = {
    "critic_steps": 1,
    "critic_batch_size": 8,
    "actor_steps": 1,
    "actor_batch_size": 8,
    "warmup_iterations": 1,
    "max_new_tokens": 4,
    "critic_lr": 1e-3,
    "actor_lr": 1e-3,
}
TRAINER = {
    "episodes_per_iteration": 3,
    "num_envs": 3,
    "eval_every": 1,
    "eval_episodes": 2,
    "checkpoint_every": 1,
}


def make_trainer(model_dir: Path, run_dir: Path, iterations: int, **changes: object) -> Trainer:
    policy = LocalPolicy.from_pretrained(model_dir, seed=0)
    archer = Archer(ArcherConfig(**ARCHER), policy)
    config = TrainerConfig(iterations=iterations, **{**TRAINER, **changes})
    return Trainer(archer, ENV_ID, run_dir, config, run_info={"model": str(model_dir)})


def test_a_run_writes_metrics_curve_episodes_checkpoints_and_policy(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    trainer = make_trainer(tiny_model_dir, tmp_path / "run", iterations=2)
    result = trainer.train()
    assert (result.counters.iteration, result.counters.episodes) == (2, 6)

    records = read_metrics(trainer.metrics_path)
    assert [r["iteration"] for r in records] == [1, 2]
    for key in (
        "critic/q1_loss",
        "critic/v_target_mean",
        "rollout/return_mean",
        "rollout/valid_rate",
        "eval/return_mean",
        "eval/return_low",
        "eval/valid_rate",
        "time/rollout_s",
        "time/critic_s",
        "time/eval_s",
    ):
        assert key in records[1], key
    assert "actor/advantage_mean" not in records[0]  # warm-up: the critic alone
    assert "actor/advantage_mean" in records[1] and "time/actor_s" in records[1]
    assert trainer.curve_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((trainer.run_dir / "tensorboard").glob("events.out.tfevents.*"))

    episodes, report = read_episodes(trainer.episodes_path)
    assert len(episodes) == 6 and report.lines_skipped == 0
    assert {e.transitions[0].policy_version for e in episodes} == {"1", "2"}
    checkpoint = load_latest(trainer.checkpoint_dir)
    assert checkpoint is not None and checkpoint.step == 2
    assert checkpoint.state["counters"]["episodes"] == 6
    run = json.loads((trainer.run_dir / "run.json").read_text())
    assert run["algorithm"] == "archer" and run["model"] == str(tiny_model_dir)
    assert run["algorithm_config"]["critic_steps"] == 1

    # The trained policy is loadable from the run, its checkpoints and the exported folder.
    assert is_run_path(trainer.run_dir) and is_run_path(checkpoint.path)
    trained = trainer.algorithm.policy.model.state_dict()  # type: ignore[attr-defined]
    for source in (trainer.run_dir, checkpoint.path):
        loaded = load_run_policy(source).model.state_dict()
        for name, tensor in trained.items():
            torch.testing.assert_close(loaded[name], tensor, msg=name)
    exported = LocalPolicy.from_pretrained(trainer.run_dir / "policy").model.state_dict()
    torch.testing.assert_close(exported["lm_head.weight"], trained["lm_head.weight"])


def test_resume_continues_the_counters_and_the_logs(tiny_model_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    make_trainer(tiny_model_dir, run_dir, iterations=2, eval_every=0, checkpoint_every=1).train()
    with pytest.raises(FileExistsError, match="resume"):
        make_trainer(tiny_model_dir, run_dir, iterations=3).train()

    trainer = make_trainer(tiny_model_dir, run_dir, iterations=3, eval_every=0)
    result = trainer.train(resume=True)
    assert result.resumed_from == 2
    assert (result.counters.iteration, result.counters.episodes) == (3, 9)
    records = read_metrics(trainer.metrics_path)
    assert [r["iteration"] for r in records if "final_eval" not in r] == [1, 2, 3]
    episodes, _ = read_episodes(trainer.episodes_path)
    assert len(episodes) == 9
    buffer = trainer.algorithm.buffer  # type: ignore[attr-defined]
    assert len(buffer) == sum(e.num_turns for e in episodes)
    # Iteration 3 played new seeds: no episode seed repeats.
    assert len({e.seed for e in episodes}) == 9


def test_time_budget_stops_the_loop_and_still_evaluates(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    trainer = make_trainer(
        tiny_model_dir, tmp_path / "run", iterations=50, eval_every=0, time_budget_s=0.01
    )
    result = trainer.train()
    assert result.counters.iteration == 1
    assert "eval/return_mean" in result.final_metrics
    assert read_metrics(trainer.metrics_path)[-1]["final_eval"] == 1.0


def test_offline_algorithms_get_no_rollouts(tiny_model_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "expert.jsonl"
    from archer_agents.data.episode_log import EpisodeWriter

    with EpisodeWriter(log) as writer:
        collect(make_env_factory(ENV_ID), ScriptedActor("expert"), 3, num_envs=3, writer=writer)
    config = OfflineArcherConfig(
        data=[log], critic_steps=1, critic_batch_size=4, actor_steps=1, actor_batch_size=4
    )
    algorithm = OfflineArcher(config, LocalPolicy.from_pretrained(tiny_model_dir, seed=0))
    trainer = Trainer(
        algorithm,
        ENV_ID,
        tmp_path / "run",
        TrainerConfig(iterations=2, eval_every=0, eval_episodes=2, num_envs=2),
    )
    result = trainer.train()
    assert result.counters.iteration == 2 and result.counters.episodes == 0
    assert not trainer.episodes_path.exists() or trainer.episodes_path.stat().st_size == 0
    assert "rollout/return_mean" not in read_metrics(trainer.metrics_path)[0]
    assert any(k.startswith("eval/") for r in read_metrics(trainer.metrics_path) for k in r)

    # Without an environment an offline run plays nothing, evaluations included.
    blind = Trainer(algorithm, None, tmp_path / "blind", TrainerConfig(iterations=1, eval_every=1))
    assert blind.train().counters.iteration == 1
    records = read_metrics(blind.metrics_path)
    assert records and not any(k.startswith("eval/") for r in records for k in r)
    assert json.loads((tmp_path / "blind" / "run.json").read_text())["env_id"] is None

    online = Archer(ArcherConfig(), LocalPolicy.from_pretrained(tiny_model_dir, seed=0))
    with pytest.raises(ValueError, match="plays episodes while it trains"):
        Trainer(online, None, tmp_path / "online")


KILLABLE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import torch
    from archer_agents.policies.local_policy import LocalPolicy
    from archer_agents.training.algorithms.archer import Archer, ArcherConfig
    from archer_agents.training.trainer import Trainer, TrainerConfig

    model_dir, run_dir, iterations = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)  # as the test process: a second thread only slows a shared CPU
    archer = Archer(ArcherConfig(**{archer}), LocalPolicy.from_pretrained(model_dir, seed=0))
    config = TrainerConfig(iterations=iterations, **{trainer})
    Trainer(archer, "archer/TwentyQuestions-v0", run_dir, config, run_info={{"model": model_dir}}).train(
        resume=True
    )
    """
)


@pytest.mark.slow
def test_sigkill_mid_iteration_then_resume_loses_nothing_before_the_checkpoint(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    script = tmp_path / "train.py"
    trainer_settings = {**TRAINER, "eval_every": 0, "episodes_per_iteration": 6, "num_envs": 2}
    script.write_text(KILLABLE.format(archer=ARCHER, trainer=trainer_settings))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, str(script), str(tiny_model_dir), str(run_dir), "100"], env=env
    )
    try:
        # Wait for checkpoint 2, then for iteration 3 to have written an episode: mid-iteration.
        deadline = time.monotonic() + 120
        latest = run_dir / "checkpoints" / "latest"
        while time.monotonic() < deadline:
            if latest.exists() and latest.read_text().strip() >= "step-000002":
                break
            time.sleep(0.05)
        checkpoint = load_latest(run_dir / "checkpoints")
        assert checkpoint is not None
        saved_bytes = checkpoint.state["files"]["episodes_bytes"]
        while time.monotonic() < deadline:
            if (run_dir / "episodes.jsonl").stat().st_size > saved_bytes:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    # The newest checkpoint may have moved on while we waited; resume from whatever is there.
    checkpoint = load_latest(run_dir / "checkpoints")
    assert checkpoint is not None
    done = checkpoint.state["counters"]
    before, _ = read_episodes(run_dir / "episodes.jsonl")  # a torn last line is tolerated
    assert len(before) >= done["episodes"]
    kept = [e.episode_id for e in before[: done["episodes"]]]

    trainer = make_trainer(
        tiny_model_dir, run_dir, iterations=done["iteration"] + 1, **trainer_settings
    )
    result = trainer.train(resume=True)
    assert result.resumed_from == done["iteration"]
    assert result.counters.iteration == done["iteration"] + 1
    assert result.counters.episodes == done["episodes"] + 6
    after, report = read_episodes(run_dir / "episodes.jsonl")
    assert report.lines_skipped == 0
    assert [e.episode_id for e in after[: len(kept)]] == kept  # nothing before the checkpoint lost
    assert len(after) == result.counters.episodes
    buffer = trainer.algorithm.buffer  # type: ignore[attr-defined]
    assert len(buffer) == sum(e.num_turns for e in after)
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["iteration"] for r in records if "final_eval" not in r] == list(
        range(1, result.counters.iteration + 1)
    )


def test_archer_train_and_eval_from_the_command_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from archer_agents.cli.app import full_app

    runner = CliRunner()
    config = tmp_path / "run.yaml"
    config.write_text(
        "trainer:\n  iterations: 1\n  episodes_per_iteration: 2\n  num_envs: 2\n"
        "  eval_episodes: 2\n  tensorboard: false\nalgorithm:\n  critic_steps: 1\n"
        "  critic_batch_size: 4\n  actor_batch_size: 4\n"
    )
    out = tmp_path / "run"
    args = ["train", "--algo", "archer", "--env", ENV_ID, "--model", str(tiny_model_dir)]
    args += ["--out", str(out), "--config", str(config), "--set", "max_new_tokens=4"]
    result = runner.invoke(full_app(), [*args, "--set", "warmup_iterations=0"])
    assert result.exit_code == 0, result.output
    assert "1 iterations, 2 episodes" in result.output
    run = json.loads((out / "run.json").read_text())
    assert run["algorithm_config"]["max_new_tokens"] == 4 and run["trainer"]["iterations"] == 1

    # A time-budgeted run's bar counts seconds of its budget, not its (distant) iteration cap.
    budgeted = [a if a != str(out) else str(tmp_path / "budgeted") for a in args]
    budgeted += ["--set", "trainer.iterations=1000", "--set", "trainer.time_budget_s=0.01"]
    result = runner.invoke(full_app(), [*budgeted, "--set", "warmup_iterations=0"])
    assert result.exit_code == 0, result.output
    assert "(seconds of budget)" in result.output and "iteration 1 " in result.output
    assert "1 iterations, 2 episodes" in result.output

    result = runner.invoke(full_app(), ["eval", ENV_ID, "--policy", str(out), "--episodes", "2"])
    assert result.exit_code == 0, result.output
    assert "test split" in result.output

    result = runner.invoke(full_app(), [*args, "--set", "actor_rl=1e-3"])
    assert result.exit_code == 2
    assert "did you mean 'algorithm.actor_lr'" in " ".join(result.output.split())
    result = runner.invoke(full_app(), [*args, "--algo", "sarsa"])
    assert result.exit_code == 2 and "unknown algorithm 'sarsa'" in result.output
