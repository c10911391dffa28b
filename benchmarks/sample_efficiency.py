"""Sample efficiency: ArCHer and its baselines from one behaviour-cloned start, per trajectory.

Issue #3's benchmark. Every method starts from a fresh copy of the same
behaviour-cloned policy (``--bc``), trains under the shared `Trainer` (each
run in its own directory under ``OUT/runs/``) with the same budget of training
trajectories (``--trajectories``) and is evaluated on the test split every
``--eval-every`` trajectories (the trainer's own evaluation: the split's tasks
swept in order). For each seed the cloned policy and the scripted expert are
evaluated the same way; the threshold is halfway between their mean returns.

Printed and written to ``OUT``:

- ``curves.png``: mean test return against trajectories collected, per method,
  with a 95% Student-t interval across seeds; the BC, expert and threshold
  lines;
- ``results.md``: final return, trajectories to the threshold per seed and on
  the seeds' mean curve, the ratio to ArCHer; where an iteration's time goes
  (rollout, critic, actor) and the rollouts' generated tokens per second;
- ``results.json``: the same figures, every curve and every resolved config.

ArCHer runs with `archer_agents.cli.quickstart.ARCHER_PRESET`, so this benchmark
measures what the main job trains. Each baseline has a CPU-scale preset of its
own (`BASELINE_PRESETS`, documented there) and its own batch of episodes per
iteration (`EPISODES_PER_ITERATION`); ``--set algo.key=value`` overrides
any setting of one method (``--set ppo.policy_lr=1e-4``,
``--set ppo.trainer.episodes_per_iteration=128``). A finished run whose
resolved config is unchanged is read back instead of rerun, so runs can be
added to an output directory one invocation at a time (a setting added since a
run was made counts at its default); a finished run of another config stops
the command, before any run trains, with what differs, and is never
overwritten.

    archer quickstart --env-id archer/TwentyQuestionsMini-v0 --out runs/quickstart
    python benchmarks/sample_efficiency.py --bc runs/quickstart/bc_policy \\
        --env archer/TwentyQuestionsMini-v0 --trajectories 4096 --eval-every 512 --seeds 3

Without ``--bc`` the script builds the cloned policy with the main job itself
(`quickstart.quickstart`, its ArCHer phase cut to one iteration) under
``OUT/bc``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from archer_agents.cli.quickstart import ARCHER_PRESET

ALGORITHMS = ("archer", "ppo", "reinforce", "filtered_bc", "chai")

_ARCHER = ARCHER_PRESET["algorithm"]

BASELINE_PRESETS: dict[str, dict[str, Any]] = {
    # Token-level PPO (training.ppo). CleanRL's shape: 4 epochs over each on-policy batch of 64
    # episodes (about 500 utterances) in minibatches of at least 128 utterances, clip 0.2,
    # GAE(0.95); the value model reads the same hashed features as ArCHer's critic.
    # policy_lr tried on seed 0 over 12,288 trajectories: 3e-6, 1e-5, 3e-5, 1e-4 (the best);
    # 3e-4 collapsed within 2,048 (benchmarks/README.md, "Sample efficiency"). At the word
    # level, over 512 trajectories: 1e-5 (then the best), 3e-5, 1e-4.
    "ppo": {
        "epochs": 4,
        "minibatch_size": 128,
        "clip": 0.2,
        "gamma": 0.95,
        "gae_lambda": 0.95,
        "policy_lr": 1e-4,
        "value_lr": 1e-3,
        "value_encoder": "hashing-lines",
        "max_new_tokens": _ARCHER["max_new_tokens"],
    },
    # Trajectory-level REINFORCE with a batch-mean baseline (training.reinforce): one step per
    # batch of 128 episodes. learning_rate tried on seed 0 with batches of 64: 3e-5, 1e-4, 3e-4;
    # 3e-4 with batches of 128 (3 seeds) ended above 1e-4 with 64, as ArCHer's actor did.
    "reinforce": {
        "learning_rate": 3e-4,
        "max_new_tokens": _ARCHER["max_new_tokens"],
    },
    # Online filtered BC (training.filtered_bc): the paper's 90th percentile; 10 steps of 64
    # utterances per iteration. learning_rate tried on seed 0: 3e-5, 1e-4, 3e-4.
    "filtered_bc": {
        "percentile": 90.0,
        "steps_per_update": 10,
        "batch_size": 64,
        "learning_rate": 3e-5,
        "max_new_tokens": _ARCHER["max_new_tokens"],
    },
    # CHAI (training.chai): ArCHer's critic (same encoder, learning rate, batch and Polyak
    # rate), 10 steps per iteration of 64 episodes, best of the paper's 5 candidates by target
    # min Q; the policy itself is never trained.
    "chai": {
        "encoder": _ARCHER["encoder"],
        "critic_lr": _ARCHER["critic_lr"],
        "critic_steps": 10,
        "critic_batch_size": _ARCHER["critic_batch_size"],
        "polyak_tau": _ARCHER["polyak_tau"],
        "num_candidates": 5,
        "max_new_tokens": _ARCHER["max_new_tokens"],
    },
}
"""CPU-scale settings of the baselines for the 0.6M-parameter demo model.

