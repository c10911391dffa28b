"""Your LangChain tools and tasks as a registered Gymnasium environment, in one call.

`register_tool_env` registers an id (``"bank/MoveMoney-v0"``) that
`gymnasium.make`, ``archer rollout``, ``archer bc`` and ``archer train`` can
use; `make_tool_env` builds one environment directly. Nothing is subclassed:
you give plain functions.

- ``new_state(task)``: the fresh state of one episode (a dict, a dataclass, an
  in-memory database...), built at every reset, so episodes never leak into
  each other;
- ``make_tools(state)``: the LangChain tools of that episode, bound to its state
  (closures or ``functools.partial`` over ``state``), built at every reset too;
- ``tasks``: ``{"train": [...], "test": [...]}`` (or one list used for both
  splits). A task is a `ToolTask` or a mapping of its fields: ``task_id``,
  ``instruction`` (the goal text the agent reads) and ``data`` (anything your
  reward or expert needs: the gold answer, the expected balance...);
- ``reward(state, task, calls)``: scored once, when the episode ends (a final
  tool was called or ``max_turns`` was reached). ``calls`` are the episode's
  `CallRecord` s (name, arguments, output, error). Return a bool (success:
  reward 1, else 0), a number (success when it is above 0) or a pair
  ``(reward, success)``;
- ``expert(task, state)`` (optional): a scripted agent for behaviour-cloning
  data (``archer rollout ENV --policy expert``). It returns the actions of the
  episode in order, as an iterable of action strings; a generator is consumed
  one action a turn, so it may look at ``state`` as the episode goes;
- ``final_tools``: calling one of these (without error) ends the episode;
- ``max_turns``: the horizon; reaching it truncates the episode.

The agent's action is one tool call a turn, in either accepted form
(`archer_agents.formats.tool_calls`):

- JSON: ``{"name": "transfer", "arguments": {"source": "checking", "amount": 5}}``
  (``"args"`` is accepted for ``"arguments"``; text around the object is ignored);
- Python call: ``transfer(source="checking", amount=5)`` or ``transfer("checking", 5)``
  (literals only, never evaluated; positional arguments follow the tool's
  argument order).

Every mistake of the model (unparsable text, unknown tool, bad arguments, a
tool raising) becomes an observation and costs ``error_penalty``; a mistake of
yours (no tools, a final tool that is not a tool, a reward of the wrong type)
raises at once. Every environment also has a ``random`` scripted agent (a
random tool with placeholder arguments), used for tokenizer text.

Example::

    register_tool_env(
        "bank/MoveMoney-v0",
        new_state=lambda task: {"checking": 100, "savings": 0},
        make_tools=make_bank_tools,
        tasks={"train": [...], "test": [...]},
        reward=lambda state, task, calls: state["savings"] == task.data["savings"],
        expert=lambda task, state: [f'transfer(amount={task.data["savings"]})', "done()"],
        final_tools=["done"],
        max_turns=6,
    )
    env = gymnasium.make("bank/MoveMoney-v0")
"""

from __future__ import annotations

import json
import logging
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import gymnasium as gym
from langchain_core.tools import BaseTool

from archer_agents.environments.base import ScriptedAgent, TextEnv
from archer_agents.environments.registration import NAMESPACE
from archer_agents.environments.tool_env import CallRecord, ToolCallingEnv, ToolTask
from archer_agents.formats.prompts import tool_spec

logger = logging.getLogger(__name__)

NewState = Callable[[ToolTask], Any]
MakeTools = Callable[[Any], Sequence[BaseTool]]
Reward = Callable[[Any, ToolTask, Sequence[CallRecord]], Any]
Expert = Callable[[ToolTask, Any], Iterable[str]]

TaskLike = ToolTask | Mapping[str, Any]


@dataclass(frozen=True)
class ToolEnvSpec:
    """Everything that defines a tool environment (see the module docstring)."""

    make_tools: MakeTools
    new_state: NewState
    tasks: Mapping[str, Sequence[ToolTask]]
    reward: Reward
    expert: Expert | None = None
    final_tools: tuple[str, ...] = ()
    max_turns: int = 10
    error_penalty: float = -0.1
    max_action_chars: int = 2_000


