"""The `archer` command: build models, play, collect, clone, evaluate.

The CLI owns the terminal (rich tables and progress bars); the library only
logs. A mistake by the user (a missing file, an unknown environment, a bad
option) ends with one line naming the problem and the fix, exit code 2.
Set ARCHER_DEBUG=1 to see the full traceback instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from archer_agents.policies.tiny_model import MergeScope

console = Console()
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Train LangChain agents with ArCHer (hierarchical multi-turn RL).",
)

SCRIPTED = ("expert", "weak", "random")
T = TypeVar("T")


class UserError(Exception):
    """A problem with what the user asked for; shown as one line."""


def _run(fn: Callable[[], T]) -> T:
    """Turn user-facing errors into one clear line and exit code 2."""
    from archer_agents.data.episode_log import EpisodeLogError

    try:
        return fn()
    except (UserError, FileNotFoundError, FileExistsError, EpisodeLogError, ValidationError) as exc:
        if os.environ.get("ARCHER_DEBUG"):
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
        raise typer.Exit(code=2) from None


def merge_scope(value: str) -> MergeScope:
    """The ``--merge-within`` option's value, checked: one clear line when it is not a scope."""
    from archer_agents.policies.tiny_model import MERGE_SCOPES

    for scope in MERGE_SCOPES:
        if value == scope:
            return scope
    raise UserError(f"--merge-within must be one of {list(MERGE_SCOPES)}, not {value!r}")


def _progress(disable: bool = False) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
        disable=disable,
    )


def _env_factory(env_id: str) -> Callable[[], Any]:
    from archer_agents.training.rollout import make_env_factory

    try:
        return make_env_factory(env_id)
    except ValueError as exc:
        raise UserError(f"{exc} (see `archer envs`)") from None


def _load_policy(path: str) -> Any:
    from archer_agents.policies.local_policy import LocalPolicy
    from archer_agents.training.run_dir import is_run_path, load_run_policy

    if is_run_path(path):  # a training run (its newest checkpoint) or one checkpoint folder
        return load_run_policy(path)
    if not Path(path).exists() and not _looks_like_hub_id(path):
        raise UserError(
            f"policy {path!r} is neither a scripted agent ({', '.join(SCRIPTED)}), an existing "
            "model directory nor a training run; build one with `archer init-model`, "
            "`archer bc` or `archer train`"
        )
    return LocalPolicy.from_pretrained(path)


def _looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/")) and os.sep not in name[:1]


def _actor(policy: str, *, temperature: float, max_new_tokens: int, seed: int) -> Any:
    from archer_agents.policies.protocol import SamplingParams
    from archer_agents.training.rollout import PolicyActor, ScriptedActor

    if policy in SCRIPTED:
        return ScriptedActor(policy, seed=seed)
    sampling = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens)
    return PolicyActor(_load_policy(policy), sampling)