Each collects `EPISODES_PER_ITERATION` episodes per iteration.

Learning rates are far above the paper's 7B ones (1e-6 to 1e-5), as ArCHer's
are in the main job; every method samples at most as many tokens per utterance
as ArCHer does (12). ``--set`` overrides any of them."""

EPISODES_PER_ITERATION: dict[str, int] = {
    "archer": ARCHER_PRESET["trainer"]["episodes_per_iteration"],
    "ppo": 64,
    "reinforce": 128,
    "filtered_bc": 64,
    "chai": 64,
}
"""Each method's batch of episodes per iteration: the main job's for ArCHer, and for each
baseline the one its learning rate was chosen at (benchmarks/README.md, "Sample efficiency")."""

BENCHMARK_TRAINER_KEYS = ("iterations", "eval_every", "eval_episodes", "seed")
"""Trainer settings the benchmark sets itself (from --trajectories, --eval-every, ...)."""

UPDATE_PARTS = {
    "chai": "critic",
    "ppo": "actor",
    "reinforce": "actor",
    "filtered_bc": "actor",
}
"""Where ``time/update_s`` goes for methods that do not report ``time/critic_s`` and
``time/actor_s`` themselves: CHAI only trains its critic; PPO's actor time includes its
value model's steps, which it interleaves with the policy's."""

RESULT_FILE = "result.json"


# ------------------------------------------------------------------ figures ---


def trajectories_to_threshold(
    trajectories: Sequence[float], returns: Sequence[float], threshold: float
) -> float | None:
    """The trajectories collected at the first evaluation whose return is at or above
    ``threshold``; None if no evaluation reaches it.

    ``trajectories`` and ``returns`` are one curve's evaluation points in order.
    The answer is only as fine as the evaluation cadence.
    """
    if len(trajectories) != len(returns):
        raise ValueError(
            f"got {len(trajectories)} trajectory counts but {len(returns)} returns; pass one "
            "return per evaluation point"
        )
    for count, value in zip(trajectories, returns, strict=True):
        if value >= threshold:
            return float(count)
    return None


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom."""
    table = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)
    if df < 1:
        raise ValueError(f"Student's t needs at least one degree of freedom, got {df}")
    if df <= len(table):
        return table[df - 1]
    z = 1.959964  # Cornish-Fisher: within 0.01 of the exact quantile above 10 degrees of freedom
    return z + (z**3 + z) / (4 * df)


def seed_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval over seeds (the mean twice for one seed)."""
    data = np.asarray(values, dtype=np.float64)
    mean = float(data.mean())
    if data.size < 2:
        return mean, mean, mean
    half = t_quantile_975(data.size - 1) * float(data.std(ddof=1)) / math.sqrt(data.size)
    return mean, mean - half, mean + half


@dataclass
class Curve:
    """One method's test returns across seeds, at evaluation points shared by every seed."""

    trajectories: list[float]
    mean: list[float]
    low: list[float]
    high: list[float]


