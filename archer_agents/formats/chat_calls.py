"""An utterance read as a chat message: content, tool calls, or an invalid call.

`ArcherChatModel` and the local server's chat endpoint read a model's reply
through `read_tool_calls`, with the same parser and argument binding the
environments use (`archer_agents.formats.tool_calls`), so a deployed agent's
calls mean what they meant in training.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from archer_agents.formats.tool_calls import ActionParseError, bind_positional, parse_tool_call


def _new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def read_tool_calls(
    text: str, tools: Sequence[dict[str, Any]], tool_choice: str | None
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]], str | None]:
    """(content, tool_calls, invalid_tool_calls, error) for an utterance.

    ``tools`` are `prompts.tool_spec` dicts; ``tool_choice`` is None, "auto",
    "none", "any", "required" or a tool's name. Also the local server's reading
    of a chat completion (`archer_agents.serving.chat_tools`).
    """
    if not tools or tool_choice == "none":
        return text, [], [], None
    required = tool_choice not in (None, "auto")
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


def _looks_like_a_call(text: str) -> bool:
    """An utterance that tried to be a call (JSON object or ``name(...)``) and failed."""
    stripped = text.strip()
    return stripped.startswith("{") or re.match(r"^[A-Za-z_]\w*\(", stripped) is not None


def _invalid(name: str | None, text: str, error: str) -> dict[str, Any]:
    return {
        "type": "invalid_tool_call",
        "name": name,
        "args": text,
        "id": _new_call_id(),
        "error": error,
    }
