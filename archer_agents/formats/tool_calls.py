"""Parse an agent's utterance into a tool call, never executing it.

One parser for the environments (`archer_agents.environments.tool_env`) and
the LangChain chat model (`archer_agents.langchain.chat_model`), so a deployed agent's
calls are read exactly as they were read in training.

Two forms are accepted:

- JSON: ``{"name": "get_order", "arguments": {"order_id": "#W1"}}`` (``"args"``
  is accepted for ``"arguments"``; text around the object is ignored);
- Python call: ``get_order(order_id="#W1")`` or ``get_order("#W1")``, parsed
  with `ast` (literals only; never `eval`).

A failure raises `ActionParseError` whose message is fit to show the model.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


class ActionParseError(ValueError):
    """The utterance is not a tool call in either accepted form."""


@dataclass
class ToolCall:
    """A parsed call: the tool's name plus keyword and positional arguments."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    positional: list[Any] = field(default_factory=list)


def parse_tool_call(text: str) -> ToolCall:
    """Parse ``text`` as a JSON or Python-call tool call."""
    stripped = text.strip()
    if not stripped:
        raise ActionParseError("Error: empty action. Write one tool call.")
    if "{" in stripped and (stripped.startswith("{") or not _looks_like_call(stripped)):
        return _parse_json(stripped)
    return _parse_python_call(stripped)


def bind_positional(call: ToolCall, parameters: Sequence[str]) -> dict[str, Any]:
    """The call's keyword arguments, its positional ones named by ``parameters`` in order.

    The one place where ``lookup("#W1")`` becomes ``{"order_id": "#W1"}``, for
    the environments and the chat model alike. Raises `ValueError` (a message
    fit for the model, without the ``Error:`` prefix) when there are more
    positional arguments than parameters or one is given twice.
    """
    arguments = dict(call.arguments)
    if len(call.positional) > len(parameters):
        raise ValueError(
            f"{call.name} takes at most {len(parameters)} argument(s) ({', '.join(parameters)}), "
            f"got {len(call.positional)} positional"
        )
    for name, value in zip(parameters, call.positional, strict=False):
        if name in arguments:
            raise ValueError(f"{call.name} got argument {name!r} twice")
        arguments[name] = value
    return arguments


def _looks_like_call(text: str) -> bool:
    head = text.split("(", 1)[0].strip()
    return "(" in text and head.replace("_", "a").replace(".", "a").isalnum()


def _parse_json(text: str) -> ToolCall:
    start = text.find("{")
    decoder = json.JSONDecoder()
    try:
        payload, _ = decoder.raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        raise ActionParseError(
            f"Error: could not parse the JSON tool call ({exc.msg} at column {exc.colno})."
        ) from exc
    if not isinstance(payload, dict):
        raise ActionParseError("Error: a JSON tool call must be an object.")
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        raise ActionParseError('Error: the JSON tool call needs a "name" string.')
    arguments = payload.get("arguments", payload.get("args", {}))
    if isinstance(arguments, str):  # OpenAI style: arguments as a JSON string
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ActionParseError(
                f'Error: "arguments" is a string that is not JSON ({exc.msg}).'
            ) from exc
    if not isinstance(arguments, dict):
        raise ActionParseError('Error: "arguments" must be an object of named arguments.')
    return ToolCall(name=name, arguments=arguments)


def _parse_python_call(text: str) -> ToolCall:
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ActionParseError(
            f"Error: the action is not a tool call ({exc.msg}). "
            'Write name(arg="value") or a JSON object with "name" and "arguments".'
        ) from exc
    call = tree.body
    if not isinstance(call, ast.Call):
        raise ActionParseError(
            'Error: the action is not a tool call. Write name(arg="value") or a JSON object '
            'with "name" and "arguments".'
        )
    if not isinstance(call.func, ast.Name):
        raise ActionParseError("Error: call a tool by its plain name, e.g. get_order(...).")
    positional = []
    for node in call.args:
        positional.append(_literal(node))
    arguments: dict[str, Any] = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise ActionParseError("Error: **kwargs is not allowed in a tool call.")
        arguments[keyword.arg] = _literal(keyword.value)
    return ToolCall(name=call.func.id, arguments=arguments, positional=positional)


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise ActionParseError(
            f"Error: argument {ast.unparse(node)[:60]!r} is not a literal value "
            "(use strings, numbers, lists, dicts, True/False/None)."
        ) from exc
