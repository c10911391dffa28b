"""What every command shares: the console, user errors, progress bars, environments, policies.

The CLI owns the terminal (rich tables and progress bars); the library only
logs. A mistake by the user (a missing file, an unknown environment, a bad
option, an unreadable episode log, a run directory whose checkpoints are all
torn) ends with one line naming the problem and the fix, exit code 2.
Set ARCHER_DEBUG=1 to see the full traceback instead.

Every command that reads episode logs takes `LenientOption` (``--lenient``,
the default, or ``--strict``) and reads them with `read_logs`.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Sequence
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

SCRIPTED = ("expert", "weak", "random")
T = TypeVar("T")

EnvArgs = Annotated[
    list[str] | None,
    typer.Option(
        "--env-arg",
        help="KEY=VALUE passed to the environment's constructor, repeatable (a JSON value or "
        "text), e.g. --env-arg kb=my_kb.json for Twenty Questions, --env-arg max_turns=5.",
    ),
]
"""The option every command that builds an environment takes."""

LenientOption = Annotated[
    bool,
    typer.Option(
        "--lenient/--strict",
        help="Reading episode logs: --lenient (default) skips unreadable lines (a torn write, "
        "corrupt bytes, JSON that is not an episode) and prints how many and where; --strict "
        "stops at the first one, naming it as file:line.",
    ),
]
"""The option every command that reads episode logs takes."""


def finite_number(value: float) -> float:
    """Option callback: refuse NaN and infinities (Click's float type reads ``nan``, ``inf``
    and ``1e999``) as a usage error, before the command does anything."""
    if not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def sampling_temperature(value: float) -> float:
    """Option callback for ``--temperature``: a finite number, 0 (greedy) or more."""
    if finite_number(value) < 0:
        raise typer.BadParameter(f"{value} is below 0 (0 is greedy)")
    return value


TemperatureOption = Annotated[
    float,
    typer.Option(help="Sampling temperature (model policies).", callback=sampling_temperature),
]
"""The ``--temperature`` option of every command that samples from a policy."""


class UserError(Exception):
    """A problem with what the user asked for; shown as one line."""


_ONE_LINE_ERRORS = (
    UserError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    ValidationError,
)


def _is_user_facing(exc: BaseException) -> bool:
    """Whether ``exc`` is the user's to fix (shown as one line) rather than a bug.

    `CheckpointError` is looked up only if its module was imported (it imports
    torch), which it must have been for one to be raised.
    """
    if isinstance(exc, _ONE_LINE_ERRORS):
        return True
    for module_name, class_name in (
        ("archer_agents.data.episode_log", "EpisodeLogError"),
        ("archer_agents.training.checkpoint", "CheckpointError"),
    ):
        module = sys.modules.get(module_name)
        if module is not None and isinstance(exc, getattr(module, class_name)):
            return True
    return False


def run_command(fn: Callable[[], T]) -> T:
    """Turn user-facing errors into one clear line and exit code 2."""
    try:
        return fn()
    except Exception as exc:
        if not _is_user_facing(exc) or os.environ.get("ARCHER_DEBUG"):
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        # A lone surrogate (from a JSON escape, say) cannot be printed; show it escaped.
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
        raise typer.Exit(code=2) from None


def print_read_report(report: Any, *, strict_hint: bool = True) -> None:
    """One line when reading episode logs skipped lines: the count and the first file:line."""
    summary = report.summary()
    if summary:
        hint = "; --strict stops at the first instead" if strict_hint else ""
        console.print(f"[yellow]warning:[/] {summary}{hint}", soft_wrap=True)


def read_logs(paths: Sequence[Path], *, lenient: bool) -> list[Any]:
    """The episodes of ``paths``, read as `LenientOption` says; one line if any were skipped.

    A log with no readable episode at all is the user's to fix: `UserError`.
    """
    from archer_agents.data.episode_log import read_episodes

    episodes, report = read_episodes(list(paths), strict=not lenient)
    print_read_report(report)
    if not episodes:
        listed = ", ".join(str(path) for path in paths)
        if report.lines_skipped:
            first = report.skipped[0] if report.skipped else "a torn line"
            raise UserError(
                f"no readable episode in {listed}: all {report.lines_skipped} line(s) are "
                f"unreadable (first: {first}); pass logs written by `archer rollout`, a training "
                "run or EpisodeRecorder"
            )
        raise UserError(
            f"{listed} holds no episodes (empty); pass logs written by `archer rollout`, a "
            "training run or EpisodeRecorder"
        )
    return episodes


def merge_scope(value: str) -> MergeScope:
    """The ``--merge-within`` option's value, checked: one clear line when it is not a scope."""
    from archer_agents.policies.tiny_model import MERGE_SCOPES

    for scope in MERGE_SCOPES:
        if value == scope:
            return scope
    raise UserError(f"--merge-within must be one of {list(MERGE_SCOPES)}, not {value!r}")


def progress_bar(disable: bool = False) -> Progress:
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


def parse_env_args(items: Sequence[str] | None) -> dict[str, Any]:
    """``--env-arg KEY=VALUE`` items as keyword arguments; a value is JSON if it parses."""
    kwargs: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise UserError(f"--env-arg takes KEY=VALUE (e.g. kb=my_kb.json), not {item!r}")
        try:
            parsed = json.loads(value, parse_constant=_no_constant, parse_float=_finite_float)
        except json.JSONDecodeError:
            parsed = value
        except (ValueError, RecursionError) as exc:  # NaN, overflow, digit limit, depth
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise UserError(f"--env-arg {key.strip()}: {reason[:160]}") from None
        kwargs[key.strip()] = parsed
    return kwargs


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number an environment can take; give a finite value")