def mean_curve(points: Sequence[tuple[Sequence[float], Sequence[float]]]) -> Curve:
    """The seeds' mean curve with its interval, at the x values every seed's curve has.

    ``points`` holds one ``(xs, ys)`` curve per seed.
    """
    shared = sorted(set.intersection(*(set(xs) for xs, _ in points)))
    rows = [[dict(zip(xs, ys, strict=True))[x] for xs, ys in points] for x in shared]
    stats = [seed_interval(row) for row in rows]
    return Curve(shared, [s[0] for s in stats], [s[1] for s in stats], [s[2] for s in stats])


@dataclass
class ThresholdFigure:
    """Trajectories to the threshold over seeds: a value, or a bound when some seeds never got
    there (counted at the budget, so the mean is a lower bound)."""

    per_seed: list[float | None]
    mean: float
    reached: int
    """Seeds that reached the threshold within the budget."""

    @property
    def bound(self) -> str:
        """Empty when every seed reached it; ">" when the mean counts unreached seeds at the
        budget (a lower bound)."""
        return "" if self.reached == len(self.per_seed) else ">"


def threshold_figure(per_seed: Sequence[float | None], budget: float) -> ThresholdFigure:
    values = [budget if v is None else v for v in per_seed]
    return ThresholdFigure(
        list(per_seed), float(np.mean(values)), sum(v is not None for v in per_seed)
    )


def ratio_to(figure: ThresholdFigure, reference: ThresholdFigure) -> str:
    """figure / reference as text, with ">" or "<" when either is a bound, "n/a" when both are."""
    if reference.bound and figure.bound:
        return "n/a (neither reached)"
    ratio = figure.mean / reference.mean
    if figure.bound:
        return f"> {ratio:.1f}x"
    if reference.bound:
        return f"< {ratio:.1f}x"
    return f"{ratio:.1f}x"


# --------------------------------------------------------------------- runs ---


@dataclass
class RunResult:
    """What one (method, seed) run measured, read from its metrics log."""

    algo: str
    seed: int
    trajectories: list[float]
    """Training trajectories collected at each evaluation (0: the cloned policy)."""
    returns: list[float]
    """Mean test return at each evaluation."""
    valid_rates: list[float]
    """Share of valid utterances at each evaluation after the start."""
    rollout_trajectories: list[float]
    """Training trajectories collected after each iteration."""
    rollout_returns: list[float]
    """Mean return of each iteration's own training episodes (train split, as sampled)."""
    timing: dict[str, float]
    """Mean seconds per iteration (rollout, critic, actor, update, iteration), seconds per
    evaluation, rollout tokens per second, the run's wall-clock seconds."""
    config: dict[str, Any]


def read_run(
    run_dir: Path, algo: str, seed: int, bc_return: float, config: dict[str, Any], run_s: float
) -> RunResult:
    """A finished run's curves and time split, from its ``metrics.jsonl``."""
    from archer_agents.training.run_dir import METRICS_FILE
    from archer_agents.training.run_log import read_metrics

    records = read_metrics(run_dir / METRICS_FILE)
    evals = [r for r in records if r.get("eval/return_mean") is not None]
    rollouts = [r for r in records if r.get("rollout/return_mean") is not None]
    return RunResult(
        algo=algo,
        seed=seed,
        trajectories=[0.0, *(float(r["episodes"]) for r in evals)],
        returns=[bc_return, *(float(r["eval/return_mean"]) for r in evals)],
        valid_rates=[float(r.get("eval/valid_rate", float("nan"))) for r in evals],
        rollout_trajectories=[float(r["episodes"]) for r in rollouts],
        rollout_returns=[float(r["rollout/return_mean"]) for r in rollouts],
        timing={**time_split(algo, records), "run_s": run_s},
        config=config,
    )


class _FixedActor:
    """An `Algorithm` that never learns: lets `Trainer.evaluate` score a fixed actor."""

    name = "fixed"
    online = True
    config = None
    policy = None

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    def modules(self) -> list[Any]:
        return []

    def actor(self) -> Any:
        return self._actor

    def observe(self, episodes: Sequence[Any]) -> None:
        return None

    def update(self, iteration: int) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


