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

With ``--server URL`` the rollouts (and evaluations) are sampled by a running
OpenAI-compatible server (``archer serve``, local or vLLM) instead of the local
model: after each actor update the LoRA adapter is saved as the next version
of ``--registry`` (default ``OUT/adapters``), hot-loaded into the server and
made active, and older versions are unloaded (`training.served`). An agent
deployed with ``load_agent(URL, tools, registry=DIR)`` follows along.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, Field, create_model

from archer_agents.cli.app import (
    UserError,
    _env_factory,
    _looks_like_hub_id,
    _progress,
    _run,
    app,
    console,
)

REGISTRY_DIR = "adapters"
"""Where `archer train --server` keeps adapter versions inside the run, unless --registry says."""

ALGORITHMS: dict[str, tuple[str, str, str]] = {
    "archer": ("archer_agents.training.algorithms.archer", "Archer", "ArcherConfig"),
    "chai": ("archer_agents.training.algorithms.chai", "Chai", "ChaiConfig"),
    "filtered_bc": (
        "archer_agents.training.algorithms.filtered_bc",
        "FilteredBC",
        "FilteredBCConfig",
    ),
    "reinforce": ("archer_agents.training.algorithms.reinforce", "Reinforce", "ReinforceConfig"),
    "ppo": ("archer_agents.training.algorithms.ppo", "PPO", "PPOConfig"),
    "offline_archer": (
        "archer_agents.training.algorithms.offline_archer",
        "OfflineArcher",
        "OfflineArcherConfig",
    ),
    "offline_then_online": (
        "archer_agents.training.algorithms.offline_then_online",
        "OfflineThenOnline",
        "OfflineThenOnlineConfig",
    ),
}
"""name -> (module, algorithm class, config class); built as ``cls(config, policy)``."""


def algorithm_classes(name: str) -> tuple[type[Any], type[BaseModel]]:
    """The algorithm class and config class registered under ``name``."""
    try:
        module_name, algorithm_name, config_name = ALGORITHMS[name]
    except KeyError:
        raise UserError(
            f"unknown algorithm {name!r}; choose one of {', '.join(sorted(ALGORITHMS))}"
        ) from None
    module = importlib.import_module(module_name)
    return getattr(module, algorithm_name), getattr(module, config_name)


def run_config_class(algorithm_config: type[BaseModel]) -> type[BaseModel]:
    """A config with a ``trainer`` section and an ``algorithm`` section of the given class."""
    from archer_agents.training.trainer import TrainerConfig

    return create_model(
        "RunConfig",
        __config__=ConfigDict(extra="forbid"),
        trainer=(TrainerConfig, Field(default_factory=TrainerConfig)),
        algorithm=(algorithm_config, ...),
    )


def load_run_config(
    algo: str,
    config_file: Path | None,
    overrides: list[str],
    defaults: dict[str, Any] | None = None,
) -> tuple[Any, BaseModel]:
    """(TrainerConfig, algorithm config) from defaults, a file and ``key=value`` overrides."""
    from archer_agents.training.config import ConfigError, load_config

    _, config_class = algorithm_classes(algo)
    base: dict[str, dict[str, Any]] = {"trainer": {}, "algorithm": {}}
    for section, values in (defaults or {}).items():
        base[section] = dict(values)
    try:
        run = load_config(run_config_class(config_class), config_file, overrides, defaults=base)
    except ConfigError as error:
        raise UserError(str(error)) from None
    return run.trainer, run.algorithm  # type: ignore[attr-defined]


@app.command("train")
def train_command(
    algo: Annotated[str, typer.Option(help=f"Algorithm: {', '.join(ALGORITHMS)}.")] = "archer",
    env: Annotated[
        str, typer.Option("--env", help="Environment id.")
    ] = "archer/TwentyQuestions-v0",
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
) -> None:
    """Train a policy online (or offline) with an algorithm, the shared loop and checkpoints."""

    def run() -> None:
        chosen, settings = offline_options(
            algo, list(overrides or []), offline, offline_then_online, list(episodes or [])
        )
        result = train(
            algo=chosen,
            env_id=env,
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

    _run(run)


OFFLINE_DATA_KEY = {
    "offline_archer": "algorithm.data",
    "offline_then_online": "algorithm.offline.data",
}
"""Where each offline algorithm reads its episode logs from (a --set key)."""


def offline_options(
    algo: str, overrides: list[str], offline: bool, then_online: bool, episodes: list[Path]
) -> tuple[str, list[str]]:
    """``--offline`` / ``--offline-then-online`` / ``--episodes`` as the algorithm and overrides."""
    if offline and then_online:
        raise UserError("--offline and --offline-then-online exclude each other; pick one")
    if offline or then_online:
        chosen = "offline_archer" if offline else "offline_then_online"
        if algo not in ("archer", chosen):  # "archer" is --algo's default
            raise UserError(f"--algo {algo} contradicts --{chosen.replace('_', '-')}; drop one")
        algo = chosen
    if not episodes:
        return algo, overrides
    if algo not in OFFLINE_DATA_KEY:
        raise UserError(
            f"--episodes feeds offline training and --algo {algo} trains online; add --offline "
            "or --offline-then-online"
        )
    missing = [str(path) for path in episodes if not path.is_file()]
    if missing:
        raise UserError(f"episode log(s) not found: {', '.join(missing)}")
    listed = ",".join(json.dumps(str(path)) for path in episodes)
    return algo, [*overrides, f"{OFFLINE_DATA_KEY[algo]}=[{listed}]"]


def train(
    *,
    algo: str,
    env_id: str,
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
) -> Any:
    """Build the policy, the algorithm and the trainer, and run it; returns the `TrainResult`.

    With ``server``, rollouts are sampled on it and each actor update is deployed
    as a new version of ``registry`` (default ``out/adapters``).
    """
    import torch

    from archer_agents.policies.local_policy import LocalPolicy, LoraSettings
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
    lora_settings = LoraSettings() if lora else None
    if model is None:
        model, lora_settings = _model_of_run(out, RUN_FILE) if resume else (None, None)
        if model is None:
            raise UserError("--model is required: the policy to start from (a model directory)")
    if not Path(model).exists() and not _looks_like_hub_id(model):
        raise UserError(f"model {model!r} does not exist; build one with `archer init-model`")
    factory = _env_factory(env_id)
    policy = LocalPolicy.from_pretrained(model, lora=lora_settings, seed=trainer_config.seed)
    try:
        algorithm = algorithm_class(algorithm_config, policy)
    except ValueError as error:
        raise UserError(str(error)) from None
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
    from archer_agents.training.distributed import launched_rank

    with _progress(disable=launched_rank() != 0) as progress:
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


def _model_of_run(out: Path, run_file: str) -> tuple[str | None, Any]:
    """The model and LoRA settings a run directory was started with (for --resume)."""
    import json

    from archer_agents.policies.local_policy import LoraSettings

    path = out / run_file
    if not path.is_file():
        return None, None
    info = json.loads(path.read_text())
    lora = info.get("lora")
    return info.get("model"), (LoraSettings(**lora) if lora else None)


__all__ = ["ALGORITHMS", "algorithm_classes", "load_run_config", "run_config_class", "train"]
