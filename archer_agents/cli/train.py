"""`archer train`: run any algorithm with the shared trainer, from a config file and overrides.

An algorithm is one line of `ALGORITHMS`: its name on the command line, the
module that defines it, its class and its config class. Every algorithm is
built the same way, ``Algorithm(config, policy)``, and trained by the same
`Trainer`; its config and the trainer's are one run config with two sections::

    # run.yaml
    trainer:
      iterations: 40
      episodes_per_iteration: 64
    algorithm:
      actor_lr: 1.0e-3
      min_visits: 50

    archer train --algo archer --config run.yaml --set warmup_iterations=5 \\
        --env archer/TwentyQuestions-v0 --model runs/bc --out runs/archer

A bare key (``warmup_iterations``) goes to the one section that has it;
``trainer.seed=1`` names the section explicitly (see `training.config`).

``--preset NAME`` starts from named settings (`training.presets`,
``--list-presets``); ``--config`` and then ``--set`` apply on top of it. A run
whose settings cannot move the actor (its warm-up outlasts it, no actor steps)
says so when it starts.

``--episodes`` logs are read as ``--lenient`` (the default: unreadable lines,
such as a torn write that a later writer appended after, are skipped and
counted in one printed line) or ``--strict`` (the first one stops the run,
named as file:line) says; it sets the offline algorithm's ``skip_bad_lines``,
which a ``--set`` still overrides.

``--env`` takes a registered id or ``module:id`` (your module registers the
environment: `archer_agents.environments.register_tool_env`). Offline training
(``--offline``) plays no environment unless ``--env`` is given; then it
evaluates on it.

With ``--server URL`` the rollouts (and evaluations) are sampled by a running
OpenAI-compatible server (``archer serve``, local or vLLM) instead of the local
model: after each actor update the LoRA adapter is saved as the next version
of ``--registry`` (default ``OUT/adapters``), hot-loaded into the server and
made active, and older versions are unloaded (`training.served`). An agent
deployed with ``load_agent(URL, tools, registry=DIR)`` follows along.
"""

from __future__ import annotations

import json
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
    looks_like_hub_id,
    parse_env_args,
    print_read_report,
    progress_bar,
    run_command,
)
from archer_agents.cli.run_config import (
    ALGORITHMS,
    OFFLINE_DATA_KEY,
    algorithm_classes,
    list_presets_callback,
    load_run_config,
    offline_options,
    preset_defaults,
    run_config_class,
)

DEFAULT_ENV = "archer/TwentyQuestions-v0"
"""The environment of an online run without --env (offline runs without --env play none)."""

REGISTRY_DIR = "adapters"
"""Where `archer train --server` keeps adapter versions inside the run, unless --registry says."""


