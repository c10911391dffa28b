"""The `archer` command: every command group, registered in one place.

One module per group defines its commands as plain functions and a
``register(app)`` that adds them; `build_app` calls each one, in the order
``archer --help`` lists them. Importing a command module registers nothing.

- `archer_agents.cli.environments`: envs, play, rollout, eval;
- `archer_agents.cli.models`: init-model, bc;
- `archer_agents.cli.train`: train (algorithms, presets, offline);
- `archer_agents.cli.quickstart`: quickstart, the main job;
- `archer_agents.cli.serve`: serve, deploy;
- `archer_agents.cli.logs`: import-langsmith.

What they share (console, `UserError`, progress bars, environment and policy
loading) is `archer_agents.cli.common`.
"""

from __future__ import annotations

import logging
import os

import typer

from archer_agents.cli import browse, environments, logs, models, quickstart, serve, train
from archer_agents.cli.common import UserError, console

GROUPS = (environments, models, train, quickstart, serve, logs, browse)
"""The command modules, each with a ``register(app)``."""


def build_app() -> typer.Typer:
    """A fresh ``archer`` app with every command group registered."""
    application = typer.Typer(
        add_completion=False,
        no_args_is_help=True,
        help="Train LangChain agents with ArCHer (hierarchical multi-turn RL).",
    )
    for group in GROUPS:
        group.register(application)
    return application


app = build_app()


def full_app() -> typer.Typer:
    """The app with every command (kept for callers that built it in steps)."""
    return app


def main() -> None:
    logging.basicConfig(level=os.environ.get("ARCHER_LOG_LEVEL", "WARNING"))
    # The commands draw their own progress; transformers' per-save and per-load bars
    # (read from this variable when transformers is imported) would only interleave.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    app()


__all__ = ["GROUPS", "UserError", "app", "build_app", "console", "full_app", "main"]
