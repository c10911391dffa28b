"""`archer browse TASKFILE`: run an agent on a browser task headlessly and keep the evidence.

TASKFILE is a task file (YAML or JSON, `archer_agents.environments.browser_task`)
or the name of a shipped example (``contact-form``, ``signup-flow``,
``find-contact``, ``copy-checkbox``). The policy is a scripted agent
(``scripted`` is the file's own solution, ``random``), a model or adapter
folder or training run, or an OpenAI-compatible server URL (``--model`` and
``--tokenizer`` name what it serves). For each episode it writes, under
``--out``:

- ``episodes.jsonl``: the episode, in the common episode log;
- ``episode-NNNN/step-NNN.png``: the page after the reset (``step-000``) and after
  every action;
- ``episode-NNNN/trace.zip``: the Playwright trace, for ``playwright show-trace``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, SupportsFloat

import gymnasium as gym
import typer

from archer_agents.cli.common import (
    EnvArgs,
    TemperatureOption,
    UserError,
    console,
    env_factory,
    make_actor,
    parse_env_args,
    run_command,
)

SCRIPTED_ALIASES = {"scripted": "expert", "expert": "expert", "random": "random"}


class EpisodeRecorder(gym.Wrapper[str, str, str, str]):
    """Saves a screenshot after the reset and after every step, and each episode's trace."""

    def __init__(self, env: gym.Env[str, str], out: Path, first: int = 0) -> None:
        super().__init__(env)
        self.out = out
        self.episodes = first
        self.folder = out
        self.turn = 0

    def reset(self, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        self.folder = self.out / f"episode-{self.episodes:04d}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.episodes += 1
        self.turn = 0
        self._screenshot()
        return observation, info

    def step(self, action: str) -> tuple[str, SupportsFloat, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.turn += 1
        if "failure" not in info:
            self._screenshot()
        if terminated or truncated:
            self._trace(info)
        return observation, reward, terminated, truncated, info

    def _screenshot(self) -> None:
        png = self.env.unwrapped.screenshot()  # type: ignore[attr-defined]
        (self.folder / f"step-{self.turn:03d}.png").write_bytes(png)

    def _trace(self, info: dict[str, Any]) -> None:
        from archer_agents.tools.browser.confined import BrowserFailure

        try:
            self.env.unwrapped.save_trace(self.folder / "trace.zip")  # type: ignore[attr-defined]
        except BrowserFailure as exc:  # the browser died with the episode, and its trace
            info["trace_error"] = str(exc)


def resolve_task(text: str) -> Path:
    """A task file's path: ``text`` itself, or the shipped example of that name."""
    from archer_agents.environments.browser_task import example_tasks

    path = Path(text)
    if path.exists():
        return path
    examples = example_tasks()
    if text in examples:
        return examples[text]
    raise UserError(
        f"no task file {text!r}; give a .yaml/.yml/.json task file or an example "
        f"({', '.join(examples)})"
    )


def _actor(policy: str, model: str | None, tokenizer: str | None, **sampling: Any) -> Any:
    from archer_agents.policies.protocol import SamplingParams
    from archer_agents.training.rollout import PolicyActor

    if policy in SCRIPTED_ALIASES:
        return make_actor(SCRIPTED_ALIASES[policy], **sampling)
    if policy.startswith(("http://", "https://")):
        from archer_agents.policies.server_policy import ServerPolicy

        if model is None or tokenizer is None:
            raise UserError(
                "a server policy needs --model (the served model's name) and --tokenizer "
                "(its tokenizer folder)"
            )
        params = SamplingParams(
            temperature=sampling["temperature"], max_new_tokens=sampling["max_new_tokens"]
        )
        return PolicyActor(ServerPolicy(policy, model, tokenizer), params)
    return make_actor(policy, **sampling)


def browse_command(
    task_file: Annotated[
        str, typer.Argument(help="A task file (.yaml/.yml/.json) or a shipped example's name.")
    ],
    out: Annotated[Path, typer.Option(help="Folder for the log, screenshots and traces.")],
    policy: Annotated[
        str,
        typer.Option(
            help="scripted (the file's solution), random, a model folder or training run, or "
            "a server URL."
        ),
    ] = "scripted",
    model: Annotated[
        str | None, typer.Option(help="With a server URL: the served model's name.")
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="With a server URL: the served model's tokenizer folder.")
    ] = None,
    episodes: Annotated[int, typer.Option(help="Episodes to run.")] = 1,
    temperature: TemperatureOption = 1.0,
    max_new_tokens: Annotated[int, typer.Option(help="Longest action in tokens.")] = 48,
    seed: Annotated[int, typer.Option(help="Seed of the first episode.")] = 0,
    env_args: EnvArgs = None,
) -> None:
    """Run a policy on a browser task headlessly: log, screenshots and a Playwright trace."""

    def run() -> None:
        from archer_agents.data.episode_log import EpisodeWriter
        from archer_agents.training.rollout import ScriptedActor, collect

        if episodes < 1:
            raise UserError(f"--episodes must be at least 1, got {episodes}")
        path = resolve_task(task_file)
        kwargs = {**parse_env_args(env_args), "trace": True}
        factory = env_factory(str(path), kwargs)
        actor = _actor(
            policy,
            model,
            tokenizer,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=seed,
        )
        if isinstance(actor, ScriptedActor):
            probe = factory()
            kinds = probe.unwrapped.scripted_kinds
            probe.close()
            if actor.kind not in kinds:
                raise UserError(f"{path} has no solution: only {', '.join(kinds)} play it")
        out.mkdir(parents=True, exist_ok=True)
        first = len(list(out.glob("episode-*")))  # a second run adds folders, never overwrites

        def make() -> EpisodeRecorder:
            return EpisodeRecorder(factory(), out, first)

        log = out / "episodes.jsonl"
        with EpisodeWriter(log) as writer:
            result = collect(
                make, actor, episodes, num_envs=1, seed=seed, writer=writer, env_id=str(path)
            )
        for number, episode in enumerate(result.episodes):
            last = episode.transitions[-1].info if episode.transitions else {}
            outcome = "success" if episode.success else "no success"
            reason = f" ({last['failure']})" if "failure" in last else ""
            console.print(
                f"episode {number}: {outcome}{reason} in {len(episode.transitions)} steps, "
                f"{last.get('blocked_requests', 0)} blocked requests"
            )
        console.print(
            f"{len(result.episodes)} episode(s) appended to {log}; screenshots and trace.zip in "
            f"{out}/episode-*/ (open a trace with `playwright show-trace FILE`)"
        )

    run_command(run)


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.command("browse")(browse_command)
