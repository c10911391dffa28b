"""`archer init-model` and `archer bc`: build the embedded model, behaviour-clone a policy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from archer_agents.cli.common import (
    EnvArgs,
    UserError,
    console,
    env_factory,
    looks_like_hub_id,
    merge_scope,
    parse_env_args,
    progress_bar,
    run_command,
)


def init_model_command(
    output: Annotated[Path, typer.Argument(help="Directory to write the model and tokenizer to.")],
    size: Annotated[str, typer.Option(help="Named size: 'test' or 'demo'.")] = "demo",
    vocab_size: Annotated[int, typer.Option(help="Tokenizer vocabulary size.")] = 1024,
    merge_within: Annotated[
        str, typer.Option(help="Tokenizer merges stay within a 'word' or a 'line'.")
    ] = "word",
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env",
            help="Train the tokenizer on this environment's text (scripted play), repeatable; "
            "a registered id or module:id. Default: every archer environment.",
        ),
    ] = None,
    text: Annotated[
        list[Path] | None,
        typer.Option("--text", help="Also train the tokenizer on this text file, repeatable."),
    ] = None,
    env_args: EnvArgs = None,
    seed: Annotated[int, typer.Option(help="Seed for the weights.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing directory.")] = False,
) -> None:
    """Build the embedded default model: a small Llama, tokenizer trained on the envs' text.

    The tokenizer learns from scripted play in the --env environments and from the
    --text files; with neither, from every archer environment.
    """

    def run() -> None:
        from archer_agents.policies.tiny_model import MODEL_SIZES, init_model
        from archer_agents.training.corpus import environment_corpus, text_file_corpus

        if size not in MODEL_SIZES:
            raise UserError(f"unknown size {size!r}; choose one of {sorted(MODEL_SIZES)}")
        scope = merge_scope(merge_within)
        if output.exists() and any(output.iterdir()) and not overwrite:
            raise UserError(f"{output} is not empty; pass --overwrite or choose another directory")
        kwargs = parse_env_args(env_args)
        env_ids = list(env or [])
        for env_id in env_ids:
            env_factory(env_id, kwargs)  # an unknown id or a failing module: one line, now
        texts = text_file_corpus(list(text or []))
        if env_ids or not texts:
            with console.status("playing scripted agents for tokenizer text..."):
                texts += environment_corpus(env_ids or None, seed=seed, env_kwargs=kwargs)
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

    run_command(run)


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
        str | None,
        typer.Option(help="Evaluate on this environment's test split (an id or module:id)."),
    ] = None,
    eval_episodes: Annotated[int, typer.Option(help="Episodes per evaluation.")] = 200,
    eval_every: Annotated[int, typer.Option(help="Steps between evaluations (0: end only).")] = 500,
    env_args: EnvArgs = None,
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
        policy = load_trainable(model, lora=lora)
        on_cpu = all(p.device.type == "cpu" for p in policy.model.parameters())
        group = Distributed.from_environment(cpu=on_cpu)
        if batch_size < group.world_size:
            raise UserError(
                f"--batch-size {batch_size} cannot be split across {group.world_size} processes; "
                f"use at least {group.world_size}"
            )
        main = group.is_main
        train_bc(
            policy,
            data,
            config,
            eval_env=eval_env if main else None,
            eval_episodes=eval_episodes,
            seed=seed,
            quiet=not main,
            env_args=parse_env_args(env_args),
        )
        if main:
            policy.save(out)
            console.print(f"policy saved to [bold]{out}[/]")

    run_command(run)


def load_trainable(model: str, *, lora: bool) -> Any:
    from archer_agents.policies.local_policy import LocalPolicy, LoraSettings

    if not Path(model).exists() and not looks_like_hub_id(model):
        raise UserError(
            f"model {model!r} does not exist; build one with `archer init-model {model}`"
        )
    return LocalPolicy.from_pretrained(model, lora=LoraSettings() if lora else None)


def train_bc(
    policy: Any,
    data: list[Any],
    config: Any,
    *,
    eval_env: str | None,
    eval_episodes: int,
    seed: int,
    quiet: bool = False,
    env_args: dict[str, Any] | None = None,
) -> Any:
    from archer_agents.training.algorithms.bc import behaviour_clone

    evaluate = None
    if eval_env is not None:
        evaluate = evaluator(policy, eval_env, eval_episodes, seed=seed, env_args=env_args)
    with progress_bar(disable=quiet) as progress:
        task = progress.add_task("behaviour cloning", total=config.steps, info="")

        def on_step(step: int, metrics: dict[str, float]) -> None:
            info = f"loss {metrics['bc/loss']:.3f}"
            if "eval/return_mean" in metrics:
                info += f"  eval return {metrics['eval/return_mean']:.2f}"
            progress.update(task, completed=step, info=info)

        return behaviour_clone(policy, data, config, evaluate=evaluate, on_step=on_step)


def evaluator(
    policy: Any,
    env_id: str,
    episodes: int,
    *,
    seed: int,
    env_args: dict[str, Any] | None = None,
) -> Callable[[int], dict[str, float]]:
    from archer_agents.policies.protocol import SamplingParams
    from archer_agents.training.evaluation import summarize
    from archer_agents.training.rollout import PolicyActor, collect, split_task_ids

    factory = env_factory(env_id, env_args)
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


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.command("init-model")(init_model_command)
    app.command("bc")(bc_command)
