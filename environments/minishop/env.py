"""MiniShop (text backend): WebShop-style shopping over a local shop, for training.

The agent reads a shopping instruction and the current page as a simplified
accessibility tree (``[b12] button 'Buy Now'``), then acts with BrowserGym
calls (``click("b12")``, ``fill("t1", "...")``, ``select_option("s7", "l")``,
``go_back()``) or WebShop's ``search[...]`` / ``click[...]``. Buy Now ends the
episode with WebShop's reward (exact matching): type match x (attribute hits +
option hits + price ok) / (attributes + options + 1); success means reward 1.
After ``max_turns`` actions without a purchase the episode is truncated with
reward 0. A mistaken action (malformed, unknown element id, wrong kind of
element) changes nothing, costs a turn, and its error is the last line of the
next observation.

This backend runs the shop's state machine in-process with no browser;
`MiniShopBrowserEnv` drives real Chromium over the same pages, and the parity
tests check that both give the same observations and rewards.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from archer_agents.environments.base import ScriptedAgent, TextEnv, to_ascii
from archer_agents.environments.minishop.actions import parse_action
from archer_agents.tools.shop.actions import ActionError, Step, plan
from archer_agents.tools.shop.catalog import Catalog, Goal, score_purchase
from archer_agents.tools.shop.generate import load_catalog
from archer_agents.tools.shop.pages import PageView, render_observation
from archer_agents.tools.shop.search import ProductSearch
from archer_agents.tools.shop.state import BackendFailure, ShopState, TextClient

logger = logging.getLogger(__name__)

TEXT_ORIGIN = "http://127.0.0.1:8000"
"""The origin the text backend shows in URLs (no server listens there)."""
DEFAULT_MAX_TURNS = 15


class MiniShopEnv(TextEnv):
    """MiniShop with the text backend.

    Args:
        catalog: a catalog name ('default': 300 products, 500/100 train/test goals;
            'small': for tests) or a `Catalog`.
        max_turns: the horizon; reaching it without a purchase truncates the episode.
        origin: the origin shown in the observation's URL.
        max_action_chars: longer actions are refused with an error observation.
        render_mode: None or 'ansi'.
    """

    text_layout = "page"

    def __init__(
        self,
        *,
        catalog: str | Catalog = "default",
        max_turns: int = DEFAULT_MAX_TURNS,
        origin: str = TEXT_ORIGIN,
        max_action_chars: int = 2_000,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(max_action_chars=max_action_chars, render_mode=render_mode)
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")
        self.catalog = load_catalog(catalog) if isinstance(catalog, str) else catalog
        for split in ("train", "test"):
            if not self.catalog.goals[split]:
                raise ValueError(f"the catalog has no {split!r} goals; generate some")
        self.search = ProductSearch(self.catalog.products)
        self.max_turns = max_turns
        self.origin = origin.rstrip("/")
        self.goal: Goal | None = None
        """The current episode's goal (structured; the agent only sees its instruction)."""
        self.state: ShopState | None = None
        self.turn = 0
        self._view: PageView | None = None
        self._done = False
        self._client: TextClient | None = None

    # -- tasks --------------------------------------------------------------------------------
    def task_ids(self, split: str = "train") -> Sequence[str]:
        if split not in self.catalog.goals:
            raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
        return [goal.goal_id for goal in self.catalog.goals[split]]

    # -- backend hooks (the browser env overrides these) ----------------------------------------
    def _begin_episode(self) -> tuple[ShopState, PageView]:
        state = ShopState(self.catalog, self.search)
        self._client = TextClient(state, self.origin)
        return state, self._client.open()

    def _act(self, steps: Sequence[Step]) -> PageView:
        assert self._client is not None
        return self._client.perform(steps)

    def _extra_info(self) -> dict[str, Any]:
        return {}

    # -- gymnasium ----------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        split, task_id = self._choose_task_id(options)
        self.goal = self.catalog.goal(task_id)
        self.turn = 0
        self._done = False
        self.state, self._view = self._begin_episode()
        self._last_observation = self._observe("")
        self._chat = [{"role": "user", "content": self._last_observation}]
        info = {"task_id": task_id, "split": split, "url": self._view.url, **self._extra_info()}
        return self._last_observation, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.goal is None or self.state is None or self._view is None:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError("the episode is over; call reset() to start a new one")
        self.turn += 1
        info: dict[str, Any] = {"invalid_action": False, "tool_error": False}
        error = ""
        failure: BackendFailure | None = None
        try:
            too_long = self._action_too_long(action)
            if too_long is not None:
                raise ActionError(too_long)
            steps = plan(parse_action(action), self._view)
            self._view = self._act(steps)
        except ActionError as exc:
            error = str(exc)
            info["invalid_action"] = True
        except BackendFailure as exc:
            failure = exc
            error = f"Error: the browser failed ({exc}); the episode ends."
            info["tool_error"] = True
            info["failure"] = str(exc)
            info["failure_kind"] = exc.kind
        if error:
            info["error"] = error
        reward = 0.0
        terminated = failure is not None
        if failure is None and self.state.purchase is not None:
            terminated = True
            purchase = self.state.purchase
            product = self.catalog.by_asin[purchase.asin]
            score = score_purchase(self.goal, product, purchase.options)
            reward = score.reward
            info["purchase"] = {
                "asin": purchase.asin,
                "options": dict(purchase.options),
                "type_match": score.type_match,
                "attribute_hits": score.attribute_hits,
                "option_hits": score.option_hits,
                "price_ok": score.price_ok,
                "denominator": score.denominator,
            }
        truncated = not terminated and self.turn >= self.max_turns
        if terminated or truncated:
            self._done = True
            info["success"] = reward >= 1.0
        info["url"] = self._view.url
        info.update(self._extra_info())
        self._last_observation = self._observe(error)
        self._chat += [
            {"role": "assistant", "content": action},
            {"role": "user", "content": self._last_observation},
        ]
        return self._last_observation, reward, terminated, truncated, info

    def _observe(self, error: str) -> str:
        assert self.goal is not None and self._view is not None
        text = render_observation(self.goal.instruction, self._view.url, self._view.elements, error)
        return to_ascii(text)

    # -- LangChain tools ------------------------------------------------------------------------
    def perform(self, action: str) -> str:
        """Take one action and return the observation (the `ShopController` of the tools)."""
        if self._done:
            return "Error: the episode is over; the order has been placed or time ran out."
        return self.step(action)[0]

    # -- scripted agents ------------------------------------------------------------------------
    def make_scripted_agent(self, kind: str, seed: int | None = None) -> ScriptedAgent:
        """'expert' (always buys a right product), 'weak' (first result, may skip options),
        or 'random' (random valid-looking actions)."""
        from archer_agents.environments.minishop.agents import (
            ExpertShopper,
            RandomShopper,
            WeakShopper,
        )

        self._check_kind(kind)
        if kind == "expert":
            return ExpertShopper(self)
        if kind == "weak":
            return WeakShopper(self, seed)
        return RandomShopper(self, seed)
