"""Parse an agent's utterance into a tool call, never executing it.

One parser for the environments (`archer_agents.environments.tool_env`) and
the LangChain chat model (`archer_agents.langchain.chat_model`), so a deployed agent's
calls are read exactly as they were read in training.

Two forms are accepted:

- JSON: ``{"name": "get_order", "arguments": {"order_id": "#W1"}}`` (``"args"``
  is accepted for ``"arguments"``; text around the object is ignored);
- Python call: ``get_order(order_id="#W1")`` or ``get_order("#W1")``, parsed
  with `ast` (literals only; never `eval`).

A failure raises `ActionParseError` whose message is fit to show the model,
and only that: pathological text (lone surrogates, nesting deep enough to exhaust
a parser's recursion, numbers past Python's digit limit) is the model's mistake
too, so `parse_tool_call` is total over strings. A parsed call is also checked
by `check_call`: arguments nested deeper than `MAX_NESTING` are refused here,
before they reach a tool, a validator or a JSON encoder whose recursion would
fail on them less politely. A Python call holding a lone surrogate is refused
(`ast` cannot read it); in JSON a lone surrogate is a string's content and
passes through, as in the model families' formats.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


class ActionParseError(ValueError):
    """The utterance is not a tool call in either accepted form."""


MAX_NESTING = 64
"""The deepest a call's arguments may nest (lists and dicts inside each other).

No tool needs more; deeper arguments are the model's mistake, refused with a
message rather than passed on to validators, tools and JSON encoders whose own
recursion could fail on them.
"""

NESTED_TOO_DEEPLY = (
    f"Error: the tool call is nested too deeply (the limit is {MAX_NESTING} levels); "
    "pass flat arguments."
)

_SURROGATE = re.compile(r"[\ud800-\udfff]")
"""A lone surrogate code point: not text (it has no UTF-8 encoding), though a str may hold one."""


@dataclass
class ToolCall:
    """A parsed call: the tool's name plus keyword and positional arguments."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    positional: list[Any] = field(default_factory=list)


def parse_tool_call(text: str) -> ToolCall:
    """Parse ``text`` as a JSON or Python-call tool call.

    Raises `ActionParseError` for any text that is not a call, never another
    error: a parser's `RecursionError` on absurd nesting becomes the same
    "nested too deeply" message that `check_call` gives.
    """
    stripped = text.strip()
    if not stripped:
        raise ActionParseError("Error: empty action. Write one tool call.")
    try:
        if "{" in stripped and (stripped.startswith("{") or not _looks_like_call(stripped)):
            call = _parse_json(stripped)
        else:
            call = _parse_python_call(stripped)
    except RecursionError as exc:
        raise ActionParseError(NESTED_TOO_DEEPLY) from exc
    check_call(call)
    return call


def _surrogate_error(text: str, where: str) -> str | None:
    """A message naming the first lone surrogate in ``text`` (in ``where``), or None.

    A lone surrogate (U+D800..U+DFFF) has no UTF-8 encoding, and `ast.parse`
    encodes its source, so a Python call holding one cannot be read.
    """
    match = _SURROGATE.search(text)
    if match is None:
        return None
    return (
        f"Error: {where} holds a lone surrogate character (U+{ord(match.group()):04X} at "
        f"character {match.start()}), which is not valid text; write plain Unicode."
    )


def check_call(call: ToolCall) -> None:
    """Refuse a parsed call whose arguments nest deeper than `MAX_NESTING`.

    Walks the values with an explicit stack (no recursion, so it is safe on
    any depth). Every tool-call reader runs it (`parse_tool_call` and the
    model families' formats), so the limit is the same whichever way a call
    was written. Raises `ActionParseError` with a message for the model.
    """
    stack: list[tuple[Any, int]] = [(call.arguments, 1), (call.positional, 1)]
    while stack:
        value, depth = stack.pop()
        if not isinstance(value, dict | list | tuple | set | frozenset):
            continue
        if depth > MAX_NESTING:
            raise ActionParseError(NESTED_TOO_DEEPLY)
        items = value.values() if isinstance(value, dict) else value
        stack.extend((item, depth + 1) for item in items)


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
    except ValueError as exc:  # e.g. an integer past Python's digit limit
        raise ActionParseError(f"Error: could not parse the JSON tool call ({exc}).") from exc
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
        except ValueError as exc:  # e.g. an integer past Python's digit limit
            message = f'Error: "arguments" is a string that is not JSON ({exc}).'
            raise ActionParseError(message) from exc
    if not isinstance(arguments, dict):
        raise ActionParseError('Error: "arguments" must be an object of named arguments.')
    return ToolCall(name=name, arguments=arguments)


def _parse_python_call(text: str) -> ToolCall:
    surrogate = _surrogate_error(text, "the action")
    if surrogate is not None:
        raise ActionParseError(surrogate)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ActionParseError(
            f"Error: the action is not a tool call ({exc.msg}). "
            'Write name(arg="value") or a JSON object with "name" and "arguments".'
        ) from exc
    except (RecursionError, MemoryError) as exc:  # CPython's parser on absurd nesting
        raise ActionParseError(NESTED_TOO_DEEPLY) from exc
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
        positional.append(_literal(node, text))
    arguments: dict[str, Any] = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise ActionParseError("Error: **kwargs is not allowed in a tool call.")
        arguments[keyword.arg] = _literal(keyword.value, text)
    return ToolCall(name=call.func.id, arguments=arguments, positional=positional)


def _literal(node: ast.expr, source: str) -> Any:
    """The literal value of an argument node; the error quotes the argument's source text.

    The quote is cut from ``source`` rather than `ast.unparse` d: unparsing
    recurses, and fails on the deep expressions (``1+1+...``) it would quote.
    """
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        quoted = (ast.get_source_segment(source, node) or "")[:60]
        raise ActionParseError(
            f"Error: argument {quoted!r} is not a literal value "
            "(use strings, numbers, lists, dicts, True/False/None)."
        ) from exc
