"""benchmarks/sample_efficiency.py: the threshold arithmetic, and one tiny end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("sample_efficiency")


def test_trajectories_to_threshold_is_the_first_evaluation_at_or_above(bench: ModuleType) -> None:
    trajectories = [0, 128, 256, 384, 512]
    returns = [-14.0, -12.0, -9.9, -10.5, -8.0]
    assert bench.trajectories_to_threshold(trajectories, returns, -10.0) == 256
    assert bench.trajectories_to_threshold(trajectories, returns, -9.9) == 256  # ties count
    assert bench.trajectories_to_threshold(trajectories, returns, -9.0) == 512
    assert bench.trajectories_to_threshold(trajectories, returns, -15.0) == 0
    assert bench.trajectories_to_threshold(trajectories, returns, -7.0) is None
    with pytest.raises(ValueError, match="one return per evaluation"):
        bench.trajectories_to_threshold([0, 1], [-1.0], -1.0)


def test_unreached_seeds_make_the_mean_and_the_ratio_bounds(bench: ModuleType) -> None:
    archer = bench.threshold_figure([128, 256, 384], budget=1024)
    assert (archer.mean, archer.reached, archer.bound) == (256, 3, "")
    ppo = bench.threshold_figure([512, None, 1024], budget=1024)
    assert (ppo.mean, ppo.reached, ppo.bound) == (pytest.approx(853.33, abs=0.01), 2, ">")
    assert bench.ratio_to(ppo, archer) == "> 3.3x"
    assert bench.ratio_to(archer, archer) == "1.0x"
    assert bench.ratio_to(archer, ppo) == "< 0.3x"
    none = bench.threshold_figure([None], budget=1024)
    assert bench.ratio_to(none, none).startswith("n/a")


def test_seed_interval_is_students_t(bench: ModuleType) -> None:
    mean, low, high = bench.seed_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert high - mean == pytest.approx(4.303 * 1.0 / 3**0.5, rel=1e-3)
    assert bench.seed_interval([5.0]) == (5.0, 5.0, 5.0)
    assert bench.t_quantile_975(30) == pytest.approx(2.042, abs=0.01)


def test_overrides_go_to_their_method_and_the_budget_is_not_overridable(
    bench: ModuleType,
) -> None:
    split = bench.split_overrides(["ppo.policy_lr=1e-3", "ppo.trainer.num_envs=8"])
    assert split["ppo"] == ["policy_lr=1e-3", "trainer.num_envs=8"]
    assert split["archer"] == []
    with pytest.raises(SystemExit, match="ALGO.key=value"):
        bench.split_overrides(["policy_lr=1e-3"])
    with pytest.raises(SystemExit, match="set by the benchmark"):
        bench.split_overrides(["ppo.trainer.iterations=3"])
    with pytest.raises(SystemExit, match="not a multiple"):
        bench.run_config("ppo", 0, [], trajectories=100, eval_every=64, eval_episodes=4)


def test_each_method_runs_its_own_batch_and_archer_the_main_jobs(bench: ModuleType) -> None:
    batches = bench.EPISODES_PER_ITERATION
    assert set(batches) == set(bench.ALGORITHMS)
    assert batches["archer"] == bench.ARCHER_PRESET["trainer"]["episodes_per_iteration"]
    for algo in bench.ALGORITHMS:
        batch = batches[algo]
        trainer, _ = bench.run_config(
            algo, 0, [], trajectories=512, eval_every=256, eval_episodes=4
        )
        assert (trainer.episodes_per_iteration, trainer.num_envs) == (batch, batch)
        assert (trainer.iterations, trainer.eval_every) == (512 // batch, 256 // batch)


@pytest.mark.slow  # about ten seconds on an idle core: four short training runs
def test_main_writes_table_json_and_curves(
    bench: ModuleType, tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    argv = [
        "--bc",
        str(tiny_model_dir),
        "--algos",
        "reinforce,filtered_bc",
        "--seeds",
        "2",
        "--trajectories",
        "2",
        "--eval-every",
        "1",
        "--eval-episodes",
        "1",
        "--out",
        str(out),
    ]
    for algo in ("reinforce", "filtered_bc"):  # one short episode at a time: seconds, not minutes
        argv += ["--set", f"{algo}.trainer.episodes_per_iteration=1"]
        argv += ["--set", f"{algo}.trainer.num_envs=1", "--set", f"{algo}.max_new_tokens=2"]
    argv += ["--set", "filtered_bc.steps_per_update=1", "--set", "filtered_bc.batch_size=2"]
    results = bench.main(argv)

    assert (out / "curves.png").stat().st_size > 0
    table = (out / "results.md").read_text()
    assert "| reinforce |" in table and "| filtered_bc |" in table
    assert "rollout tokens/s" in table
    saved = json.loads((out / "results.json").read_text())
    assert saved["budget"] == 2
    refs = saved["references"]
    assert refs["threshold"] == pytest.approx((refs["bc_mean"] + refs["expert_mean"]) / 2)
    for algo in ("reinforce", "filtered_bc"):
        method = saved["methods"][algo]
        assert method["curve"]["trajectories"] == [0, 1, 2]
        assert method["seeds"] == [0, 1]
        assert set(method["timing"]) >= {"rollout_s", "critic_s", "actor_s"}
        assert method["timing"]["actor_s"] > 0 and method["timing"]["critic_s"] == 0
    for run in saved["runs"]:  # the figure is the threshold function applied to the run's curve
        per_seed = saved["methods"][run["algo"]]["to_threshold"]["per_seed"][run["seed"]]
        expected = bench.trajectories_to_threshold(
            run["trajectories"], run["returns"], refs["threshold"]
        )
        assert per_seed == expected
        assert run["returns"][0] == refs["bc"][str(run["seed"])]
        assert (out / "runs" / f"{run['algo']}-seed{run['seed']}" / "metrics.jsonl").is_file()

    # Seeds can be run by several commands into one --out: finished runs are read back.
    metrics = out / "runs" / "reinforce-seed1" / "metrics.jsonl"
    written = metrics.stat().st_mtime_ns
    seeds_at = argv.index("--seeds")
    again = bench.main(
        [*argv[:seeds_at], "--seeds", "1", "--first-seed", "1", *argv[seeds_at + 2 :]]
    )
    assert again["methods"]["reinforce"]["seeds"] == [1]
    assert metrics.stat().st_mtime_ns == written
    assert results["methods"].keys() == saved["methods"].keys()

    # A second invocation reads the finished runs back instead of training again.
    before = (out / "runs" / "reinforce-seed0" / "metrics.jsonl").stat().st_mtime_ns
    bench.main(argv)
    assert (out / "runs" / "reinforce-seed0" / "metrics.jsonl").stat().st_mtime_ns == before

    # A finished run of another config is refused with what differs, and kept.
    changed = [*argv, "--set", "reinforce.learning_rate=0.123"]
    with pytest.raises(
        SystemExit, match=r"another config \(algorithm.learning_rate: .* 0.123 asked"
    ):
        bench.main(changed)
    assert (out / "runs" / "reinforce-seed0" / "metrics.jsonl").stat().st_mtime_ns == before

    # A run made before a setting existed ran at that setting's default: it is read back.
    result = out / "runs" / "reinforce-seed0" / bench.RESULT_FILE
    finished = json.loads(result.read_text())
    del finished["config"]["algorithm"]["chunk_episodes"]
    result.write_text(json.dumps(finished))
    bench.main(argv)
    assert (out / "runs" / "reinforce-seed0" / "metrics.jsonl").stat().st_mtime_ns == before
    # One with a setting since removed is another config, and the conflict stops the
    # command before any run trains (here reinforce's new seed 2, which comes first).
    result = out / "runs" / "filtered_bc-seed1" / bench.RESULT_FILE
    finished = json.loads(result.read_text())
    finished["config"]["algorithm"]["retired_setting"] = 1
    result.write_text(json.dumps(finished))
    with pytest.raises(SystemExit, match=r"another config \(algorithm.retired_setting: 1 there"):
        bench.main([*argv[:seeds_at], "--seeds", "3", *argv[seeds_at + 2 :]])
    assert not (out / "runs" / "reinforce-seed2").exists()

    # A result file that does not read back stops the command, and the run is kept.
    result.write_text(json.dumps(finished)[:40])
    with pytest.raises(SystemExit, match=r"is not a run result .* delete that directory"):
        bench.main(argv)
    assert (out / "runs" / "filtered_bc-seed1" / "metrics.jsonl").is_file()
