"""`archer envs`, `play`, `rollout` and `eval`: the commands that play environments.

Every ``ENV`` argument is a registered id (``archer envs``) or Gymnasium's
``module:id`` form: ``--env my_pkg.envs:bank/MoveMoney-v0`` imports
``my_pkg.envs``, which registers the environment (`register_tool_env`).
``--env-arg KEY=VALUE`` passes keyword arguments to the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from archer_agents.cli.common import (
    EnvArgs,
    TemperatureOption,
    UserError,
    collect_with_progress,
    console,
    env_factory,
    make_actor,
    parse_env_args,
    run_command,
    summary_table,
)

ENV_HELP = "Environment: a registered id (archer envs) or module:id (the module registers it)."


TASK_FILE_ROW = "PATH.yaml | PATH.json"
"""How `archer envs` names the task-file environment: a task file's path is an ENV."""


def envs_command() -> None:
    """List the registered environments, and the browser task file as an environment."""
    import gymnasium as gym

    from archer_agents.environments.registration import (
        BROWSER_TASK_ID,
        MINIWOB_SUITE_ID,
        miniwob_ids,
        registered_ids,
    )

    table = Table(
        title="archer environments",
        caption=(
            f"{TASK_FILE_ROW}: a browser task file's path is an environment wherever ENV goes "
            f"(archer rollout tasks/mine.yaml), the same as {BROWSER_TASK_ID} with "
            "--env-arg task=PATH; examples: archer_agents/environments/browser_task/tasks/, "
            "the file's fields: docs/guides/browser-tasks.md."
        ),
    )
    table.add_column("id")
    table.add_column("entry point")
    for env_id in [*registered_ids(), *miniwob_ids(), MINIWOB_SUITE_ID]:
        table.add_row(env_id, str(gym.spec(env_id).entry_point))
    table.add_row(TASK_FILE_ROW, str(gym.spec(BROWSER_TASK_ID).entry_point))
    console.print(table)


def play_command(
    env_id: Annotated[str, typer.Argument(help=ENV_HELP)],
    split: Annotated[str, typer.Option(help="Task split: train or test.")] = "train",
    task_id: Annotated[
        str | None, typer.Option(help="A task of the split (default: drawn).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Episode seed.")] = 0,
    env_args: EnvArgs = None,
) -> None:
    """Play an environment yourself: read the observation, type an action. 'quit' ends."""

    def run() -> None:
        env = env_factory(env_id, env_args)()
        options: dict[str, Any] = {"split": split}
        if task_id is not None:
            options["task_id"] = task_id
        try:
            observation, info = env.reset(seed=seed, options=options)
        except (KeyError, ValueError) as exc:
            raise UserError(str(exc).strip("'\"")) from None
        console.print(f"[dim]task {info.get('task_id')} ({split})[/]")
        total = 0.0
        shown = ""
        while True:
            console.print(
                observation[len(shown) :] if observation.startswith(shown) else observation
            )
            shown = observation
            try:
                action = typer.prompt("action", prompt_suffix="> ")
            except (EOFError, typer.Abort):
                console.print("bye")
                return
            if action.strip().lower() in {"quit", "exit"}:
                return
            observation, reward, terminated, truncated, info = env.step(action)
            total += reward
            if info.get("error"):
                console.print(f"[yellow]{info['error']}[/]")
            console.print(f"[dim]reward {reward:+.2f}, total {total:+.2f}[/]")
            if terminated or truncated:
                console.print(observation[len(shown) :])
                outcome = "success" if info.get("success") else "no success"
                console.print(f"[bold]episode over[/]: {outcome}, return {total:+.2f}")
                return

    run_command(run)


def rollout_command(
    env_id: Annotated[str, typer.Argument(help=ENV_HELP)],
    policy: Annotated[
        str,
        typer.Option(help="expert, weak, random, a model or adapter folder, or a training run."),
    ] = "expert",
    episodes: Annotated[int, typer.Option(help="Episodes to play.", min=1)] = 100,
    out: Annotated[Path, typer.Option(help="Episode log (JSONL) to append to.")] = Path(
        "episodes.jsonl"
    ),
    split: Annotated[str, typer.Option(help="Task split.")] = "train",
    num_envs: Annotated[int, typer.Option(help="Environments played side by side.", min=1)] = 32,
    temperature: TemperatureOption = 1.0,
    max_new_tokens: Annotated[int, typer.Option(help="Longest utterance in tokens.", min=1)] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the first episode.")] = 0,
    env_args: EnvArgs = None,
    chat_model: Annotated[
        str | None,
        typer.Option(
            help="A model folder whose chat template and tool-call format a scripted policy "
            "speaks: behaviour-cloning data for that model."
        ),
    ] = None,
) -> None:
    """Play episodes with a policy and append them to an episode log."""

    def run() -> None:
        from archer_agents.data.episode_log import EpisodeWriter
        from archer_agents.training.evaluation import summarize

        kwargs = parse_env_args(env_args)
        env_factory(env_id, kwargs)  # an unknown environment fails before the log is opened
        actor = make_actor(
            policy,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=seed,
            chat_model=chat_model,
        )
        with EpisodeWriter(out) as writer:
            result = collect_with_progress(
                env_id,
                actor,
                episodes,
                description="rollout",
                split=split,
                num_envs=num_envs,
                seed=seed,
                writer=writer,
                env_args=kwargs,
            )
        console.print(summary_table(f"{env_id} ({split})", {policy: summarize(result.episodes)}))
        console.print(
            f"{len(result.episodes)} episodes appended to {out} in {result.seconds:.1f}s "
            f"({result.episodes_per_second:.1f} episodes/s, "
            f"{result.tokens_per_second:.0f} tokens/s)"
        )

    run_command(run)


def eval_command(
    env_id: Annotated[str, typer.Argument(help=ENV_HELP)],
    policy: Annotated[
        list[str],
        typer.Option(help="expert, weak, random, a model folder or a training run; repeatable."),
    ],
    episodes: Annotated[
        int, typer.Option(help="Episodes per policy (sweeping the split's tasks).", min=1)
    ] = 200,
    split: Annotated[str, typer.Option(help="Task split.")] = "test",
    num_envs: Annotated[int, typer.Option(help="Environments played side by side.", min=1)] = 64,
    temperature: TemperatureOption = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the first episode.")] = 10_000,
    env_args: EnvArgs = None,
    max_new_tokens: Annotated[int, typer.Option(help="Longest utterance in tokens.", min=1)] = 32,
) -> None:
    """Evaluate policies on a split: success and return with 95% intervals over tasks."""

    def run() -> None:
        from archer_agents.training.evaluation import summarize

        kwargs = parse_env_args(env_args)
        env_factory(env_id, kwargs)
        rows = {}
        for name in policy:
            actor = make_actor(
                name, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed
            )
            result = collect_with_progress(
                env_id,
                actor,
                episodes,
                description=f"eval {name}",
                split=split,
                num_envs=num_envs,
                seed=seed,
                sweep_tasks=True,
                env_args=kwargs,
            )
            rows[name] = summarize(result.episodes)
        console.print(summary_table(f"{env_id} ({split} split)", rows))

    run_command(run)


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.command("envs")(envs_command)
    app.command("play")(play_command)
    app.command("rollout")(rollout_command)
    app.command("eval")(eval_command)
