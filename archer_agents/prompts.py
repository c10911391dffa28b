"""Prompt rendering, in one place for training, rollouts, serving and LangChain.

A deployed agent must see exactly the text format it was trained on, so every
component that turns an observation (or a list of tools) into model input calls
these functions and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

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
