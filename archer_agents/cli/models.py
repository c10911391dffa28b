"""`archer init-model` and `archer bc`: build the embedded model, behaviour-clone a policy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from archer_agents.cli.common import (
    EnvArgs,
    LenientOption,
    UserError,
    console,
    env_factory,
    finite_number,
    looks_like_hub_id,
    merge_scope,
    parse_env_args,
    progress_bar,
    read_logs,
    run_command,
)


def init_model_command(
    output: Annotated[Path, typer.Argument(help="Directory to write the model and tokenizer to.")],
    base: Annotated[
        str | None,
        typer.Option(
            help="Write this real base model instead (offline, from an installed package): "
            "'smollm2-135m-instruct'.",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Copy this transformers model (hub id or folder) instead, adding a "
            "tool-calling chat template when its own has none.",
        ),
    ] = None,
    family: Annotated[
        str | None,
        typer.Option(
            help="With --model: the tool-calling template, 'chatml' or 'llama3' "
            "(default: read from the tokenizer's special tokens).",
        ),
    ] = None,
    size: Annotated[
        str | None, typer.Option(help="Named size: 'test' or 'demo' [default: demo].")
    ] = None,
    vocab_size: Annotated[
        int | None, typer.Option(help="Tokenizer vocabulary size [default: 1024].")
    ] = None,
    merge_within: Annotated[
        str | None,
        typer.Option(help="Tokenizer merges stay within a 'word' or a 'line' [default: word]."),
    ] = None,
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
    """Build the embedded default model, or write a real base model or a copy of one.

    By default: a small Llama whose tokenizer learns from scripted play in the
    --env environments and from the --text files (with neither, from every
    archer environment). --base writes a real instruct model offline; --model
    copies any transformers model. Both get a tool-calling chat template.
    """

    def run() -> None:
        from archer_agents.policies.tiny_model import MODEL_SIZES, init_model
        from archer_agents.training.corpus import environment_corpus, text_file_corpus

        embedded = {
            "--size": size,
            "--vocab-size": vocab_size,
            "--merge-within": merge_within,
            "--env": env,
            "--text": text,
            "--env-arg": env_args,
        }
        _check_init_options(base, model, family, embedded)
        if output.exists() and any(output.iterdir()) and not overwrite:
            raise UserError(f"{output} is not empty; pass --overwrite or choose another directory")
        if base is not None or model is not None:
            _write_real_model(output, base=base, model=model, family=family, overwrite=overwrite)
            return
        chosen_size = size or "demo"
        if chosen_size not in MODEL_SIZES:
            raise UserError(f"unknown size {chosen_size!r}; choose one of {sorted(MODEL_SIZES)}")
        scope = merge_scope(merge_within or "word")
        kwargs = parse_env_args(env_args)
        env_ids = list(env or [])
        for env_id in env_ids:
            env_factory(env_id, kwargs)  # an unknown id or a failing module: one line, now
        texts = text_file_corpus(list(text or []))
        if env_ids or not texts:
            with console.status("playing scripted agents for tokenizer text..."):
                texts += environment_corpus(env_ids or None, seed=seed, env_kwargs=kwargs)
        with console.status(f"training tokenizer and building the {chosen_size} model..."):
            path = init_model(
                output,
                texts,
                size=chosen_size,
                vocab_size=vocab_size or 1024,
                seed=seed,
                overwrite=overwrite,
                merge_within=scope,
            )
        console.print(f"model written to [bold]{path}[/] ({len(texts)} corpus texts)")

    run_command(run)


def _check_init_options(
    base: str | None, model: str | None, family: str | None, embedded: dict[str, Any]
) -> None:
    """One line when `init-model`'s options ask for two kinds of model at once."""
    from archer_agents.formats.chat_templates import TOOL_TEMPLATES
    from archer_agents.policies.base_models import BASE_MODELS

    if base is not None and model is not None:
        raise UserError("--base and --model each choose the model; pass only one")
    given = [name for name, value in embedded.items() if value]
    chosen = "--base" if base is not None else "--model" if model is not None else None
    if chosen is not None and given:
        options = f"{given[0]} is an option"
        if len(given) > 1:
            options = f"{', '.join(given)} are options"
        raise UserError(f"{options} of the embedded model and cannot be combined with {chosen}")
    if family is not None and model is None:
        raise UserError("--family chooses the template of a --model copy; pass --model too")
    if family is not None and family not in TOOL_TEMPLATES:
        raise UserError(f"unknown --family {family!r}; choose one of {sorted(TOOL_TEMPLATES)}")
    if base is not None and base not in BASE_MODELS:
        raise UserError(f"unknown base model {base!r}; choose one of {sorted(BASE_MODELS)}")


def _write_real_model(
    output: Path, *, base: str | None, model: str | None, family: str | None, overwrite: bool
) -> None:
    from archer_agents.policies.base_models import MissingPackageError, copy_model, write_base_model

    try:
        if base is not None:
            with console.status(f"converting {base} to a Hugging Face folder..."):
                path = write_base_model(base, output, overwrite=overwrite)
            console.print(f"{base} written to [bold]{path}[/] (with a tool-calling chat template)")
            return
        assert model is not None
        if not Path(model).exists() and not looks_like_hub_id(model):
            raise UserError(f"model {model!r} is neither a folder nor a hub id")
        with console.status(f"copying {model}..."):
            path = copy_model(model, output, family=family, overwrite=overwrite)
        console.print(f"{model} copied to [bold]{path}[/]")
    except (MissingPackageError, ValueError, OSError) as exc:
        if isinstance(exc, FileExistsError | FileNotFoundError):
            raise
        raise UserError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc


def bc_command(
    episodes: Annotated[list[Path], typer.Argument(help="Episode logs (JSONL) to clone.")],
    model: Annotated[str, typer.Option(help="Model directory or hub id to start from.")],
    out: Annotated[Path, typer.Option(help="Directory for the trained policy.")],
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 1500,
    batch_size: Annotated[int, typer.Option(help="Utterances per step.")] = 64,
    lr: Annotated[float, typer.Option(help="Learning rate.", callback=finite_number)] = 3e-3,
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
    lenient: LenientOption = True,
    retokenize: Annotated[
        bool,
        typer.Option(
            help="Ignore the token ids recorded in the logs (written by another model) and "
            "tokenize the text afresh."
        ),
    ] = False,
) -> None:
    """Behaviour-clone a policy on episode logs and save it.

    Runs in several processes under `accelerate launch` or `torchrun` (each scores
    its share of every batch; process 0 saves).
    """

    def run() -> None:
        from archer_agents.training.algorithms.bc import BCConfig, utterance_pairs
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
            retokenize=retokenize,
        )
        data = read_logs(episodes, lenient=lenient)
        if not utterance_pairs(data, only_successful=only_successful):
            raise UserError(
                f"the {len(data)} episode(s) in the logs hold no turns to clone"
                + (" (none succeeded; drop --only-successful)" if only_successful else "")
                + ": pass logs of played episodes"
            )
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
