"""The main job: the embedded default model learns Twenty Questions on a CPU.

`archer quickstart` builds the demo model, collects scripted episodes,
behaviour-clones them and prints a before/after table on the test split.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from archer_agents.cli import (
    UserError,
    _collect_with_progress,
    _run,
    _train_bc,
    app,
    console,
    summary_table,
)


@app.command("quickstart")
def quickstart_command(
    out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/quickstart"),
    env_id: Annotated[str, typer.Option(help="Environment.")] = "archer/TwentyQuestions-v0",
    bc_steps: Annotated[int, typer.Option(help="Behaviour-cloning steps.")] = 1500,
    data_episodes: Annotated[int, typer.Option(help="Scripted episodes to clone.")] = 2000,
    teacher: Annotated[
        str, typer.Option(help="Scripted agent to clone: expert or weak.")
    ] = "expert",
    eval_episodes: Annotated[int, typer.Option(help="Test episodes per policy.")] = 500,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """The main job on the embedded default: build a model, clone a teacher, compare."""

    def run() -> None:
        quickstart(
            out,
            env_id=env_id,
            bc_steps=bc_steps,
            data_episodes=data_episodes,
            teacher=teacher,
            eval_episodes=eval_episodes,
            seed=seed,
        )

    _run(run)


def quickstart(
    out: Path,
    *,
    env_id: str,
    bc_steps: int,
    data_episodes: int,
    teacher: str,
    eval_episodes: int,
    seed: int,
) -> dict[str, Any]:
    from archer_agents.episode_log import EpisodeWriter
    from archer_agents.local_policy import LocalPolicy
    from archer_agents.policy import SamplingParams
    from archer_agents.tiny_model import init_model
    from archer_agents.training.bc import BCConfig
    from archer_agents.training.corpus import environment_corpus
    from archer_agents.training.evaluation import summarize
    from archer_agents.training.rollout import PolicyActor, ScriptedActor

    if teacher not in ("expert", "weak"):
        raise UserError(f"--teacher must be expert or weak, not {teacher!r}")
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    model_dir = out / "model"
    console.rule("1. the embedded default model")
    with console.status("training the tokenizer on the environments' text..."):
        texts = environment_corpus(seed=seed)
        init_model(model_dir, texts, size="demo", seed=seed, overwrite=True)
    policy = LocalPolicy.from_pretrained(model_dir)
    n_params = sum(p.numel() for p in policy.model.parameters())
    console.print(f"built {model_dir} ({n_params / 1e6:.2f}M parameters)")

    console.rule(f"2. {data_episodes} {teacher} episodes on the train split")
    log_path = out / f"{teacher}_episodes.jsonl"
    log_path.unlink(missing_ok=True)
    with EpisodeWriter(log_path) as writer:
        data = _collect_with_progress(
            env_id,
            ScriptedActor(teacher, seed=seed),
            data_episodes,
            description=f"{teacher} play",
            split="train",
            num_envs=64,
            seed=seed,
            writer=writer,
        ).episodes
    console.print(f"episode log: {log_path}")

    console.rule("3. before training: the untrained model and the scripted agents (test split)")
    rows: dict[str, Any] = {}
    evaluations = [
        ("random", ScriptedActor("random", seed=seed)),
        ("untrained model", PolicyActor(policy)),
    ]
    for name, actor in evaluations:
        rows[name] = summarize(
            _collect_with_progress(
                env_id,
                actor,
                eval_episodes,
                description=f"eval {name}",
                split="test",
                num_envs=64,
                seed=seed + 10_000,
                sweep_tasks=True,
            ).episodes
        )

    console.rule(f"4. behaviour cloning ({bc_steps} steps)")
    config = BCConfig(steps=bc_steps, eval_every=0, seed=seed)
    _train_bc(policy, data, config, eval_env=None, eval_episodes=0, seed=seed)
    policy.save(out / "bc_policy")

    console.rule("5. after: the behaviour-cloned model (test split)")
    for name, actor in (
        ("behaviour-cloned", PolicyActor(policy, SamplingParams())),
        ("weak scripted", ScriptedActor("weak", seed=seed)),
        ("expert scripted", ScriptedActor("expert", seed=seed)),
    ):
        rows[name] = summarize(
            _collect_with_progress(
                env_id,
                actor,
                eval_episodes,
                description=f"eval {name}",
                split="test",
                num_envs=64,
                seed=seed + 10_000,
                sweep_tasks=True,
            ).episodes
        )
    console.print(summary_table(f"{env_id}: test split, {eval_episodes} episodes each", rows))
    minutes = (time.perf_counter() - started) / 60
    console.print(f"done in {minutes:.1f} min; policy in {out / 'bc_policy'}")
    return rows