def train_command(
    algo: Annotated[
        str | None,
        typer.Option(help=f"Algorithm: {', '.join(ALGORITHMS)} (default: the preset's, archer)."),
    ] = None,
    env: Annotated[
        str | None,
        typer.Option(
            "--env",
            help=f"Environment: a registered id or module:id (the module registers it). Online "
            f"default {DEFAULT_ENV}; offline runs evaluate only when it is given.",
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            help="Named settings to start from (--config and --set apply on top): "
            + "cpu-tiny, cpu-small, gpu-small, paper. See --list-presets.",
        ),
    ] = None,
    list_presets: Annotated[
        bool,
        typer.Option(
            "--list-presets",
            is_eager=True,
            callback=list_presets_callback,
            help="List the presets and what each is for, then exit.",
        ),
    ] = False,
    env_args: EnvArgs = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "--init",
            help="Policy to start from: a model directory (e.g. from `archer bc`) or hub id. "
            "On --resume, defaults to the run's own.",
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/train"),
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML or TOML run config (trainer/algorithm).")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="key=value override, repeatable (e.g. --set actor_lr=1e-4)."),
    ] = None,
    lora: Annotated[bool, typer.Option(help="Train a fresh LoRA adapter on the model.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out.")] = False,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for torch (default: torch's choice).")
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            help="Sample rollouts on this OpenAI-compatible server (`archer serve`); each actor "
            "update is hot-loaded into it as a new adapter version (needs a LoRA policy)."
        ),
    ] = None,
    registry: Annotated[
        Path | None,
        typer.Option(help="Adapter registry for the served versions (default: OUT/adapters)."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="ARCHER_API_KEY", help="The server's API key (env ARCHER_API_KEY)."),
    ] = None,
    keep: Annotated[
        int, typer.Option(help="With --server: earlier versions left loaded for rollback.")
    ] = 1,
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Offline ArCHer from --episodes (--algo offline_archer)."),
    ] = False,
    offline_then_online: Annotated[
        bool,
        typer.Option(
            "--offline-then-online",
            help="Offline ArCHer from --episodes, then online ArCHer (--algo offline_then_online).",
        ),
    ] = False,
    episodes: Annotated[
        list[Path] | None,
        typer.Option(
            "--episodes",
            help="Episode log to train from offline (JSONL: archer rollout, a training run, "
            "EpisodeRecorder, import-langsmith); repeatable.",
        ),
    ] = None,
    lenient: LenientOption = True,
) -> None:
    """Train a policy online (or offline) with an algorithm, the shared loop and checkpoints."""

    def run() -> None:
        defaults, preset_algo = preset_defaults(preset, algo)
        chosen, settings = offline_options(
            algo or preset_algo, list(overrides or []), offline, offline_then_online,
            list(episodes or []),
        )  # fmt: skip
        if chosen in OFFLINE_DATA_KEY:  # before --set, so an explicit skip_bad_lines wins
            section = OFFLINE_DATA_KEY[chosen].rsplit(".", 1)[0]
            settings = [f"{section}.skip_bad_lines={str(lenient).lower()}", *settings]
        env_id = env
        if env_id is None and chosen not in OFFLINE_DATA_KEY:
            env_id = DEFAULT_ENV
        elif env_id is None and chosen == "offline_then_online":
            raise UserError("--offline-then-online trains online too: pass --env ENV")
        result = train(
            algo=chosen,
            env_id=env_id,
            defaults=defaults,
            env_args=parse_env_args(env_args),
            on_stall=lambda reason: console.print(
                f"[bold yellow]warning:[/] this run cannot move the actor: {reason}",
                soft_wrap=True,
            ),
            model=model,
            out=out,
            config_file=config,
            overrides=settings,
            lora=lora,
            resume=resume,
            threads=threads,
            server=server,
            registry=registry,
            api_key=api_key,
            keep=keep,
            on_read_report=print_read_report,
        )
        from archer_agents.training.distributed import launched_rank

        if launched_rank() != 0:  # one process of several speaks for the run
            return
        counters = result.counters
        console.print(
            f"{counters.iteration} iterations, {counters.episodes} episodes in "
            f"{counters.train_seconds / 60:.1f} min; run in [bold]{out}[/]"
        )
        if server is not None:
            from archer_agents.policies.adapters import AdapterRegistry

            store = AdapterRegistry.open(registry or out / REGISTRY_DIR)
            active = store.active
            if active is not None:
                console.print(
                    f"{server} serves {store.served_name(active)} (active version of {store.root})"
                )

    run_command(run)