def evaluate_actor(actor: Any, env_id: str, eval_episodes: int, seed: int) -> dict[str, float]:
    """``eval/...`` metrics of ``actor``, exactly as the trainer evaluates a run of ``seed``."""
    from archer_agents.training.trainer import Trainer, TrainerConfig

    config = TrainerConfig(eval_episodes=eval_episodes, seed=seed, tensorboard=False)
    return Trainer(_FixedActor(actor), env_id, Path(os.devnull), config).evaluate()


def references(bc: Path, env_id: str, seeds: Sequence[int], eval_episodes: int) -> dict[str, Any]:
    """The cloned policy's and the expert's test returns per seed, their means, the threshold."""
    from archer_agents.policies.local_policy import LocalPolicy
    from archer_agents.policies.protocol import SamplingParams
    from archer_agents.training.cached_rollout import CachedPolicyActor
    from archer_agents.training.rollout import ScriptedActor

    sampling = SamplingParams(max_new_tokens=_ARCHER["max_new_tokens"])
    out: dict[str, Any] = {"bc": {}, "expert": {}, "bc_valid": {}}
    for seed in seeds:
        policy = LocalPolicy.from_pretrained(bc, seed=seed)
        metrics = evaluate_actor(CachedPolicyActor(policy, sampling), env_id, eval_episodes, seed)
        out["bc"][seed] = metrics["eval/return_mean"]
        out["bc_valid"][seed] = metrics["eval/valid_rate"]
        expert = evaluate_actor(ScriptedActor("expert", seed=seed), env_id, eval_episodes, seed)
        out["expert"][seed] = expert["eval/return_mean"]
        print(
            f"seed {seed}: behaviour-cloned {out['bc'][seed]:.2f}, "
            f"expert {out['expert'][seed]:.2f} ({eval_episodes} test episodes each)"
        )
    out["bc_mean"] = float(np.mean(list(out["bc"].values())))
    out["expert_mean"] = float(np.mean(list(out["expert"].values())))
    out["threshold"] = (out["bc_mean"] + out["expert_mean"]) / 2
    return out


def split_overrides(overrides: Sequence[str]) -> dict[str, list[str]]:
    """``algo.key=value`` strings -> ``{algo: ["key=value", ...]}``."""
    by_algo: dict[str, list[str]] = {name: [] for name in ALGORITHMS}
    for item in overrides:
        algo, _, rest = item.partition(".")
        if algo not in by_algo or "=" not in rest:
            raise SystemExit(
                f"--set {item!r}: write ALGO.key=value with ALGO one of {', '.join(ALGORITHMS)} "
                "(e.g. --set ppo.policy_lr=1e-4 or --set ppo.trainer.episodes_per_iteration=128)"
            )
        key = rest.split("=", 1)[0]
        if key.removeprefix("trainer.") in BENCHMARK_TRAINER_KEYS:
            raise SystemExit(
                f"--set {item!r}: {key} is set by the benchmark for every method alike "
                "(--trajectories, --eval-every, --eval-episodes, --seeds)"
            )
        by_algo[algo].append(rest)
    return by_algo


