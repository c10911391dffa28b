"""The run config of `archer train`: algorithms, presets and the offline options.

An algorithm is one line of `ALGORITHMS`: its name on the command line, the
module that defines it, its class and its config class. A run config has a
``trainer`` section and an ``algorithm`` section; its values come from a
preset's defaults (`training.presets`), then a config file, then ``--set``
overrides (`training.config`).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, ConfigDict, Field, create_model

from archer_agents.cli.common import UserError, console

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


def list_presets_callback(value: bool) -> None:
    """``--list-presets``: print each preset and what it is for, then stop."""
    if not value:
        return
    from rich.table import Table

    from archer_agents.training.presets import PRESETS

    table = Table(title="archer train --preset NAME")
    for column in ("preset", "algo", "what", "when to use it"):
        table.add_column(column)
    for p in PRESETS.values():
        table.add_row(p.name, p.algo, p.summary, p.when)
    console.print(table)
    raise typer.Exit()


def preset_defaults(name: str | None, algo: str | None) -> tuple[dict[str, Any] | None, str]:
    """The run-config defaults of preset ``name`` and its algorithm, checked against ``algo``."""
    if name is None:
        return None, "archer"
    from archer_agents.training.presets import get_preset

    try:
        chosen = get_preset(name)
    except ValueError as error:
        raise UserError(str(error)) from None
    if algo is not None and algo != chosen.algo:
        raise UserError(
            f"--preset {name} holds settings for --algo {chosen.algo}, not {algo}; drop one"
        )
    return chosen.defaults(), chosen.algo


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
        if algo not in ("archer", chosen):  # "archer": the default, or a preset's algorithm
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