def _tasks(
    tasks: Mapping[str, Sequence[TaskLike]] | Sequence[TaskLike],
) -> dict[str, list[ToolTask]]:
    if not isinstance(tasks, Mapping):
        tasks = {"train": tasks, "test": tasks}
    unknown = sorted(set(tasks) - {"train", "test"})
    if unknown:
        raise ValueError(f"tasks has split(s) {unknown}; use 'train' and 'test'")
    result: dict[str, list[ToolTask]] = {}
    for split in ("train", "test"):
        items = tasks.get(split) or []
        if not items:
            raise ValueError(
                f"tasks needs at least one {split!r} task; pass {{'train': [...], 'test': [...]}} "
                "or one list for both splits"
            )
        result[split] = [
            t if isinstance(t, ToolTask) else ToolTask.model_validate(t) for t in items
        ]
        ids = [t.task_id for t in result[split]]
        if len(set(ids)) != len(ids):
            raise ValueError(f"task ids of the {split!r} split must be unique")
    return result


def tool_env_spec(
    *,
    make_tools: MakeTools,
    new_state: NewState,
    tasks: Mapping[str, Sequence[TaskLike]] | Sequence[TaskLike],
    reward: Reward,
    expert: Expert | None = None,
    final_tools: Sequence[str] = (),
    max_turns: int = 10,
    error_penalty: float = -0.1,
    max_action_chars: int = 2_000,
) -> ToolEnvSpec:
    """A checked `ToolEnvSpec` (the arguments are `register_tool_env`'s)."""
    for name, value in (("make_tools", make_tools), ("new_state", new_state), ("reward", reward)):
        if not callable(value):
            raise TypeError(f"{name} must be a function, got {type(value).__name__}")
    if expert is not None and not callable(expert):
        raise TypeError(f"expert must be a function (task, state) -> actions, got {expert!r}")
    if max_turns < 1:
        raise ValueError(f"max_turns must be at least 1, got {max_turns}")
    if isinstance(final_tools, str):
        final_tools = [final_tools]
    return ToolEnvSpec(
        make_tools=make_tools,
        new_state=new_state,
        tasks=_tasks(tasks),
        reward=reward,
        expert=expert,
        final_tools=tuple(final_tools),
        max_turns=max_turns,
        error_penalty=error_penalty,
        max_action_chars=max_action_chars,
    )


