"""The main job: the embedded default model learns Twenty Questions on a CPU, then ArCHer.

`archer quickstart` (``make demo``), from nothing, on two CPU cores in under ten minutes:

1. build the embedded demo model (a small Llama, its tokenizer trained on the
   game's text);
2. let the scripted expert play the train split and behaviour-clone it (whole
   episodes per batch, scored packed: `LocalPolicy.log_probs_packed`);
3. train the cloned policy online with ArCHer under the shared trainer, with
   the ``cpu-small`` preset (`training.presets`) and a time budget, in two
   processes that each play half of every iteration's episodes and average
   their gradients (`training.spawn`, `training.distributed`);
4. print a before/after table on the test split (random, the teacher, the
   cloned policy, ArCHer; success and mean return with 95% intervals over
   tasks) and how much of the gap between the cloned policy and the expert
   ArCHer closed.

Everything lands in the run directory: the teacher's episodes, the cloned
policy, ArCHer's episode log, metrics (JSONL, TensorBoard), learning curve,
checkpoints and trained policy, and ``summary.json``.

Why these choices, for two cores and ten minutes (the measurements behind
them are in docs/benchmarks/main-job.md):

- The game is `archer/TwentyQuestionsMini-v0` (every object in both splits,
  as in the paper): behaviour cloning gets a small model far from random
  play within the budget, which the full game does not.
- The demo tokenizer merges within lines (``--merge-within line``): each of
  the game's questions and guesses, and each answered line of the history, is
  one token. Histories are several times shorter than with word-level merges,
  which is what lets ArCHer run enough iterations; ``--merge-within word``
  builds the word-level tokenizer of real LLMs.
- The teacher is the scripted expert: its near-deterministic questions clone
  faster than the weak agent's random ones.
- Two processes of one torch thread each: batched generation and the actor's
  step of a model this small are bound by per-call overhead, not arithmetic,
  so a second process does far more work per second than a second thread
  (``--processes 1`` keeps one).
- ArCHer at CPU scale, not the paper's settings: large iterations, few
  critic steps on whole episodes, one actor step over all the turns of an
  iteration with GAE over the online V, and the stability options
  (docs/algorithm.md, "Stability options") that keep its questions valid.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from archer_agents.cli.common import (
    UserError,
    collect_with_progress,
    console,
    env_factory,
    finite_number,
    merge_scope,
    progress_bar,
    run_command,
    summary_table,
)
from archer_agents.training.presets import CPU_SMALL

ARCHER_PRESET: dict[str, dict[str, Any]] = CPU_SMALL.defaults()
"""The ``cpu-small`` preset (`training.presets`): the ArCHer phase's settings, one place."""

TRAINER_FILES = (
    "episodes.jsonl",
    "episodes.abandoned.jsonl",
    "metrics.jsonl",
    "metrics.abandoned.jsonl",
    "learning_curve.png",
    "run.json",
    "checkpoints",
    "tensorboard",
    "policy",
)


