"""An utterance read as a chat message: content, tool calls, or an invalid call.

`ArcherChatModel` and the local server's chat endpoint read a model's reply
through `read_tool_calls`, with the same parser and argument binding the
environments use (`archer_agents.formats.tool_calls`), so a deployed agent's
calls mean what they meant in training.

``tool_format`` picks the model family's own tool-call format
(`archer_agents.formats.tool_formats`): a hermes or llama3_json reply may hold
several calls, read as vLLM's tool parser of that name reads them. The default
is the project's embedded form, one call per utterance.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from archer_agents.formats.tool_calls import (
    ActionParseError,
    ToolCall,
    bind_positional,
    parse_tool_call,
)
from archer_agents.formats.tool_formats import EmbeddedFormat, ToolFormat, looks_like_embedded_call


def _new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def read_tool_calls(
    text: str,
    tools: Sequence[dict[str, Any]],
    tool_choice: str | None,
    tool_format: ToolFormat | None = None,
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]], str | None]:
    """(content, tool_calls, invalid_tool_calls, error) for an utterance.

    ``tools`` are `prompts.tool_spec` dicts; ``tool_choice`` is None, "auto",
    "none", "any", "required" or a tool's name; ``tool_format`` is the model
    family's format (None: the embedded form). Also the local server's reading
    of a chat completion (`archer_agents.serving.chat_tools`).
    """
    if not tools or tool_choice == "none":
        return text, [], [], None
    required = tool_choice not in (None, "auto")
    if tool_format is not None and not isinstance(tool_format, EmbeddedFormat):
        return _read_family(text, tools, tool_choice, required, tool_format)
    try:
        call = parse_tool_call(text)
    except ActionParseError as exc:
        if not required and not _looks_like_a_call(text):
            return text, [], [], None
        return text, [], [_invalid(None, text, str(exc))], str(exc)
    specs = {spec["name"]: spec for spec in tools}
    names = list(specs.get(call.name, {}).get("parameters", {}).get("properties", {}))
    try:
        arguments = bind_positional(call, names)
    except ValueError as exc:
        error = f"Error: {exc}."
        return text, [], [_invalid(call.name, text, error)], error
    if tool_choice in specs and call.name != tool_choice:
        error = f"Error: expected a call to {tool_choice}, got {call.name}."
        return text, [], [_invalid(call.name, text, error)], error
    # An unknown tool name is still a call: the agent's tool node answers it with an error
    # observation, as a ToolCallingEnv does.
    return "", [{"name": call.name, "args": arguments, "id": _new_call_id()}], [], None


def _read_family(
    text: str,
    tools: Sequence[dict[str, Any]],
    tool_choice: str | None,
    required: bool,
    tool_format: ToolFormat,
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]], str | None]:
    """`read_tool_calls` for a family whose reply may hold content and several calls.

    The reply is read whole or not at all, as vLLM does: one call that cannot
    be bound (or is not the chosen tool) makes the reply one invalid call.
    """
    reply = tool_format.parse(text)
    if reply.error is not None:
        return text, [], [_invalid(None, text, reply.error)], reply.error
    if not reply.calls:
        if required:
            needed = f"Error: a tool call is required; write one in the {tool_format.name} form."
            return text, [], [_invalid(None, text, needed)], needed
        return reply.content, [], [], None
    specs = {spec["name"]: spec for spec in tools}
    calls: list[dict[str, Any]] = []
    for call in reply.calls:
        error = _call_error(call, specs, tool_choice)
        if error is not None:
            return text, [], [_invalid(call.name, text, error)], error
        arguments = bind_positional(call, _parameters(call, specs))
        calls.append({"name": call.name, "args": arguments, "id": _new_call_id()})
    return reply.content, calls, [], None


def _parameters(call: ToolCall, specs: dict[str, dict[str, Any]]) -> list[str]:
    return list(specs.get(call.name, {}).get("parameters", {}).get("properties", {}))


def _call_error(
    call: ToolCall, specs: dict[str, dict[str, Any]], tool_choice: str | None
) -> str | None:
    try:
        bind_positional(call, _parameters(call, specs))
    except ValueError as exc:
        return f"Error: {exc}."
    if tool_choice in specs and call.name != tool_choice:
        return f"Error: expected a call to {tool_choice}, got {call.name}."
    return None


def _looks_like_a_call(text: str) -> bool:
    """An utterance that tried to be a call (JSON object or ``name(...)``) and failed."""
    return looks_like_embedded_call(text)


def _invalid(name: str | None, text: str, error: str) -> dict[str, Any]:
    return {
        "type": "invalid_tool_call",
        "name": name,
        "args": text,
        "id": _new_call_id(),
        "error": error,
    }