class SpecToolEnv(ToolCallingEnv):
    """A `ToolCallingEnv` whose tools and state are rebuilt from a `ToolEnvSpec` each episode.

    Keyword arguments (also through ``gymnasium.make(id, **kwargs)``) override
    the spec's ``max_turns``, ``error_penalty``, ``final_tools`` and
    ``max_action_chars``.
    """

    def __init__(
        self,
        spec: ToolEnvSpec,
        *,
        render_mode: str | None = None,
        tool_format: str = "embedded",
        **overrides: Any,
    ):
        allowed = {"max_turns", "error_penalty", "final_tools", "max_action_chars"}
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise TypeError(
                f"unknown option(s) {unknown}; a tool environment takes {sorted(allowed)}"
            )
        if "final_tools" in overrides:
            overrides["final_tools"] = tuple(overrides["final_tools"])
        self.definition = spec = replace(spec, **overrides)
        first = spec.tasks["train"][0]
        self.state: Any = spec.new_state(first)
        super().__init__(
            self._build_tools(self.state),
            spec.tasks,
            self._unused_reward,
            final_tools=spec.final_tools,
            max_turns=spec.max_turns,
            error_penalty=spec.error_penalty,
            max_action_chars=spec.max_action_chars,
            render_mode=render_mode,
            tool_format=tool_format,
        )
        self.scripted_kinds = ("expert", "random") if spec.expert is not None else ("random",)

    def _build_tools(self, state: Any) -> list[BaseTool]:
        tools = list(self.definition.make_tools(state))
        bad = [t for t in tools if not isinstance(t, BaseTool)]
        if bad:
            raise TypeError(
                "make_tools must return LangChain tools (BaseTool, e.g. from @tool); "
                f"got {bad[0]!r}"
            )
        return tools

    @staticmethod
    def _unused_reward(task: ToolTask, calls: Sequence[CallRecord]) -> tuple[float, bool]:
        raise AssertionError("SpecToolEnv scores episodes in final_reward")

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        gym.Env.reset(self, seed=seed)
        split, task_id = self._choose_task_id(options)
        self.state = self.definition.new_state(self._tasks[split][task_id])
        tools = self._build_tools(self.state)
        names = sorted(t.name for t in tools)
        if names != sorted(self.tools):
            raise ValueError(
                f"make_tools returned tools {names} for task {task_id!r}, but {sorted(self.tools)} "
                "for the first one; every episode must offer the same tools"
            )
        self.tools = {tool.name: tool for tool in tools}
        self.tool_specs = [tool_spec(tool) for tool in tools]
        return super().reset(seed=None, options={"split": split, "task_id": task_id})

    def final_reward(self) -> tuple[float, bool]:
        assert self.task is not None
        value = self.definition.reward(self.state, self.task, list(self.calls))
        return as_reward(value)

    def make_scripted_agent(self, kind: str, seed: int | None = None) -> ScriptedAgent:
        self._check_kind(kind)
        if kind == "expert":
            return _ExpertAgent(self)
        return _RandomAgent(self, seed)

    def _check_kind(self, kind: str) -> None:
        if kind == "expert" and self.definition.expert is None:
            raise ValueError(
                "this tool environment has no expert; pass expert=(task, state) -> actions to "
                "register_tool_env, or use --policy random or a model"
            )
        super()._check_kind(kind)


def as_reward(value: Any) -> tuple[float, bool]:
    """A reward function's result as (reward, success): bool, number or (number, bool)."""
    if isinstance(value, bool):
        return (1.0 if value else 0.0), value
    if isinstance(value, numbers.Real):
        return float(value), float(value) > 0
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], numbers.Real):
        return float(value[0]), bool(value[1])
    raise TypeError(
        f"the reward function returned {value!r}; return a bool (success), a number "
        "(success when above 0) or a pair (reward, success)"
    )


class _ExpertAgent:
    """Plays the spec's expert: the actions it gives for the episode's task and state."""

    def __init__(self, env: SpecToolEnv) -> None:
        self.env = env
        self._actions: Iterator[str] = iter(())

    def reset(self, observation: str, info: dict[str, Any]) -> None:
        env = self.env
        assert env.task is not None and env.definition.expert is not None
        self._actions = iter(env.definition.expert(env.task, env.state))

    def act(self, observation: str) -> str:
        action = next(self._actions, None)
        if action is None:  # the expert's plan ran out before the episode ended
            return "(no action)"
        if not isinstance(action, str):
            raise TypeError(f"the expert must yield action strings, got {action!r}")
        return action


class _RandomAgent:
    """Calls a random tool with placeholder arguments of the schema's types."""

    _PLACEHOLDERS: dict[str, Any] = {  # noqa: RUF012
        "string": "x",
        "integer": 1,
        "number": 1.0,
        "boolean": True,
        "array": [],
        "object": {},
    }

    def __init__(self, env: SpecToolEnv, seed: int | None) -> None:
        import numpy as np

        self.env = env
        self.rng = np.random.default_rng(seed)

    def reset(self, observation: str, info: dict[str, Any]) -> None:
        return None

    def act(self, observation: str) -> str:
        spec = self.env.tool_specs[int(self.rng.integers(len(self.env.tool_specs)))]
        function = spec.get("function", spec)
        properties = function.get("parameters", {}).get("properties", {})
        arguments = {
            name: self._PLACEHOLDERS.get(str(schema.get("type")), "x")
            for name, schema in properties.items()
        }
        return json.dumps({"name": function["name"], "arguments": arguments})


