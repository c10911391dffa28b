"""Scripted shoppers for MiniShop: an expert, a weak shopper and a random one.

They read the same observation text a policy reads (through
`parse_observation`) and so play both backends alike. The expert and the weak
shopper also know the structured goal (the environment's ``goal``), as a
human expert knows what the instruction means; the expert additionally asks
the catalog which products satisfy it, so it always buys a right one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from archer_agents.environments.base import random_choice
from archer_agents.tools.shop.actions import Command
from archer_agents.tools.shop.catalog import Goal
from archer_agents.tools.shop.pages import ObservedPage, parse_observation

if TYPE_CHECKING:
    from archer_agents.environments.minishop.env import MiniShopEnv


def _path(page: ObservedPage) -> str:
    return urlsplit(page.url).path


def _search_action(page: ObservedPage, query: str) -> str:
    """Type ``query`` into the search box, then press Search (two turns, BrowserGym style)."""
    box = page.find("textbox", "Search")
    button = page.find("button", "Search")
    if not box or not button:
        return "go_back()"
    if box[0].value != query:
        return Command("fill", element_id=box[0].element_id, text=query).to_action()
    return Command("click", element_id=button[0].element_id).to_action()


class ExpertShopper:
    """Searches the goal's keywords, opens a product that satisfies the goal, picks the
    options and buys. Pages through results, then widens the query if none is listed."""

    def __init__(self, env: MiniShopEnv) -> None:
        self.env = env
        self._goal: Goal | None = None
        self._targets: set[str] = set()
        self._queries: list[str] = []

    def reset(self, observation: str, info: dict[str, Any]) -> None:
        goal = self.env.goal
        if goal is None:
            raise RuntimeError("reset the environment before the agent")
        self._goal = goal
        self._targets = {p.title for p in self.env.catalog.satisfying_products(goal)}
        self._queries = list(
            dict.fromkeys(
                [
                    goal.keywords(),
                    " ".join([*goal.attributes, goal.product_type]),
                    goal.product_type,
                ]
            )
        )

    def act(self, observation: str) -> str:
        assert self._goal is not None
        page = parse_observation(observation)
        if _path(page).startswith("/item/"):
            return self._on_item(page)
        box = page.find("textbox", "Search")
        query = self._queries[0]
        if _path(page) == "/search" and box and box[0].value == query:
            for link in page.find("link"):
                if link.name in self._targets:
                    return Command("click", element_id=link.element_id).to_action()
            following = page.find("link", "Next >")
            if following:
                return Command("click", element_id=following[0].element_id).to_action()
            if len(self._queries) > 1:
                self._queries.pop(0)
                query = self._queries[0]
        return _search_action(page, query)

    def _on_item(self, page: ObservedPage) -> str:
        assert self._goal is not None
        headings = page.find("heading")
        if not headings or headings[0].name not in self._targets:
            return "go_back()"
        for box in page.find("combobox"):
            wanted = self._goal.options.get(box.name)
            if wanted is not None and box.value != wanted:
                return Command("select_option", element_id=box.element_id, text=wanted).to_action()
        buy = page.find("button", "Buy Now")
        return Command("click", element_id=buy[0].element_id).to_action() if buy else "go_back()"


class WeakShopper:
    """Searches the goal's keywords, buys the first result, and skips each option with
    probability ``skip_option``. Uses WebShop's bracket actions."""

    def __init__(self, env: MiniShopEnv, seed: int | None, skip_option: float = 0.5) -> None:
        self.env = env
        self.skip_option = skip_option
        self._rng = np.random.default_rng(seed)
        self._goal: Goal | None = None
        self._options: list[tuple[str, str]] = []

    def reset(self, observation: str, info: dict[str, Any]) -> None:
        goal = self.env.goal
        if goal is None:
            raise RuntimeError("reset the environment before the agent")
        self._goal = goal
        self._options = [
            (k, v) for k, v in goal.options.items() if self._rng.random() >= self.skip_option
        ]

    def act(self, observation: str) -> str:
        assert self._goal is not None
        page = parse_observation(observation)
        if _path(page).startswith("/item/"):
            for dimension, value in self._options:
                box = page.find("combobox", dimension)
                offered = box and any(o.text == value for o in box[0].options)
                if offered and box[0].value != value:
                    return f"click[{value}]"
            return "click[Buy Now]"
        if _path(page) == "/search":
            results = [e for e in page.find("link") if e.name not in ("Next >", "< Prev")]
            if results:
                return f"click[{results[0].name}]"
        return f"search[{self._goal.keywords()}]"


class RandomShopper:
    """Random valid-looking actions over the elements of the current page."""

    def __init__(self, env: MiniShopEnv, seed: int | None) -> None:
        self._rng = np.random.default_rng(seed)
        words = {w for p in env.catalog.products for w in p.title.lower().split()}
        self._words = sorted(words)

    def reset(self, observation: str, info: dict[str, Any]) -> None:
        return None

    def _words_sample(self) -> str:
        count = int(self._rng.integers(1, 4))
        return " ".join(random_choice(self._rng, self._words) for _ in range(count))

    def act(self, observation: str) -> str:
        page = parse_observation(observation)
        clickable = [e for e in page.elements if e.role in ("link", "button")]
        boxes = page.find("textbox")
        selects = [e for e in page.find("combobox") if e.options]
        choices: list[str] = ["go_back()", f"search[{self._words_sample()}]"]
        if clickable:
            target = random_choice(self._rng, clickable)
            choices.append(Command("click", element_id=target.element_id).to_action())
            choices.append(f"click[{random_choice(self._rng, clickable).name}]")
        if boxes:
            box = random_choice(self._rng, boxes)
            text = self._words_sample()
            choices.append(Command("fill", element_id=box.element_id, text=text).to_action())
        if selects:
            select = random_choice(self._rng, selects)
            option = random_choice(self._rng, select.options).text
            choices.append(
                Command("select_option", element_id=select.element_id, text=option).to_action()
            )
        return str(random_choice(self._rng, choices))
