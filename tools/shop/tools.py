"""MiniShop's actions as LangChain tools, for any LangChain agent.

Each tool writes the canonical action (``click("b12")``, ``search[...]``, ...)
and hands it to a `ShopController` (either MiniShop environment), which acts
and returns the next observation. The tools hold no state of their own, so the
environment's bookkeeping (turns, rewards, errors) is the same whether a policy
writes actions as text or a LangChain agent calls tools.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from archer_agents.tools.shop.actions import Command


class ShopController(Protocol):
    """Something that carries out one MiniShop action and returns the observation."""

    def perform(self, action: str) -> str: ...


class ClickArgs(BaseModel):
    element_id: str = Field(description="Id of a link or button from the page, e.g. 'b12'.")


class FillArgs(BaseModel):
    element_id: str = Field(description="Id of a textbox, e.g. 't1'.")
    text: str = Field(description="Text to type into it (replaces what is there).")


class SelectArgs(BaseModel):
    element_id: str = Field(description="Id of a combobox (select), e.g. 's7'.")
    option: str = Field(description="The option to choose, by its text.")


class SearchArgs(BaseModel):
    query: str = Field(description="What to search the shop for.")


class ClickTextArgs(BaseModel):
    text: str = Field(description="Visible text of a link, button or option to click.")


class NoArgs(BaseModel):
    pass


def make_shop_tools(controller: ShopController) -> list[BaseTool]:
    """The six MiniShop actions as tools acting through ``controller``."""

    def run(command: Command) -> str:
        return controller.perform(command.to_action())

    def click(element_id: str) -> str:
        return run(Command("click", element_id=element_id))

    def fill(element_id: str, text: str) -> str:
        return run(Command("fill", element_id=element_id, text=text))

    def select_option(element_id: str, option: str) -> str:
        return run(Command("select_option", element_id=element_id, text=option))

    def go_back() -> str:
        return run(Command("go_back"))

    def search(query: str) -> str:
        return run(Command("search", text=query))

    def click_text(text: str) -> str:
        return run(Command("click_text", text=text))

    specs: list[tuple[Callable[..., str], type[BaseModel], str]] = [
        (click, ClickArgs, "Click a link or button of the current page by its id."),
        (fill, FillArgs, "Type text into a textbox of the current page."),
        (select_option, SelectArgs, "Choose an option of a select (combobox)."),
        (go_back, NoArgs, "Go back to the previous page."),
        (search, SearchArgs, "Search the shop (types the query and presses Search)."),
        (click_text, ClickTextArgs, "Click whatever shows this text (WebShop's click[...])."),
    ]
    return [
        StructuredTool.from_function(
            func=func, name=func.__name__, description=description, args_schema=schema
        )
        for func, schema, description in specs
    ]