def run_config(
    algo: str,
    seed: int,
    overrides: Sequence[str],
    *,
    trajectories: int,
    eval_every: int,
    eval_episodes: int,
) -> tuple[Any, Any]:
    """(TrainerConfig, algorithm config) of one run: the preset, the overrides, the budget."""
    from archer_agents.cli.train import algorithm_classes, load_run_config

    _, config_class = algorithm_classes(algo)
    preset = _ARCHER if algo == "archer" else BASELINE_PRESETS[algo]
    seeded = [f"algorithm.seed={seed}"] if "seed" in config_class.model_fields else []
    batch = EPISODES_PER_ITERATION[algo]
    trainer_defaults = {
        "episodes_per_iteration": batch,
        "num_envs": batch,
        "checkpoint_every": 0,  # only after the last iteration: the curves need no resuming
        "keep_checkpoints": 1,
        "tensorboard": False,
    }
    trainer, algorithm = load_run_config(
        algo,
        None,
        [*overrides, *seeded],
        defaults={"trainer": trainer_defaults, "algorithm": preset},
    )
    per_iteration = trainer.episodes_per_iteration
    for name, value in (("--trajectories", trajectories), ("--eval-every", eval_every)):
        if value % per_iteration:
            raise SystemExit(
                f"{name} {value} is not a multiple of {algo}'s {per_iteration} episodes per "
                f"iteration; choose a multiple so that every method is measured at the same "
                "trajectory counts"
            )
    trainer = trainer.model_copy(
        update={
            "iterations": trajectories // per_iteration,
            "eval_every": eval_every // per_iteration,
            "eval_episodes": eval_episodes,
            "seed": seed,
        }
    )
    return trainer, algorithm


def config_differences(saved: Any, asked: Any, path: str = "") -> list[str]:
    """``dotted.key: X there, Y asked`` for every leaf where a saved and an asked config differ."""
    if isinstance(saved, dict) and isinstance(asked, dict):
        return [
            line
            for key in sorted(set(saved) | set(asked), key=str)
            for line in config_differences(
                saved.get(key), asked.get(key), f"{path}.{key}" if path else str(key)
            )
        ]
    return [] if saved == asked else [f"{path}: {saved!r} there, {asked!r} asked"]


def with_present_defaults(
    saved: dict[str, Any], trainer_class: type[Any], algorithm_class: type[Any]
) -> dict[str, Any]:
    """A saved run config with the settings added since it ran filled in at their defaults.

    A setting is added with a default that keeps the earlier behaviour, so a run
    made before it existed is a run at that default. Settings since removed stay
    as they were (and then differ); a section that does not validate is left whole.
    """
    from pydantic import ValidationError

    present = dict(saved)
    for key, model in (("trainer", trainer_class), ("algorithm", algorithm_class)):
        section = saved.get(key, {})
        known = {k: v for k, v in section.items() if k in model.model_fields}
        try:
            filled = model.model_validate(known).model_dump(mode="json")
        except ValidationError:
            continue
        present[key] = {**filled, **{k: v for k, v in section.items() if k not in known}}
    return present


def run_dir_of(out: Path, algo: str, seed: int) -> Path:
    """Where the run of ``algo`` at ``seed`` lives under ``--out``."""
    return out / "runs" / f"{algo}-seed{seed}"


def run_identity(
    algo: str, seed: int, bc: Path, env_id: str, trainer_config: Any, algorithm_config: Any
) -> dict[str, Any]:
    """What a run's result is of: a finished run is read back only for the same identity."""
    return {
        "algo": algo,
        "seed": seed,
        "bc": str(bc.resolve()),
        "env_id": env_id,
        "trainer": trainer_config.model_dump(mode="json"),
        "algorithm": algorithm_config.model_dump(mode="json"),
    }


def finished_run(
    run_dir: Path, identity: dict[str, Any], trainer_config: Any, algorithm_config: Any
) -> dict[str, Any] | None:
    """The saved result of a finished run of ``identity`` in ``run_dir``, or None if none is.

    A finished run of another config stops the command with what differs (it
    is never overwritten), as does a result file that does not read back.
    """
    done = run_dir / RESULT_FILE
    if not done.is_file():
        return None
    try:
        saved = json.loads(done.read_text())
    except json.JSONDecodeError:
        saved = None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise SystemExit(
            f"{done} is not a run result (JSON with its config), so whether {run_dir} "
            "finished is unknown; delete that directory to run it again"
        )
    saved["config"] = with_present_defaults(
        saved["config"], type(trainer_config), type(algorithm_config)
    )
    if saved["config"] != identity:
        raise SystemExit(
            f"{run_dir} holds a finished run of another config ("
            + "; ".join(config_differences(saved["config"], identity))
            + "); pass another --out, or delete that directory to run it again"
        )
    return saved


