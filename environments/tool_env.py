"""A Gymnasium text environment whose actions are calls to LangChain tools.

The agent's utterance is parsed into a tool call (`archer_agents.formats.tool_calls`), checked
against the tool's pydantic argument schema, and run; what the tool returns is
the next observation. Every mistake of the model (unparsable text, unknown
tool, invalid arguments, a tool raising, an over-long action) becomes an
observation that names the problem, is counted in ``info``, costs
``error_penalty`` and never raises out of `step`.

The observation is the whole history, in the format of
`prompts.render_messages` (the one renderer a deployed LangChain agent sees
too): the task as the first user message with the tools, then one
``Action: <utterance>`` / ``Observation: <output>`` pair a turn, appended to
the history rather than re-rendered each step.

Subclasses customise the task text (`initial_observation`), what a call does
to the episode (`after_call`) and the final reward (`final_reward`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from archer_agents.environments.base import TextEnv, to_ascii
from archer_agents.formats import tool_formats
from archer_agents.formats.prompts import message_text, render_messages, tool_spec
from archer_agents.formats.tool_calls import (
    ActionParseError,
    ToolCall,
    bind_positional,
    parse_tool_call,
)

logger = logging.getLogger(__name__)

CALL_FORMATS = ("embedded", "hermes", "llama3_json")
"""The ``tool_format`` values an environment reads (the families vLLM's parsers read, and ours)."""


class ToolTask(BaseModel):
    """One task of a tool-calling environment."""

    model_config = ConfigDict(extra="forbid")

    task_id: str
    instruction: str
    data: dict[str, Any] = Field(default_factory=dict)
    """Whatever the reward function needs (gold answer, gold actions, ...)."""


@dataclass
class CallRecord:
    """A tool call the environment executed (or refused) during an episode."""

    name: str
    arguments: dict[str, Any]
    output: str
    error: bool


RewardFn = Callable[[ToolTask, Sequence[CallRecord]], tuple[float, bool]]
"""Maps a task and the episode's calls to (final reward, success)."""


def run_tool(tools: Mapping[str, BaseTool], call: ToolCall) -> tuple[str, bool, dict[str, Any]]:
    """Validate and run one call; return (output text, is_error, bound arguments).

    Never raises for a mistake in ``call``: those come back as ``Error: ...`` text.
    """
    tool = tools.get(call.name)
    if tool is None:
        known = ", ".join(sorted(tools))
        return f"Error: unknown tool {call.name!r}. Available tools: {known}.", True, {}
    try:
        arguments = bind_arguments(tool, call)
    except ValueError as exc:
        return f"Error: {exc}", True, dict(call.arguments)
    try:
        result = tool.invoke(arguments)
    except ValidationError as exc:
        message = f"Error: invalid arguments for {call.name}: {_validation_summary(exc)}"
        return message, True, arguments
    except Exception as exc:  # a tool's own failure is the model's observation
        logger.debug("tool %s raised", call.name, exc_info=True)
        return f"Error: {call.name} failed: {type(exc).__name__}: {exc}", True, arguments
    text = result if isinstance(result, str) else json.dumps(result, default=str, sort_keys=True)
    return text, text.startswith("Error"), arguments


def bind_arguments(tool: BaseTool, call: ToolCall) -> dict[str, Any]:
    """Merge positional arguments into keywords by the schema's field order, then validate."""
    schema = tool.args_schema
    fields: list[str] = []
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        fields = list(schema.model_fields)
    elif isinstance(schema, dict):
        fields = list(schema.get("properties", {}))
    arguments = bind_positional(call, fields)
    unknown = sorted(set(arguments) - set(fields)) if fields or schema is not None else []
    if unknown:
        raise ValueError(
            f"{call.name} has no argument(s) {', '.join(unknown)}; "
            f"its arguments are: {', '.join(fields) or 'none'}"
        )
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        try:
            schema.model_validate(arguments)
        except ValidationError as exc:
            raise ValueError(
                f"invalid arguments for {call.name}: {_validation_summary(exc)}"
            ) from exc
    return arguments


def _validation_summary(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "arguments"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


class ToolCallingEnv(TextEnv):
    """Tasks solved by calling LangChain tools, one call per turn.

    Args:
        tools: the tools the agent may call.
        tasks: task lists per split (``{"train": [...], "test": [...]}``).
        reward_fn: final reward and success from the task and the calls made.
        final_tools: calling any of these ends the episode (e.g. ``submit``).
        max_turns: the horizon; reaching it truncates the episode.
        error_penalty: reward added on a turn whose action was a mistake.
        tool_format: how the agent writes a call: ``embedded`` (the project's own
            JSON or Python-call forms), ``hermes`` (``<tool_call>{...}</tool_call>``,
            Qwen and ChatML models) or ``llama3_json`` (Llama 3's JSON), read as
            vLLM's tool parsers read them (`archer_agents.formats.tool_formats`).
    """

    def __init__(
        self,
        tools: Sequence[BaseTool],
        tasks: Mapping[str, Sequence[ToolTask]],
        reward_fn: RewardFn,
        *,
        final_tools: Sequence[str] = (),
        max_turns: int = 10,
        error_penalty: float = -0.1,
        max_action_chars: int = 2_000,
        render_mode: str | None = None,
        tool_format: str = "embedded",
    ) -> None:
        super().__init__(max_action_chars=max_action_chars, render_mode=render_mode)
        if tool_format not in CALL_FORMATS:
            raise ValueError(f"tool_format {tool_format!r} is not one of {list(CALL_FORMATS)}")
        self.tool_format = tool_formats.tool_format(tool_format)
        if not tools:
            raise ValueError("ToolCallingEnv needs at least one tool")
        self.tools = {tool.name: tool for tool in tools}
        if len(self.tools) != len(tools):
            raise ValueError("tool names must be unique")
        # Converted once: `render_messages` takes specs as they are, so a reset stays cheap.
        self.tool_specs = [tool_spec(tool) for tool in tools]
        missing = [name for name in final_tools if name not in self.tools]
        if missing:
            raise ValueError(f"final_tools {missing} are not among the tools {sorted(self.tools)}")
        self._tasks = {split: {t.task_id: t for t in items} for split, items in tasks.items()}
        for split in ("train", "test"):
            if not self._tasks.get(split):
                raise ValueError(f"ToolCallingEnv needs at least one {split!r} task")
        self.reward_fn = reward_fn
        self.final_tools = frozenset(final_tools)
        self.max_turns = max_turns
        self.error_penalty = error_penalty
        self.task: ToolTask | None = None
        self.calls: list[CallRecord] = []
        self.turn = 0
        self._history: list[str] = []

    def task_ids(self, split: str = "train") -> Sequence[str]:
        return list(self._tasks[split])

    # -- hooks for subclasses ---------------------------------------------
    def initial_observation(self, task: ToolTask) -> str:
        """The task as a user message with the tools bound, in `render_messages`' format."""
        return self.start_conversation([HumanMessage(task.instruction)])

    def start_conversation(self, messages: Sequence[BaseMessage]) -> str:
        """Open the episode with ``messages`` (system, user): its chat form and its text."""
        roles = ["system" if isinstance(m, SystemMessage) else "user" for m in messages]
        self._chat = [
            {"role": role, "content": message_text(m)}
            for role, m in zip(roles, messages, strict=True)
        ]
        return render_messages(messages, self.tool_specs)

    def chat_reply(self, record: CallRecord | None, output: str) -> dict[str, Any]:
        """The chat message for what came back from a turn (a tool result by default)."""
        message: dict[str, Any] = {"role": "tool", "content": output}
        if record is not None:
            message["name"] = record.name
        return message

    def after_call(self, record: CallRecord) -> tuple[str, bool]:
        """The observation text for a call and whether it ends the episode."""
        return record.output, record.name in self.final_tools and not record.error

    def final_reward(self) -> tuple[float, bool]:
        assert self.task is not None
        return self.reward_fn(self.task, self.calls)

    def _read_call(self, action: str) -> ToolCall:
        """The one call an utterance makes, in the environment's tool format."""
        if self.tool_format is tool_formats.EMBEDDED:
            return parse_tool_call(action)
        reply = self.tool_format.parse(action)
        if reply.error is not None:
            raise ActionParseError(reply.error)
        if not reply.calls:
            example = self.tool_format.render([ToolCall("tool_name", {"argument": "value"})])
            raise ActionParseError(f"Error: no tool call in the reply. Call one tool: {example}")
        if len(reply.calls) > 1:
            raise ActionParseError(
                f"Error: {len(reply.calls)} tool calls in one reply; call one tool a turn."
            )
        return reply.calls[0]

    # -- gymnasium ------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        split, task_id = self._choose_task_id(options)
        self.task = self._tasks[split][task_id]
        self.calls = []
        self.turn = 0
        self._history = [to_ascii(self.initial_observation(self.task))]
        self._last_observation = "".join(self._history)
        return self._last_observation, {"task_id": task_id, "split": split}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.task is None:
            raise RuntimeError("call reset() before step()")
        self.turn += 1
        info: dict[str, Any] = {"invalid_action": False, "tool_error": False}
        reward = 0.0
        terminated = False
        too_long = self._action_too_long(action)
        record: CallRecord | None = None
        if too_long is not None:
            output, info["invalid_action"] = too_long, True
        else:
            try:
                call = self._read_call(action)
            except ActionParseError as exc:
                output, info["invalid_action"] = str(exc), True
            else:
                output, is_error, arguments = run_tool(self.tools, call)
                if is_error and call.name not in self.tools:
                    info["invalid_action"] = True
                else:
                    info["tool_error"] = is_error
                info["tool"] = call.name
                record = CallRecord(call.name, arguments, output, is_error)
                self.calls.append(record)
                output, terminated = self.after_call(record)
        if info["invalid_action"] or info["tool_error"]:
            info["error"] = output
            reward += self.error_penalty
        truncated = not terminated and self.turn >= self.max_turns
        if terminated or truncated:
            final, success = self.final_reward()
            reward += final
            info["success"] = success
        shown_action = action if too_long is None else action[: self.max_action_chars] + "..."
        self._history.append(to_ascii(f"Action: {shown_action}\nObservation: {output}\n"))
        self._chat += [{"role": "assistant", "content": action}, self.chat_reply(record, output)]
        self._last_observation = "".join(self._history)
        return self._last_observation, reward, terminated, truncated, info
