"""MiniShop's actions: commands, and how one is planned against the current page.

A `Command` is one of BrowserGym's calls (``click("b12")``, ``fill("t3",
"text")``, ``select_option("s7", "L")``, ``go_back()``) or WebShop's bracket
forms (``search[...]``, ``click[...]`` by visible text; on a select's option it
chooses it). Parsing utterances into commands lives with the environments
(`archer_agents.environments.minishop.actions`).

`plan` checks a command against the page's elements (ids, kinds, options) and
turns it into primitive `Step`s. Both backends use it, so a mistake gives the
same error text whether the page lives in the text backend or in Chromium.
Every mistake raises `ActionError`, whose message is shown to the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from archer_agents.tools.shop.pages import Element, PageView, normalize_space, sanitize_text_input

ACTION_HELP = (
    'Actions: click("b12"), fill("t3", "text"), select_option("s7", "value"), go_back(), '
    "search[query], click[visible text]."
)

CommandName = Literal["click", "fill", "select_option", "go_back", "search", "click_text"]


class ActionError(ValueError):
    """The model's action cannot be carried out; the message is its observation."""


@dataclass(frozen=True)
class Command:
    """A parsed action."""

    name: CommandName
    element_id: str = ""
    text: str = ""

    def to_action(self) -> str:
        """The canonical utterance for this command."""
        if self.name == "search":
            return f"search[{self.text}]"
        if self.name == "click_text":
            return f"click[{self.text}]"
        if self.name == "go_back":
            return "go_back()"
        args = [json.dumps(self.element_id)]
        if self.name in ("fill", "select_option"):
            args.append(json.dumps(self.text))
        return f"{self.name}({', '.join(args)})"


@dataclass(frozen=True)
class Step:
    """A primitive browser operation on an element of the current page."""

    kind: Literal["click", "fill", "select", "back"]
    element_id: str = ""
    value: str = ""


# -- planning ----------------------------------------------------------------------


def _lookup(view: PageView, element_id: str) -> Element:
    for element in view.elements:
        if element.interactive and element.element_id == element_id:
            return element
    raise ActionError(f"Error: there is no element with id {element_id!r} on this page.")


def _same_text(a: str, b: str) -> bool:
    return normalize_space(a).lower() == normalize_space(b).lower()


def _option_value(element: Element, wanted: str) -> str | None:
    for option in element.options:
        if _same_text(option.text, wanted) or _same_text(option.value, wanted):
            return option.value
    return None


def plan(command: Command, view: PageView) -> list[Step]:
    """The steps that carry out ``command`` on the page ``view``; `ActionError` if impossible."""
    if command.name == "go_back":
        if not view.can_go_back:
            raise ActionError("Error: there is no previous page to go back to.")
        return [Step("back")]
    if command.name == "search":
        box = next((e for e in view.elements if e.role == "textbox"), None)
        button = next(
            (e for e in view.elements if e.role == "button" and _same_text(e.name, "Search")), None
        )
        if box is None or button is None:
            raise ActionError("Error: this page has no search box.")
        return [
            Step("fill", box.element_id, sanitize_text_input(command.text)),
            Step("click", button.element_id),
        ]
    if command.name == "click_text":
        return _plan_click_text(command.text, view)
    element = _lookup(view, command.element_id)
    if command.name == "click":
        if element.role not in ("link", "button"):
            hint = "fill" if element.role == "textbox" else "select_option"
            raise ActionError(
                f"Error: {command.element_id!r} is a {element.role}; click works on links and "
                f"buttons (use {hint} for a {element.role})."
            )
        return [Step("click", element.element_id)]
    if command.name == "fill":
        if element.role != "textbox":
            raise ActionError(
                f"Error: {command.element_id!r} is a {element.role}; fill works on textboxes."
            )
        return [Step("fill", element.element_id, sanitize_text_input(command.text))]
    if element.role != "combobox":
        raise ActionError(
            f"Error: {command.element_id!r} is a {element.role}; select_option works on comboboxes."
        )
    value = _option_value(element, command.text)
    if value is None:
        choices = ", ".join(repr(o.text) for o in element.options)
        raise ActionError(
            f"Error: {command.element_id!r} has no option {command.text!r}; its options are "
            f"{choices}."
        )
    return [Step("select", element.element_id, value)]


def _plan_click_text(text: str, view: PageView) -> list[Step]:
    for element in view.elements:
        if element.role in ("link", "button") and _same_text(element.name, text):
            return [Step("click", element.element_id)]
    for element in view.elements:
        if element.role == "combobox":
            value = _option_value(element, text)
            if value is not None and value != "":
                return [Step("select", element.element_id, value)]
    raise ActionError(f"Error: nothing clickable named {text!r} on this page.")