def run_one(
    algo: str,
    seed: int,
    bc: Path,
    env_id: str,
    run_dir: Path,
    trainer_config: Any,
    algorithm_config: Any,
    bc_return: float,
) -> RunResult:
    """Train ``algo`` from a fresh copy of the cloned policy; read its curve and timings back.

    A run directory holding a finished run of the same config is read back, not rerun
    (`finished_run`).
    """
    from archer_agents.cli.train import algorithm_classes
    from archer_agents.policies.local_policy import LocalPolicy
    from archer_agents.training.checkpoint import write_text_atomic
    from archer_agents.training.trainer import Trainer

    config = run_identity(algo, seed, bc, env_id, trainer_config, algorithm_config)
    saved = finished_run(run_dir, config, trainer_config, algorithm_config)
    if saved is not None:
        print(f"{algo} seed {seed}: finished run read back from {run_dir}")
        return read_run(run_dir, algo, seed, bc_return, config, saved["run_s"])
    if run_dir.exists():  # an unfinished run (killed or stopped): this script owns OUT/runs
        shutil.rmtree(run_dir)

    algorithm_class, _ = algorithm_classes(algo)
    torch.manual_seed(seed)
    policy = LocalPolicy.from_pretrained(bc, seed=seed)
    algorithm = algorithm_class(algorithm_config, policy)

    def on_iteration(iteration: int, record: dict[str, float]) -> None:
        if "eval/return_mean" in record:
            print(
                f"{algo} seed {seed}: iteration {iteration}, {record['episodes']} trajectories, "
                f"test return {record['eval/return_mean']:.2f}, "
                f"valid {record.get('eval/valid_rate', float('nan')):.1%}, "
                f"{record['time/train_s'] / 60:.1f} min"
            )

    started = time.perf_counter()
    Trainer(
        algorithm,
        env_id,
        run_dir,
        trainer_config,
        run_info={"model": str(bc), "lora": None, "benchmark": "sample_efficiency"},
        references={"behaviour-cloned": bc_return},
        on_iteration=on_iteration,
    ).train()
    run_s = time.perf_counter() - started
    write_text_atomic(
        run_dir / RESULT_FILE, json.dumps({"config": config, "run_s": run_s}, indent=2)
    )
    return read_run(run_dir, algo, seed, bc_return, config, run_s)


