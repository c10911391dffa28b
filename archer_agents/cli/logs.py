"""Production logs on the command line: `archer import-langsmith`.

Turns a LangSmith run export into an episode log that offline training reads.
It takes the lenient option every log-reading command takes (`LenientOption`):
with ``--lenient`` (the default) every line that could not be imported is
printed as file:line with the reason, the rest is written, and the command
exits with code 1; ``--strict`` stops at the first one, naming it as
file:line, writes nothing and exits with code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from archer_agents.cli.common import LenientOption, UserError, console, run_command


def import_langsmith_command(
    export: Annotated[Path, typer.Argument(help="LangSmith run export (JSONL, a run a line).")],
    out: Annotated[Path, typer.Option(help="Episode log to write (JSONL).")],
    env_id: Annotated[str, typer.Option(help="env_id of the episodes.")] = "langsmith",
    reward_key: Annotated[
        str | None,
        typer.Option(help="Feedback key whose score is the reward (needed with several keys)."),
    ] = None,
    append: Annotated[bool, typer.Option(help="Append to an existing --out log.")] = False,
    lenient: LenientOption = True,
) -> None:
    """Import a LangSmith run export as episodes (one per trace, one transition per LLM call)."""

    def run() -> int:
        from archer_agents.data.episode_log import EpisodeWriter
        from archer_agents.langchain.langsmith_import import import_langsmith

        if out.exists() and not append:
            raise UserError(f"{out} exists; pass --append to add to it or choose another --out")
        try:
            episodes, report = import_langsmith(export, env_id=env_id, reward_key=reward_key)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if not lenient and report.bad_lines:
            first = report.bad_lines[0]
            raise UserError(
                f"{export}:{first.line}: {first.reason} ({len(report.bad_lines)} bad line(s); "
                "--strict writes nothing, --lenient skips them)"
            )
        for bad in report.bad_lines:
            console.print(f"[bold red]bad line[/] {export}:{bad.line}: {bad.reason}")
        for note in report.notes:
            console.print(f"[yellow]note[/] {export}: {note}")
        with EpisodeWriter(out) as writer:
            writer.write_all(episodes)
        table = Table(title=f"{export} -> {out}")
        for column in ("runs", "episodes", "with reward", "bad lines"):
            table.add_column(column, justify="right")
        table.add_row(
            str(report.runs_read),
            str(report.episodes),
            str(report.rewarded),
            str(len(report.bad_lines)),
        )
        console.print(table)
        return 1 if report.bad_lines else 0

    code = run_command(run)
    if code:
        raise typer.Exit(code=code)


def register(app: typer.Typer) -> None:
    """Add ``archer import-langsmith`` to ``app``."""
    app.command("import-langsmith")(import_langsmith_command)
