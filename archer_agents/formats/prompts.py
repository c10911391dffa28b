"""Prompt rendering, in one place for training, rollouts, serving and LangChain.

A deployed agent must see exactly the text format it was trained on, so every
component that turns an observation (or a list of tools) into model input calls
these functions and nothing else.

A LangChain conversation becomes an observation with `render_messages`, in the
tool-calling environments' own format (`ToolCallingEnv`), one piece per message:

    <system message text>            each leading system message, as is
    Task: <first user message>
    Tools:                           when tools are bound
    - name(arg: type, ...): description
    Action: <utterance>              each AI message (`render_action`)
    Observation: <tool output>       each tool message, unless a user message follows it
    Observation: User: <text>        each user message after an AI message

so a conversation of one task message, then tool calls and their outputs, is
exactly the observation a `ToolCallingEnv` shows for the same task and calls.
The chat model (`ArcherChatModel`), the episode recorder, the environments and
training all call this one function.

A tool message directly followed by a user message is left out: that tool
ended the agent's turn (a ``return_direct`` tool, such as SupportSim's
``respond``, whose output went to the user, not to the model), so what the
action observed is the user's reply. This is how a customer conversation
through ``create_agent`` (``respond`` call, its tool message, the customer's
next message) renders exactly as SupportSim shows it (``Action: respond(...)``
then ``Observation: User: <reply>``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool


def render_prompt(observation: str) -> str:
    """The text a policy conditions on for one observation.

    The observation already holds the whole history; the utterance follows it
    directly and ends with the model's end-of-utterance token.
    """
    return observation


def tool_spec(tool: BaseTool | dict[str, Any]) -> dict[str, Any]:
    """A tool's name, description and JSON-schema parameters (OpenAI function form)."""
    spec = tool if isinstance(tool, dict) else convert_to_openai_tool(tool)
    function = spec.get("function", spec)
    return {
        "name": function["name"],
        "description": function.get("description", ""),
        "parameters": function.get("parameters", {"type": "object", "properties": {}}),
    }


def render_tools(tools: Sequence[BaseTool | dict[str, Any]]) -> str:
    """Describe tools to the model, one line each: ``name(arg: type, ...): description``."""
    lines = []
    for tool in tools:
        spec = tool_spec(tool)
        properties = spec["parameters"].get("properties", {})
        required = set(spec["parameters"].get("required", []))
        args = []
        for arg, schema in properties.items():
            kind = schema.get("type", "any")
            args.append(f"{arg}: {kind}" + ("" if arg in required else "?"))
        description = " ".join(spec["description"].split())
        lines.append(f"- {spec['name']}({', '.join(args)}): {description}")
    return "\n".join(lines)


def render_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """The canonical JSON form of a tool call, as the model is taught to write it."""
    return json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False, sort_keys=True)


UTTERANCE_KEY = "utterance"
"""``response_metadata`` key under which `ArcherChatModel` keeps the text the policy said."""
UTTERANCE_CALLS_KEY = "utterance_tool_calls"
"""``response_metadata`` key: the ``[name, args]`` pairs the utterance was parsed into."""


def message_text(message: BaseMessage) -> str:
    """A message's text: its string content, or its text blocks joined."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def render_action(message: AIMessage) -> str:
    """The utterance an AI message stands for.

    A message from `ArcherChatModel` is rendered as the policy's own words (the
    ids it sampled), unless its tool calls were changed after the fact (e.g.
    edited by a person), in which case it is rendered like any other model's:
    its text, then each tool call in the canonical form of `render_tool_call`,
    one a line.
    """
    metadata = message.response_metadata or {}
    utterance = metadata.get(UTTERANCE_KEY)
    if isinstance(utterance, str):
        said_calls = metadata.get(UTTERANCE_CALLS_KEY, [])
        now_calls = [[call["name"], call["args"]] for call in message.tool_calls]
        if said_calls == now_calls:
            return utterance
    parts = [message_text(message)] if message_text(message) else []
    parts += [render_tool_call(call["name"], call["args"]) for call in message.tool_calls]
    return "\n".join(parts)


def render_messages(
    messages: Sequence[BaseMessage], tools: Sequence[BaseTool | dict[str, Any]] = ()
) -> str:
    """The observation a conversation stands for (format in the module docstring)."""
    pieces: list[str] = []
    tools_block = f"Tools:\n{render_tools(tools)}\n" if tools else ""
    tools_shown = not tools_block
    leading = True  # still among the leading system messages
    acted = False  # an AI message has been seen
    for index, message in enumerate(messages):
        text = message_text(message)
        if isinstance(message, SystemMessage) and leading:
            pieces.append(f"{text}\n")
            continue
        if leading and not isinstance(message, HumanMessage) and not tools_shown:
            pieces.append(tools_block)
            tools_shown = True
        first_user = leading and isinstance(message, HumanMessage)
        leading = False
        if first_user:
            pieces.append(f"Task: {text}\n")
            if not tools_shown:
                pieces.append(tools_block)
                tools_shown = True
        elif isinstance(message, AIMessage):
            pieces.append(f"Action: {render_action(message)}\n")
            acted = True
        elif isinstance(message, ToolMessage | FunctionMessage):
            following = messages[index + 1] if index + 1 < len(messages) else None
            if not isinstance(following, HumanMessage):  # else it ended the turn (docstring)
                pieces.append(f"Observation: {text}\n")
        else:
            role = "user" if isinstance(message, HumanMessage) else _role(message)
            prefix = "Observation: " if acted else ""
            pieces.append(f"{prefix}{role.capitalize()}: {text}\n")
    if not tools_shown:
        pieces.append(tools_block)
    return "".join(pieces)


def _role(message: BaseMessage) -> str:
    return str(getattr(message, "role", None) or message.type)