def time_split(algo: str, records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean seconds per iteration in rollout, critic and actor; seconds per evaluation; rollout
    tokens per second. Iterations without an actor step (ArCHer's warm-up) count as 0 s."""
    iterations = [r for r in records if r.get("time/rollout_s") is not None]
    if not iterations:
        return {}

    def mean(key: str) -> float:
        return float(np.mean([float(r.get(key) or 0.0) for r in iterations]))

    update = mean("time/update_s")
    part = UPDATE_PARTS.get(algo)
    critic = update if part == "critic" else mean("time/critic_s")
    actor = update if part == "actor" else mean("time/actor_s")
    evals = [float(r["time/eval_s"]) for r in records if r.get("time/eval_s") is not None]
    return {
        "rollout_s": mean("time/rollout_s"),
        "critic_s": critic,
        "actor_s": actor,
        "update_s": update,
        "iteration_s": mean("time/rollout_s") + update,
        "eval_s": float(np.mean(evals)) if evals else float("nan"),
        "rollout_tokens_per_s": mean("rollout/tokens_per_s"),
    }


# ------------------------------------------------------------------ reports ---


def summarize_runs(
    runs: dict[str, list[RunResult]], refs: dict[str, Any], budget: float
) -> dict[str, Any]:
    """Per method: the mean curve, final return, trajectories to the threshold, time split."""
    threshold = refs["threshold"]
    out: dict[str, Any] = {}
    for algo, results in runs.items():
        curve = mean_curve([(r.trajectories, r.returns) for r in results])
        rollout = mean_curve([(r.rollout_trajectories, r.rollout_returns) for r in results])
        per_seed = [
            trajectories_to_threshold(r.trajectories, r.returns, threshold) for r in results
        ]
        final = seed_interval([r.returns[-1] for r in results])
        timing = {
            key: float(np.mean([r.timing[key] for r in results])) for key in results[0].timing
        }
        out[algo] = {
            "seeds": [r.seed for r in results],
            "curve": asdict(curve),
            "rollout_curve": asdict(rollout),
            "final_return": {"mean": final[0], "low": final[1], "high": final[2]},
            "to_threshold": asdict(threshold_figure(per_seed, budget)),
            "mean_curve_to_threshold": trajectories_to_threshold(
                curve.trajectories, curve.mean, threshold
            ),
            "timing": timing,
        }
    return out


def markdown(summary: dict[str, Any], refs: dict[str, Any], budget: float, command: str) -> str:
    """The report: references, the sample-efficiency table and the time split."""

    def count(value: float | None) -> str:
        return f"not reached within {budget:.0f}" if value is None else f"{value:.0f}"

    lines = [
        f"command: `{command}`",
        "",
        f"behaviour-cloned {refs['bc_mean']:.2f}, expert {refs['expert_mean']:.2f}, "
        f"threshold {refs['threshold']:.2f} (halfway); budget {budget:.0f} trajectories per run. "
        "Test returns are the trainer's evaluations; the last training episodes' return is the "
        "mean over seeds of the last iteration's own episodes (train split, as sampled).",
        "",
        "| method | final test return (95% CI over seeds) | last training episodes' return "
        "| trajectories to threshold, per seed | mean over seeds | on the mean curve "
        "| ratio to ArCHer |",
        "|---|---|---|---|---|---|---|",
    ]
    archer = summary.get("archer")
    for algo, row in summary.items():
        final = row["final_return"]
        figure = ThresholdFigure(**row["to_threshold"])
        ratio = (
            ratio_to(figure, ThresholdFigure(**archer["to_threshold"]))
            if archer is not None
            else "n/a (no ArCHer run)"
        )
        per_seed = ", ".join(count(v) for v in figure.per_seed)
        mean = f"{figure.bound} {figure.mean:.0f}".strip()
        lines.append(
            f"| {algo} | {final['mean']:.2f} [{final['low']:.2f}, {final['high']:.2f}] "
            f"| {row['rollout_curve']['mean'][-1]:.2f} | {per_seed} "
            f"| {mean} ({figure.reached}/{len(figure.per_seed)} reached) "
            f"| {count(row['mean_curve_to_threshold'])} | {ratio} |"
        )
    lines += [
        "",
        "Mean seconds per training iteration (evaluations excluded), per evaluation, and the "
        "rollouts' generated tokens per second:",
        "",
        "| method | iteration s | rollout s | critic s | actor s | eval s | rollout tokens/s "
        "| run min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for algo, row in summary.items():
        t = row["timing"]
        lines.append(
            f"| {algo} | {t['iteration_s']:.1f} | {t['rollout_s']:.1f} | {t['critic_s']:.1f} "
            f"| {t['actor_s']:.1f} | {t['eval_s']:.1f} | {t['rollout_tokens_per_s']:.0f} "
            f"| {t['run_s'] / 60:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], refs: dict[str, Any], path: Path, title: str) -> Path:
    """Mean test return against trajectories collected, 95% intervals across seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (axes, lower) = plt.subplots(
        2, 1, figsize=(8, 8), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    for algo, row in summary.items():
        curve = row["curve"]
        (line,) = axes.plot(curve["trajectories"], curve["mean"], marker="o", label=algo)
        axes.fill_between(
            curve["trajectories"], curve["low"], curve["high"], color=line.get_color(), alpha=0.15
        )
        rollout = row["rollout_curve"]
        lower.plot(rollout["trajectories"], rollout["mean"], color=line.get_color(), label=algo)
    for label, value, color in (
        ("expert", refs["expert_mean"], "black"),
        ("threshold", refs["threshold"], "tab:gray"),
        ("behaviour-cloned", refs["bc_mean"], "tab:brown"),
    ):
        axes.axhline(value, linestyle="--", linewidth=1, color=color, label=f"{label} {value:.2f}")
    axes.set_ylabel("mean test return (95% CI over seeds)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="lower right")
    lower.set_ylabel("training episodes' return\n(train split, mean over seeds)")
    lower.set_xlabel("training trajectories collected")
    lower.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# --------------------------------------------------------------------- main ---


def build_bc(out: Path, env_id: str) -> Path:
    """The main job's behaviour-cloned policy: `quickstart.quickstart` with ArCHer cut short.

    The quickstart builds the model, clones its teacher and saves ``bc_policy``
    before its ArCHer phase, which is cut to one iteration here.
    """
    from archer_agents.cli.quickstart import quickstart

    quickstart(
        out,
        env_id=env_id,
        eval_episodes=1,
        overrides=["trainer.iterations=1", "trainer.eval_episodes=1"],
    )
    return out / "bc_policy"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bc", type=Path, help="behaviour-cloned policy dir (default: build one)")
    parser.add_argument("--env", default="archer/TwentyQuestionsMini-v0")
    parser.add_argument("--algos", default=",".join(ALGORITHMS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds K .. K+N-1 (K: --first-seed)")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="first seed, to run seeds in several commands into one --out (finished runs are "
        "read back)",
    )
    parser.add_argument("--trajectories", type=int, default=1024, help="budget of every run")
    parser.add_argument(
        "--eval-every", type=int, default=128, help="evaluate every this many trajectories"
    )
    parser.add_argument("--eval-episodes", type=int, default=100, help="test episodes per eval")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="ALGO.key=value override (e.g. ppo.policy_lr=1e-4), repeatable",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=Path("runs/sample_efficiency"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns what ``results.json`` holds."""
    import sys

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    unknown = sorted(set(algos) - set(ALGORITHMS))
    if unknown or not algos:
        raise SystemExit(f"--algos: unknown {unknown}; choose from {', '.join(ALGORITHMS)}")
    overrides = split_overrides(args.overrides)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    configs = {
        (algo, seed): run_config(
            algo,
            seed,
            overrides[algo],
            trajectories=args.trajectories,
            eval_every=args.eval_every,
            eval_episodes=args.eval_episodes,
        )
        for algo in algos
        for seed in seeds
    }
    args.out.mkdir(parents=True, exist_ok=True)
    bc = args.bc if args.bc is not None else build_bc(args.out / "bc", args.env)
    for (algo, seed), (trainer_config, algorithm_config) in configs.items():
        # Every conflict stops the command before any run trains.
        identity = run_identity(algo, seed, bc, args.env, trainer_config, algorithm_config)
        finished_run(run_dir_of(args.out, algo, seed), identity, trainer_config, algorithm_config)
    refs = references(bc, args.env, seeds, args.eval_episodes)
    print(
        f"behaviour-cloned {refs['bc_mean']:.2f}, expert {refs['expert_mean']:.2f}, "
        f"threshold {refs['threshold']:.2f}"
    )
    runs: dict[str, list[RunResult]] = {}
    for algo in algos:
        for seed in seeds:
            trainer_config, algorithm_config = configs[algo, seed]
            runs.setdefault(algo, []).append(
                run_one(
                    algo,
                    seed,
                    bc,
                    args.env,
                    run_dir_of(args.out, algo, seed),
                    trainer_config,
                    algorithm_config,
                    refs["bc"][seed],
                )
            )
    budget = float(args.trajectories)
    summary = summarize_runs(runs, refs, budget)
    command = " ".join(["python benchmarks/sample_efficiency.py", *(argv or sys.argv[1:])])
    report = markdown(summary, refs, budget, command)
    curve_path = plot(
        summary, refs, args.out / "curves.png", f"{args.env}: {len(seeds)} seeds per method"
    )
    (args.out / "results.md").write_text(report)
    results = {
        "command": command,
        "env_id": args.env,
        "bc": str(bc),
        "budget": budget,
        "references": refs,
        "methods": summary,
        "runs": [asdict(r) for results in runs.values() for r in results],
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(report)
    print(f"curves {curve_path}, table {args.out / 'results.md'}, figures {args.out}/results.json")
    return results


if __name__ == "__main__":
    main()