def quickstart_command(
    out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/quickstart"),
    env_id: Annotated[str, typer.Option(help="Environment.")] = "archer/TwentyQuestionsMini-v0",
    teacher: Annotated[
        str, typer.Option(help="Scripted agent to clone: expert or weak.")
    ] = "expert",
    data_episodes: Annotated[int, typer.Option(help="Teacher episodes to clone.")] = 1500,
    bc_steps: Annotated[int, typer.Option(help="Behaviour-cloning steps.")] = 700,
    archer_minutes: Annotated[
        float,
        typer.Option(help="Time budget of the ArCHer phase, in minutes.", callback=finite_number),
    ] = 7.0,
    eval_episodes: Annotated[int, typer.Option(help="Test episodes per policy.")] = 520,
    merge_within: Annotated[
        str,
        typer.Option(help="The demo tokenizer's merges stay within a 'line' or a 'word'."),
    ] = "line",
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="ArCHer/trainer override key=value (e.g. actor_lr=3e-4)."),
    ] = None,
    threads: Annotated[
        int,
        typer.Option(help="CPU threads for torch, per process (1 is fastest on shared cores)."),
    ] = 1,
    processes: Annotated[
        int | None,
        typer.Option(
            help="Processes training ArCHer together, each playing its share of every "
            "iteration's episodes (default: 2, or 1 on a one-core machine).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """The main job: build a model, clone a teacher, train it with ArCHer, compare."""

    def run() -> None:
        quickstart(
            out,
            env_id=env_id,
            teacher=teacher,
            data_episodes=data_episodes,
            bc_steps=bc_steps,
            archer_minutes=archer_minutes,
            eval_episodes=eval_episodes,
            merge_within=merge_within,
            overrides=list(overrides or []),
            threads=threads,
            processes=processes,
            seed=seed,
        )

    run_command(run)


def quickstart(
    out: Path,
    *,
    env_id: str = "archer/TwentyQuestionsMini-v0",
    teacher: str = "expert",
    data_episodes: int = 1500,
    bc_steps: int = 700,
    archer_minutes: float = 7.0,
    eval_episodes: int = 520,
    merge_within: str = "line",
    overrides: list[str] | None = None,
    threads: int = 1,
    processes: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the main job into ``out``; returns the figures written to ``summary.json``.

    ``processes`` (default `default_processes`) train ArCHer together
    (`training.spawn.run_processes`); the other phases run in this process.
    """
    import torch

    from archer_agents.cli.train import load_run_config
    from archer_agents.data.episode_log import EpisodeWriter
    from archer_agents.policies.local_policy import LocalPolicy
    from archer_agents.policies.tiny_model import init_model
    from archer_agents.training.algorithms.archer import ArcherConfig
    from archer_agents.training.algorithms.bc import BCConfig, behaviour_clone
    from archer_agents.training.cached_rollout import CachedPolicyActor
    from archer_agents.training.chat_rollout import chat_actor_for
    from archer_agents.training.corpus import environment_corpus
    from archer_agents.training.rollout import ScriptedActor
    from archer_agents.training.run_dir import CURVE_FILE, METRICS_FILE, POLICY_DIR
    from archer_agents.training.spawn import ProcessFailed, run_processes

    if teacher not in ("expert", "weak"):
        raise UserError(f"--teacher must be weak or expert, not {teacher!r}")
    env_factory(env_id)  # an unknown id or a failing module: one line, before any work
    scope = merge_scope(merge_within)
    processes = default_processes() if processes is None else processes
    if processes < 1:
        raise UserError(f"--processes must be at least 1, got {processes}")
    run_overrides = [*list(overrides or []), f"trainer.seed={seed}", f"algorithm.seed={seed}"]
    defaults = CPU_SMALL.defaults()  # the cpu-small preset, its time budget from the option
    defaults["trainer"]["time_budget_s"] = archer_minutes * 60
    trainer_config, archer_config = load_run_config("archer", None, run_overrides, defaults)
    assert isinstance(archer_config, ArcherConfig)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    out.mkdir(parents=True, exist_ok=True)
    for name in TRAINER_FILES:  # the quickstart always starts from nothing
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    def evaluate(name: str, actor: Any) -> Any:
        from archer_agents.training.evaluation import summarize

        episodes = collect_with_progress(
            env_id,
            actor,
            eval_episodes,
            description=f"eval {name}",
            split="test",
            num_envs=64,
            seed=seed + 10_000,
            sweep_tasks=True,
        ).episodes
        return summarize(episodes)

    console.rule("1. the embedded demo model")
    step = time.perf_counter()
    model_dir = out / "model"
    with console.status("training the tokenizer on the game's text, building the model..."):
        init_model(
            model_dir,
            environment_corpus([env_id], seed=seed),
            size="demo",
            seed=seed,
            overwrite=True,
            merge_within=scope,
        )
    policy = LocalPolicy.from_pretrained(model_dir, seed=seed)
    n_params = sum(p.numel() for p in policy.model.parameters())
    console.print(f"built {model_dir} ({n_params / 1e6:.2f}M parameters)")

    console.rule(f"2. behaviour cloning: {data_episodes} {teacher} episodes (train split)")
    log_path = out / f"{teacher}_episodes.jsonl"
    log_path.unlink(missing_ok=True)
    with EpisodeWriter(log_path, fsync=False) as writer:
        data = collect_with_progress(
            env_id,
            ScriptedActor(teacher, seed=seed),
            data_episodes,
            description=f"{teacher} play",
            split="train",
            num_envs=64,
            seed=seed,
            writer=writer,
        ).episodes
    timings["model_and_data_s"] = time.perf_counter() - step
    step = time.perf_counter()
    bc_config = BCConfig(
        steps=bc_steps, batch_size=64, learning_rate=3e-3, warmup_steps=20, packed=True, seed=seed
    )
    with progress_bar() as progress:
        task = progress.add_task("behaviour cloning", total=bc_steps, info="")
        behaviour_clone(
            policy,
            data,
            bc_config,
            on_step=lambda i, m: progress.update(
                task, completed=i, info=f"loss {m['bc/loss']:.3f}"
            ),
        )
    bc_dir = policy.save(out / "bc_policy")
    timings["bc_s"] = time.perf_counter() - step

    console.rule("3. before: scripted agents and the cloned policy (test split)")
    step = time.perf_counter()
    rows: dict[str, Any] = {"random": evaluate("random", ScriptedActor("random", seed=seed))}
    teacher_row = rows[f"{teacher} scripted (teacher)"] = evaluate(
        teacher, ScriptedActor(teacher, seed=seed)
    )
    if teacher == "expert":
        expert_row = teacher_row
    else:
        expert_row = rows["expert scripted"] = evaluate(
            "expert", ScriptedActor("expert", seed=seed)
        )
    rows["behaviour-cloned"] = evaluate(
        "behaviour-cloned", chat_actor_for(CachedPolicyActor(policy, archer_config.sampling))
    )
    timings["eval_before_s"] = time.perf_counter() - step
    bc_return = rows["behaviour-cloned"].mean_return.mean
    expert_return = expert_row.mean_return.mean
    console.print(summary_table(f"{env_id}: before ArCHer, test split", rows))

    split = "one process" if processes == 1 else f"{processes} processes"
    console.rule(f"4. ArCHer ({archer_minutes:g} min budget, {split})")
    step = time.perf_counter()
    phase = (
        out,
        env_id,
        str(bc_dir),
        defaults,
        run_overrides,
        {"expert": expert_return, "behaviour-cloned": bc_return},
    )
    try:
        run_processes(archer_phase, phase, processes, threads=threads)
    except ProcessFailed as error:
        if error.traceback:
            console.print(error.traceback, style="dim", markup=False, highlight=False)
        raise UserError(
            f"the ArCHer phase stopped: {error}. Its checkpoints are in {out / 'checkpoints'}; "
            f"`archer quickstart --processes 1` trains in this process instead"
        ) from None
    iterations, episodes, valid_min = _run_figures(out / METRICS_FILE)
    trained = LocalPolicy.from_pretrained(out / POLICY_DIR, seed=seed)
    timings["archer_s"] = time.perf_counter() - step

    console.rule("5. after ArCHer (test split)")
    step = time.perf_counter()
    rows["ArCHer"] = evaluate(
        "ArCHer", chat_actor_for(CachedPolicyActor(trained, archer_config.sampling))
    )
    timings["eval_after_s"] = time.perf_counter() - step
    timings["total_s"] = time.perf_counter() - started
    order = ["random", f"{teacher} scripted (teacher)", "behaviour-cloned", "ArCHer"]
    if teacher != "expert":
        order.append("expert scripted")
    table = {name: rows[name] for name in order}
    console.print(summary_table(f"{env_id}: test split, {eval_episodes} episodes each", table))
    archer_return = rows["ArCHer"].mean_return.mean
    gap = expert_return - bc_return
    closed = (archer_return - bc_return) / gap if gap > 0 else float("nan")
    console.print(
        f"ArCHer closed {closed:.0%} of the gap between the cloned policy ({bc_return:.2f}) and "
        f"the expert ({expert_return:.2f}); lowest share of valid questions during training "
        f"{valid_min:.1%}; {iterations} iterations, {episodes} episodes."
    )
    console.print(
        f"done in {timings['total_s'] / 60:.1f} min; learning curve {out / CURVE_FILE}, "
        f"trained policy {out / POLICY_DIR}"
    )
    summary = {
        "env_id": env_id,
        "teacher": teacher,
        "rows": {name: s.as_dict() for name, s in table.items()},
        "gap_closed": closed,
        "lowest_rollout_valid_rate": valid_min,
        "iterations": iterations,
        "episodes": episodes,
        "processes": processes,
        "timings_s": timings,
        "archer_config": archer_config.model_dump(mode="json"),
        "trainer_config": trainer_config.model_dump(mode="json"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def default_processes() -> int:
    """Two processes for the ArCHer phase (the measured setting), one on a one-core machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(2, cores)


def archer_phase(
    out: Path,
    env_id: str,
    model: str,
    defaults: dict[str, Any],
    overrides: list[str],
    references: dict[str, float],
) -> None:
    """ArCHer from the cloned policy ``model`` into ``out``: one of `run_processes`' processes."""
    from archer_agents.cli.train import train

    train(
        algo="archer",
        env_id=env_id,
        model=model,
        out=out,
        overrides=overrides,
        defaults=defaults,
        references=references,
    )


def _run_figures(metrics_path: Path) -> tuple[int, int, float]:
    """Iterations and episodes of a run's last metrics record, and its lowest valid share."""
    from archer_agents.training.run_log import read_metrics

    last = {"iteration": 0.0, "episodes": 0.0}
    rates = []
    for record in read_metrics(metrics_path):
        if "iteration" in record:
            last = record
        rates += [
            float(record[key])
            for key in ("rollout/valid_rate", "eval/valid_rate")
            if record.get(key) is not None
        ]
    lowest = min(rates) if rates else float("nan")
    return int(last["iteration"]), int(last["episodes"]), lowest


def register(app: typer.Typer) -> None:
    """Add ``archer quickstart`` to ``app``."""
    app.command("quickstart")(quickstart_command)