def make_tool_env(
    *,
    make_tools: MakeTools,
    new_state: NewState,
    tasks: Mapping[str, Sequence[TaskLike]] | Sequence[TaskLike],
    reward: Reward,
    expert: Expert | None = None,
    final_tools: Sequence[str] = (),
    max_turns: int = 10,
    error_penalty: float = -0.1,
    max_action_chars: int = 2_000,
    render_mode: str | None = None,
    tool_format: str = "embedded",
) -> TextEnv:
    """One environment from your tools and tasks, unregistered (see the module docstring).

    ``tool_format`` is how the agent writes its calls (`ToolCallingEnv`'s option).
    """
    spec = tool_env_spec(
        make_tools=make_tools,
        new_state=new_state,
        tasks=tasks,
        reward=reward,
        expert=expert,
        final_tools=final_tools,
        max_turns=max_turns,
        error_penalty=error_penalty,
        max_action_chars=max_action_chars,
    )
    return SpecToolEnv(spec, render_mode=render_mode, tool_format=tool_format)


def register_tool_env(
    env_id: str,
    *,
    make_tools: MakeTools,
    new_state: NewState,
    tasks: Mapping[str, Sequence[TaskLike]] | Sequence[TaskLike],
    reward: Reward,
    expert: Expert | None = None,
    final_tools: Sequence[str] = (),
    max_turns: int = 10,
    error_penalty: float = -0.1,
    max_action_chars: int = 2_000,
) -> ToolEnvSpec:
    """Register ``env_id`` with Gymnasium as an environment over your tools and tasks.

    Args:
        env_id: a Gymnasium id, ``"namespace/Name-v0"``; the ``archer/`` namespace
            is the project's own.
        make_tools: ``(state) -> list[BaseTool]``, the episode's tools bound to its state.
        new_state: ``(task) -> state``, a fresh state for each episode.
        tasks: ``{"train": [...], "test": [...]}`` of `ToolTask` (or mappings of its
            fields), or one list for both splits.
        reward: ``(state, task, calls) -> bool | float | (float, bool)``, scored at the end.
        expert: optional ``(task, state) -> iterable of actions``, the scripted expert.
        final_tools: names of tools whose successful call ends the episode.
        max_turns: the horizon; reaching it truncates the episode.
        error_penalty: reward added on a turn whose action was a mistake.
        max_action_chars: longer actions are refused with an error observation.

    Returns the checked spec. Registering an id again replaces it (a module
    re-run); ``gymnasium.make(env_id, max_turns=...)`` overrides per instance.
    Put the call in a module of yours and pass ``--env your_module:your/Env-v0``
    to the ``archer`` commands, which import the module first.
    """
    if env_id.startswith(f"{NAMESPACE}/"):
        raise ValueError(f"{env_id!r} is in the project's own {NAMESPACE}/ namespace; use yours")
    spec = tool_env_spec(
        make_tools=make_tools,
        new_state=new_state,
        tasks=tasks,
        reward=reward,
        expert=expert,
        final_tools=final_tools,
        max_turns=max_turns,
        error_penalty=error_penalty,
        max_action_chars=max_action_chars,
    )
    SpecToolEnv(spec).close()  # a mistake in the tools or final_tools raises here, not at make
    if env_id in gym.registry:
        logger.debug("re-registering %s", env_id)
        del gym.registry[env_id]
    gym.register(id=env_id, entry_point=_Builder(spec), disable_env_checker=True)
    return spec


@dataclass(frozen=True)
class _Builder:
    """The registered entry point: builds a `SpecToolEnv` from one spec (picklable if it is)."""

    spec: ToolEnvSpec

    def __call__(self, **kwargs: Any) -> SpecToolEnv:
        return SpecToolEnv(self.spec, **kwargs)


__all__ = [
    "CallRecord",
    "SpecToolEnv",
    "ToolEnvSpec",
    "ToolTask",
    "as_reward",
    "make_tool_env",
    "register_tool_env",
    "tool_env_spec",
]