def summary_table(title: str, rows: dict[str, Any]) -> Table:
    """A table of `Summary` rows: success and return with 95% intervals."""
    table = Table(title=title)
    for column in ("policy", "success [95% CI]", "return [95% CI]", "turns", "invalid"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for name, s in rows.items():
        table.add_row(
            name,
            f"{s.success.mean:.3f} [{s.success.low:.3f}, {s.success.high:.3f}]",
            f"{s.mean_return.mean:.2f} [{s.mean_return.low:.2f}, {s.mean_return.high:.2f}]",
            f"{s.mean_turns:.1f}",
            f"{s.invalid_action_rate:.1%}",
        )
    return table


def _collect_with_progress(
    env_id: str,
    actor: Any,
    episodes: int,
    *,
    description: str,
    split: str,
    num_envs: int,
    seed: int,
    writer: Any = None,
    sweep_tasks: bool = False,
) -> Any:
    from archer_agents.training.rollout import collect, split_task_ids

    factory = _env_factory(env_id)
    task_ids = split_task_ids(factory, split) if sweep_tasks else None
    with _progress() as progress:
        task = progress.add_task(description, total=episodes, info="")
        result = collect(
            factory,
            actor,
            episodes,
            num_envs=num_envs,
            split=split,
            task_ids=task_ids,
            seed=seed,
            writer=writer,
            env_id=env_id,
            on_episode=lambda _e: progress.advance(task),
        )
    return result


@app.command("envs")
def envs_command() -> None:
    """List the registered environments."""
    import gymnasium as gym

    from archer_agents.environments import registered_ids

    table = Table(title="archer environments")
    table.add_column("id")
    table.add_column("entry point")
    for env_id in registered_ids():
        table.add_row(env_id, str(gym.spec(env_id).entry_point))
    console.print(table)


@app.command("init-model")
def init_model_command(
    output: Annotated[Path, typer.Argument(help="Directory to write the model and tokenizer to.")],
    size: Annotated[str, typer.Option(help="Named size: 'test' or 'demo'.")] = "demo",
    vocab_size: Annotated[int, typer.Option(help="Tokenizer vocabulary size.")] = 1024,
    merge_within: Annotated[
        str, typer.Option(help="Tokenizer merges stay within a 'word' or a 'line'.")
    ] = "word",
    seed: Annotated[int, typer.Option(help="Seed for the weights.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing directory.")] = False,
) -> None:
    """Build the embedded default model: a small Llama, tokenizer trained on the envs' text."""

    def run() -> None:
        from archer_agents.policies.tiny_model import MODEL_SIZES, init_model
        from archer_agents.training.corpus import environment_corpus

        if size not in MODEL_SIZES:
            raise UserError(f"unknown size {size!r}; choose one of {sorted(MODEL_SIZES)}")
        scope = merge_scope(merge_within)
        if output.exists() and any(output.iterdir()) and not overwrite:
            raise UserError(f"{output} is not empty; pass --overwrite or choose another directory")
        with console.status("playing scripted agents for tokenizer text..."):
            texts = environment_corpus(seed=seed)
        with console.status(f"training tokenizer and building the {size} model..."):
            path = init_model(
                output,
                texts,
                size=size,
                vocab_size=vocab_size,
                seed=seed,
                overwrite=overwrite,
                merge_within=scope,
            )
        console.print(f"model written to [bold]{path}[/] ({len(texts)} corpus texts)")

    _run(run)


@app.command("play")
def play_command(
    env_id: Annotated[str, typer.Argument(help="Environment id, e.g. archer/TwentyQuestions-v0.")],
    split: Annotated[str, typer.Option(help="Task split: train or test.")] = "train",
    task_id: Annotated[
        str | None, typer.Option(help="A task of the split (default: drawn).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Episode seed.")] = 0,
) -> None:
    """Play an environment yourself: read the observation, type an action. 'quit' ends."""

    def run() -> None:
        env = _env_factory(env_id)()
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

    _run(run)


@app.command("rollout")
def rollout_command(
    env_id: Annotated[str, typer.Argument(help="Environment id.")],
    policy: Annotated[
        str, typer.Option(help="expert, weak, random, or a model directory.")
    ] = "expert",
    episodes: Annotated[int, typer.Option(help="Episodes to play.")] = 100,
    out: Annotated[Path, typer.Option(help="Episode log (JSONL) to append to.")] = Path(
        "episodes.jsonl"
    ),
    split: Annotated[str, typer.Option(help="Task split.")] = "train",
    num_envs: Annotated[int, typer.Option(help="Environments played side by side.")] = 32,
    temperature: Annotated[
        float, typer.Option(help="Sampling temperature (model policies).")
    ] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(help="Longest utterance in tokens.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the first episode.")] = 0,
) -> None:
    """Play episodes with a policy and append them to an episode log."""

    def run() -> None:
        from archer_agents.data.episode_log import EpisodeWriter
        from archer_agents.training.evaluation import summarize

        actor = _actor(policy, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
        with EpisodeWriter(out) as writer:
            result = _collect_with_progress(
                env_id,
                actor,
                episodes,
                description="rollout",
                split=split,
                num_envs=num_envs,
                seed=seed,
                writer=writer,
            )
        console.print(summary_table(f"{env_id} ({split})", {policy: summarize(result.episodes)}))
        console.print(
            f"{len(result.episodes)} episodes appended to {out} in {result.seconds:.1f}s "
            f"({result.episodes_per_second:.1f} episodes/s, "
            f"{result.tokens_per_second:.0f} tokens/s)"
        )

    _run(run)


@app.command("eval")
def eval_command(
    env_id: Annotated[str, typer.Argument(help="Environment id.")],
    policy: Annotated[
        list[str], typer.Option(help="expert, weak, random or a model dir; repeatable.")
    ],
    episodes: Annotated[
        int, typer.Option(help="Episodes per policy (sweeping the split's tasks).")
    ] = 200,
    split: Annotated[str, typer.Option(help="Task split.")] = "test",
    num_envs: Annotated[int, typer.Option(help="Environments played side by side.")] = 64,
    temperature: Annotated[
        float, typer.Option(help="Sampling temperature (model policies).")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the first episode.")] = 10_000,
) -> None:
    """Evaluate policies on a split: success and return with 95% intervals over tasks."""

    def run() -> None:
        from archer_agents.training.evaluation import summarize

        rows = {}
        for name in policy:
            actor = _actor(name, temperature=temperature, max_new_tokens=32, seed=seed)
            result = _collect_with_progress(
                env_id,
                actor,
                episodes,
                description=f"eval {name}",
                split=split,
                num_envs=num_envs,
                seed=seed,
                sweep_tasks=True,
            )
            rows[name] = summarize(result.episodes)
        console.print(summary_table(f"{env_id} ({split} split)", rows))

    _run(run)


@app.command("bc")
def bc_command(
    episodes: Annotated[list[Path], typer.Argument(help="Episode logs (JSONL) to clone.")],
    model: Annotated[str, typer.Option(help="Model directory or hub id to start from.")],
    out: Annotated[Path, typer.Option(help="Directory for the trained policy.")],
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 1500,
    batch_size: Annotated[int, typer.Option(help="Utterances per step.")] = 64,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 3e-3,
    lora: Annotated[
        bool, typer.Option(help="Train a LoRA adapter instead of all weights.")
    ] = False,
    only_successful: Annotated[bool, typer.Option(help="Clone successful episodes only.")] = False,
    packed: Annotated[
        bool,
        typer.Option(
            help="Batches of whole episodes (about --batch-size turns), each scored in one "
            "packed sequence: the same loss, several times cheaper on whole-history prompts."
        ),
    ] = False,
    warmup_steps: Annotated[
        int, typer.Option(help="Linear learning-rate warm-up steps, then cosine decay.")
    ] = 50,
    eval_env: Annotated[
        str | None, typer.Option(help="Evaluate on this environment's test split.")
    ] = None,
    eval_episodes: Annotated[int, typer.Option(help="Episodes per evaluation.")] = 200,
    eval_every: Annotated[int, typer.Option(help="Steps between evaluations (0: end only).")] = 500,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for torch (default: torch's choice).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """Behaviour-clone a policy on episode logs and save it.

    Runs in several processes under `accelerate launch` or `torchrun` (each scores
    its share of every batch; process 0 saves).
    """

    def run() -> None:
        from archer_agents.data.episode_log import read_episodes
        from archer_agents.training.algorithms.bc import BCConfig
        from archer_agents.training.distributed import Distributed

        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        config = BCConfig(
            steps=steps,
            batch_size=batch_size,
            learning_rate=lr,
            warmup_steps=warmup_steps,
            only_successful=only_successful,
            packed=packed,
            eval_every=eval_every,
            seed=seed,
        )
        data, report = read_episodes(episodes)
        if report.lines_skipped:
            console.print(f"[yellow]skipped {report.lines_skipped} torn line(s)[/]")
        policy = _load_trainable(model, lora=lora)
        on_cpu = all(p.device.type == "cpu" for p in policy.model.parameters())
        group = Distributed.from_environment(cpu=on_cpu)
        if batch_size < group.world_size:
            raise UserError(
                f"--batch-size {batch_size} cannot be split across {group.world_size} processes; "
                f"use at least {group.world_size}"
            )
        main = group.is_main
        _train_bc(
            policy,
            data,
            config,
            eval_env=eval_env if main else None,
            eval_episodes=eval_episodes,
            seed=seed,
            quiet=not main,
        )
        if main:
            policy.save(out)
            console.print(f"policy saved to [bold]{out}[/]")

    _run(run)


def _load_trainable(model: str, *, lora: bool) -> Any:
    from archer_agents.policies.local_policy import LocalPolicy, LoraSettings

    if not Path(model).exists() and not _looks_like_hub_id(model):
        raise UserError(
            f"model {model!r} does not exist; build one with `archer init-model {model}`"
        )
    return LocalPolicy.from_pretrained(model, lora=LoraSettings() if lora else None)


def _train_bc(
    policy: Any,
    data: list[Any],
    config: Any,
    *,
    eval_env: str | None,
    eval_episodes: int,
    seed: int,
    quiet: bool = False,
) -> Any:
    from archer_agents.training.algorithms.bc import behaviour_clone

    evaluate = None
    if eval_env is not None:
        evaluate = _evaluator(policy, eval_env, eval_episodes, seed=seed)
    with _progress(disable=quiet) as progress:
        task = progress.add_task("behaviour cloning", total=config.steps, info="")

        def on_step(step: int, metrics: dict[str, float]) -> None:
            info = f"loss {metrics['bc/loss']:.3f}"
            if "eval/return_mean" in metrics:
                info += f"  eval return {metrics['eval/return_mean']:.2f}"
            progress.update(task, completed=step, info=info)

        return behaviour_clone(policy, data, config, evaluate=evaluate, on_step=on_step)


def _evaluator(
    policy: Any, env_id: str, episodes: int, *, seed: int
) -> Callable[[int], dict[str, float]]:
    from archer_agents.policies.protocol import SamplingParams
    from archer_agents.training.evaluation import summarize
    from archer_agents.training.rollout import PolicyActor, collect, split_task_ids

    factory = _env_factory(env_id)
    task_ids = split_task_ids(factory, "test")

    def evaluate(step: int) -> dict[str, float]:
        result = collect(
            factory,
            PolicyActor(policy, SamplingParams()),
            episodes,
            num_envs=64,
            split="test",
            task_ids=task_ids,
            seed=seed + 10_000,
            env_id=env_id,
        )
        return summarize(result.episodes).metrics("eval")

    return evaluate


def full_app() -> typer.Typer:
    """The app with every command, including those defined in their own modules."""
    from archer_agents.cli import (  # noqa: F401  (each registers on `app`)
        logs,
        quickstart,
        serve,
        train,
    )

    return app


def main() -> None:
    logging.basicConfig(level=os.environ.get("ARCHER_LOG_LEVEL", "WARNING"))
    # The commands draw their own progress; transformers' per-save and per-load bars
    # (read from this variable when transformers is imported) would only interleave.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    full_app()()