def train(
    *,
    algo: str,
    env_id: str | None,
    model: str | None,
    out: Path,
    config_file: Path | None = None,
    overrides: list[str] | None = None,
    lora: bool = False,
    resume: bool = False,
    threads: int | None = None,
    defaults: dict[str, Any] | None = None,
    references: dict[str, float] | None = None,
    server: str | None = None,
    registry: Path | None = None,
    api_key: str | None = None,
    keep: int = 1,
    env_args: dict[str, Any] | None = None,
    on_stall: Callable[[str], None] | None = None,
    on_read_report: Callable[[Any], None] | None = None,
) -> Any:
    """Build the policy, the algorithm and the trainer, and run it; returns the `TrainResult`.

    With ``server``, rollouts are sampled on it and each actor update is deployed
    as a new version of ``registry`` (default ``out/adapters``). ``env_id`` None
    (offline algorithms only) trains without playing: no evaluation.
    ``env_args`` go to the environment's constructor; ``on_stall`` hears each
    reason the settings cannot move the actor (`presets.actor_stall_reasons`);
    ``on_read_report`` hears what reading an offline algorithm's logs skipped
    (a `ReadReport`), on the main process.
    """
    import torch

    from archer_agents.policies.local_policy import LocalPolicy, LoraSettings
    from archer_agents.training.distributed import launched_rank
    from archer_agents.training.run_dir import RUN_FILE
    from archer_agents.training.trainer import Trainer

    if threads is not None:
        torch.set_num_threads(threads)
    if server is None and registry is not None:
        raise UserError(
            "--registry names where served adapter versions go, which needs --server URL (the "
            "server that samples the rollouts); add --server or drop --registry"
        )
    algorithm_class, _ = algorithm_classes(algo)
    trainer_config, algorithm_config = load_run_config(
        algo, config_file, list(overrides or []), defaults
    )
    from archer_agents.training.presets import actor_stall_reasons

    if launched_rank() == 0:
        for reason in actor_stall_reasons(trainer_config, algorithm_config):
            if on_stall is not None:
                on_stall(reason)
    # `online` is a class attribute, or a property (truthy on the class) where a run turns online.
    if env_id is None and algorithm_class.online:
        raise UserError(f"--algo {algo} plays episodes while it trains: pass --env ENV")
    lora_settings = LoraSettings() if lora else None
    if model is None:
        model, lora_settings = _model_of_run(out, RUN_FILE) if resume else (None, None)
        if model is None:
            raise UserError("--model is required: the policy to start from (a model directory)")
    if not Path(model).exists() and not looks_like_hub_id(model):
        raise UserError(f"model {model!r} does not exist; build one with `archer init-model`")
    factory = None if env_id is None else env_factory(env_id, env_args)
    policy = LocalPolicy.from_pretrained(model, lora=lora_settings, seed=trainer_config.seed)
    try:
        algorithm = algorithm_class(algorithm_config, policy)
    except ValueError as error:
        raise UserError(str(error)) from None
    report = _read_report(algorithm)
    if report is not None and on_read_report is not None and launched_rank() == 0:
        on_read_report(report)
    run_info = {
        "model": str(model),
        "lora": None if lora_settings is None else lora_settings.model_dump(mode="json"),
    }
    served = None
    if server is not None:
        store = registry or out / REGISTRY_DIR
        served = _serve(algorithm, server, store, api_key, keep)
        algorithm = served
        run_info.update({"server": server, "registry": str(store)})
    with progress_bar(disable=launched_rank() != 0) as progress:
        budget = trainer_config.time_budget_s
        # A time-budgeted run (the quickstart's) usually stops on its clock, not its iteration
        # cap: its bar counts seconds of the budget and the iterations go into the info column.
        description = f"{algo} training" + ("" if budget is None else " (seconds of budget)")
        total = trainer_config.iterations if budget is None else budget
        task = progress.add_task(description, total=total, info="")

        def on_iteration(iteration: int, record: dict[str, float]) -> None:
            info = [] if budget is None else [f"iteration {iteration}"]
            if "rollout/return_mean" in record:
                info.append(f"return {record['rollout/return_mean']:.2f}")
            if "rollout/valid_rate" in record:
                info.append(f"valid {record['rollout/valid_rate']:.1%}")
            if "eval/return_mean" in record:
                info.append(f"eval {record['eval/return_mean']:.2f}")
            done = iteration if budget is None else min(budget, record["time/train_s"])
            progress.update(task, completed=round(done), info="  ".join(info))

        trainer = Trainer(
            algorithm,
            env_id,
            out,
            trainer_config,
            env_factory=factory,
            run_info=run_info,
            references=references,
            on_iteration=on_iteration,
        )
        try:
            return trainer.train(resume=resume)
        except ConnectionError as error:
            raise UserError(str(error)) from None
        finally:
            if served is not None:
                served.close()


def _serve(algorithm: Any, server: str, registry: Path, api_key: str | None, keep: int) -> Any:
    """``algorithm`` sampling on ``server``, versions kept in ``registry`` (`ServedAlgorithm`)."""
    from archer_agents.policies.server_policy import ServerError
    from archer_agents.training.served import ServedAlgorithm

    if registry.exists() and not registry.is_dir():
        raise UserError(f"--registry {registry} is a file; pass a directory for adapter versions")
    try:
        return ServedAlgorithm.connect(algorithm, server, registry, api_key=api_key, keep=keep)
    except ValueError as error:
        raise UserError(str(error)) from None
    except (ConnectionError, RuntimeError, ServerError) as error:
        raise UserError(str(error)) from None


def _read_report(algorithm: Any) -> Any:
    """What reading an offline algorithm's logs skipped (its own or its offline phase's)."""
    from archer_agents.data.episode_log import ReadReport

    for holder in (algorithm, getattr(algorithm, "offline", None)):
        report = getattr(holder, "report", None)
        if isinstance(report, ReadReport):
            return report
    return None


def _model_of_run(out: Path, run_file: str) -> tuple[str | None, Any]:
    """The model and LoRA settings a run directory was started with (for --resume)."""

    from archer_agents.policies.local_policy import LoraSettings

    path = out / run_file
    if not path.is_file():
        return None, None
    info = json.loads(path.read_text())
    lora = info.get("lora")
    return info.get("model"), (LoraSettings(**lora) if lora else None)


__all__ = [
    "ALGORITHMS",
    "OFFLINE_DATA_KEY",
    "algorithm_classes",
    "load_run_config",
    "offline_options",
    "register",
    "run_config_class",
    "train",
]


def register(app: typer.Typer) -> None:
    """Add ``archer train`` to ``app``."""
    app.command("train")(train_command)
