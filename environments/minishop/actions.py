"""Parse a MiniShop utterance into a `Command`, never executing it.

Two families are accepted, as in the reference suites:

- BrowserGym calls, parsed by `archer_agents.formats.tool_calls` with `ast` (never `eval`):
  ``click("b12")``, ``fill("t3", "text")``, ``select_option("s7", "L")``,
  ``go_back()``; a JSON tool call naming the same actions works too, and each
  argument also answers to BrowserGym's name (``bid``, ``value``, ``options``);
- WebShop's bracket forms, with a small parser of their own:
  ``search[navy cotton t-shirt]`` and ``click[Buy Now]``.

A malformed action raises `ActionError` whose message is fit to show the model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from archer_agents.formats.tool_calls import ActionParseError, parse_tool_call
from archer_agents.tools.shop.actions import ACTION_HELP, ActionError, Command

_BRACKET = re.compile(r"(?P<name>search|click)\[(?P<arg>.*)\]", re.DOTALL | re.IGNORECASE)

# Parameter names per action; each parameter also accepts BrowserGym's spelling.
_SIGNATURES: dict[str, tuple[tuple[str, ...], ...]] = {
    "click": (("element_id", "bid"),),
    "fill": (("element_id", "bid"), ("text", "value")),
    "select_option": (("element_id", "bid"), ("option", "value", "options")),
    "go_back": (),
}


def parse_action(text: str) -> Command:
    """Parse one utterance into a `Command`; raise `ActionError` if it is not one."""
    stripped = text.strip()
    if not stripped:
        raise ActionError(f"Error: empty action. {ACTION_HELP}")
    bracket = _BRACKET.fullmatch(stripped)
    if bracket:
        name = bracket["name"].lower()
        argument = bracket["arg"].strip()
        if not argument:
            what = "a query" if name == "search" else "the visible text of what to click"
            raise ActionError(f"Error: {name}[...] needs {what} inside the brackets.")
        return Command("search" if name == "search" else "click_text", text=argument)
    try:
        call = parse_tool_call(stripped)
    except ActionParseError as exc:
        raise ActionError(f"{exc} {ACTION_HELP}") from exc
    signature = _SIGNATURES.get(call.name)
    if signature is None:
        raise ActionError(f"Error: unknown action {call.name!r}. {ACTION_HELP}")
    values = _bind(call.name, signature, call.positional, call.arguments)
    if call.name == "go_back":
        return Command("go_back")
    element_id = values[0]
    text_arg = values[1] if len(values) > 1 else ""
    return Command(call.name, element_id=element_id, text=text_arg)  # type: ignore[arg-type]


def _bind(
    name: str,
    signature: tuple[tuple[str, ...], ...],
    positional: Sequence[Any],
    keywords: dict[str, Any],
) -> list[str]:
    usage = f"{name}({', '.join(names[0] for names in signature)})"
    if len(positional) > len(signature):
        raise ActionError(
            f"Error: {name} takes {len(signature)} argument(s), got {len(positional)}: {usage}."
        )
    keywords = dict(keywords)
    bound: list[str] = []
    for i, names in enumerate(signature):
        given = [k for k in names if k in keywords]
        if i < len(positional):
            if given:
                raise ActionError(f"Error: {name} got argument {names[0]!r} twice.")
            value = positional[i]
        elif given:
            value = keywords.pop(given[0])
            if len(given) > 1:
                raise ActionError(f"Error: {name} got argument {names[0]!r} twice.")
        else:
            raise ActionError(f"Error: {name} is missing argument {names[0]!r}: {usage}.")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ActionError(f"Error: argument {names[0]!r} of {name} must be a string.")
        bound.append(str(value))
    if keywords:
        raise ActionError(
            f"Error: {name} has no argument(s) {', '.join(sorted(keywords))}: {usage}."
        )
    return bound