def _finite_float(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:40]} is not a finite number; give a finite value")
    return value


def env_factory(env_id: str, env_args: Sequence[str] | dict[str, Any] | None = None) -> Any:
    """A factory for ``env_id`` (a registered id or ``module:id``), checked by building one.

    For ``module:id`` the current folder is searched for the module too, as
    ``python -m`` does, so ``archer rollout my_envs:...`` finds ``./my_envs.py``.
    """
    from archer_agents.training.rollout import make_env_factory

    if env_id.lower().endswith((".yaml", ".yml", ".json")):  # a browser task file
        return _task_file_factory(env_id, env_args)
    if ":" in env_id and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())

    kwargs = env_args if isinstance(env_args, dict) else parse_env_args(env_args)
    try:
        factory = make_env_factory(env_id, **kwargs)
    except ValueError as exc:
        raise UserError(f"{exc} (see `archer envs`)") from None
    if kwargs:  # a wrong keyword or value is the user's: say so before any work starts
        try:
            factory().close()
        except (TypeError, ValueError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"{env_id} refused --env-arg {kwargs}: {message}") from None
    return factory


def _task_file_factory(path: str, env_args: Sequence[str] | dict[str, Any] | None) -> Any:
    """A factory for a browser task file (`archer_agents.environments.browser_task`)."""
    import functools

    import gymnasium as gym

    from archer_agents.environments.browser_task.taskfile import TaskFileError, read_task
    from archer_agents.environments.registration import BROWSER_TASK_ID

    kwargs = env_args if isinstance(env_args, dict) else parse_env_args(env_args)
    try:
        read_task(path)
    except TaskFileError as exc:
        raise UserError(str(exc)) from None
    factory = functools.partial(gym.make, BROWSER_TASK_ID, task=str(Path(path).resolve()), **kwargs)
    try:
        factory().close()  # a wrong --env-arg is the user's: say so before any work starts
    except (TypeError, ValueError, ImportError, FileNotFoundError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: {message}") from None
    return factory


def looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/")) and os.sep not in name[:1]


def load_policy(path: str) -> Any:
    """A model folder, adapter folder, training run or one of its ``step-*`` checkpoints."""
    from archer_agents.policies.loading import load_policy as load_saved_policy

    candidate = Path(path)
    if candidate.name.startswith("step-") and candidate.parent.name == "checkpoints":
        from archer_agents.training.run_dir import load_run_policy

        return load_run_policy(path)  # one checkpoint's weights: the trainer's own format
    try:
        return load_saved_policy(path)
    except FileNotFoundError as exc:
        if not candidate.exists():
            raise UserError(
                f"policy {path!r} is neither a scripted agent ({', '.join(SCRIPTED)}), an existing "
                "model directory nor a training run; build one with `archer init-model`, "
                "`archer bc` or `archer train`"
            ) from None
        raise UserError(str(exc)) from None
    except ValueError as exc:
        raise UserError(str(exc)) from None


def make_actor(
    policy: str,
    *,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    chat_model: str | None = None,
) -> Any:
    """The actor for ``--policy``: a scripted agent, or a model (in chat form if it has a template).

    ``chat_model`` (a model folder) makes a scripted agent speak that model's chat
    template and tool-call format, so its episodes are behaviour-cloning data for it.
    """
    from archer_agents.policies.protocol import SamplingParams
    from archer_agents.training.chat_rollout import ChatScriptedActor, chat_actor_for
    from archer_agents.training.rollout import PolicyActor, ScriptedActor

    if policy in SCRIPTED:
        if chat_model is None:
            return ScriptedActor(policy, seed=seed)
        return ChatScriptedActor(policy, chat_tokenizer(chat_model), seed=seed)
    if chat_model is not None:
        raise UserError("--chat-model is for scripted policies; a model plays in its own format")
    sampling = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens)
    return chat_actor_for(PolicyActor(load_policy(policy), sampling))


def chat_tokenizer(model: str) -> Any:
    """The tokenizer of ``model`` (a folder or hub id), which must bring a chat template."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read a tokenizer from {model!r}: {exc}") from None
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"{model} has no chat template; give it one, or drop --chat-model to record "
            "the project's own text format"
        )
    return tokenizer


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


def collect_with_progress(
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
    env_args: Sequence[str] | dict[str, Any] | None = None,
) -> Any:
    from archer_agents.training.chat_rollout import ChatScriptedActor, chat_env_factory
    from archer_agents.training.rollout import ScriptedActor, collect, split_task_ids

    factory = env_factory(env_id, env_args)
    tokenizer = getattr(actor, "tokenizer", None)
    if tokenizer is not None:  # a chat actor: tool environments read the model's call format
        factory = chat_env_factory(factory, tokenizer)
    if isinstance(actor, ScriptedActor | ChatScriptedActor):
        probe = factory()
        kinds = tuple(getattr(probe.unwrapped, "scripted_kinds", ()))
        probe.close()
        if actor.kind not in kinds:
            raise UserError(
                f"{env_id} has no {actor.kind!r} scripted agent (it has: {', '.join(kinds)}); "
                "give its environment one (expert= in register_tool_env) or pass a model"
            )
    task_ids = split_task_ids(factory, split) if sweep_tasks else None
    with progress_bar() as progress:
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
