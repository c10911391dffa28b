"""MiniShop (browser backend): the same shop, served over HTTP and driven in real Chromium.

Same tasks, observations, actions and rewards as `MiniShopEnv` (the parity
tests check it), but every page is served by a local HTTP server on 127.0.0.1
(an ephemeral port) and rendered by headless Chromium through Playwright; the
observation is read back from the live DOM. Use it to check that a policy
trained on the fast text backend acts the same in a real browser.

Chromium is the system's (``chromium`` on PATH, or ``ARCHER_CHROMIUM``);
Playwright is the optional ``browser`` extra. Both start at the first reset.
Each episode gets a fresh browser context. Requests to any origin but the
shop's are blocked and counted (``blocked_requests``, also in ``info``). If the
browser crashes or hangs, it is restarted and the episode ends as failed
(reward 0, ``info["failure"]`` says why); the caller never waits longer than
the action deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from archer_agents.environments.minishop.env import DEFAULT_MAX_TURNS, MiniShopEnv
from archer_agents.tools.shop.actions import Step
from archer_agents.tools.shop.browser import ChromiumBrowser
from archer_agents.tools.shop.catalog import Catalog
from archer_agents.tools.shop.chromium import find_chromium, require_playwright
from archer_agents.tools.shop.pages import PageView
from archer_agents.tools.shop.server import SESSION_COOKIE, ShopServer
from archer_agents.tools.shop.state import BackendFailure, ShopState

logger = logging.getLogger(__name__)

T = TypeVar("T")


class MiniShopBrowserEnv(MiniShopEnv):
    """MiniShop in headless Chromium.

    Args:
        catalog: a catalog name ('default' or 'small') or a `Catalog`.
        max_turns: the horizon; reaching it without a purchase truncates the episode.
        chromium: path or name of the Chromium binary (default: ``$ARCHER_CHROMIUM``,
            then ``chromium`` on PATH).
        action_timeout_s: deadline of one browser operation; past it the browser is
            considered hung, restarted, and the episode fails.
        viewport: browser viewport (width, height).
        locale: browser locale.
        timezone_id: browser time zone.
        max_action_chars: longer actions are refused with an error observation.
        render_mode: None or 'ansi'.
    """

    def __init__(
        self,
        *,
        catalog: str | Catalog = "default",
        max_turns: int = DEFAULT_MAX_TURNS,
        chromium: str | None = None,
        action_timeout_s: float = 10.0,
        viewport: tuple[int, int] = (1280, 720),
        locale: str = "en-US",
        timezone_id: str = "UTC",
        max_action_chars: int = 2_000,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(
            catalog=catalog,
            max_turns=max_turns,
            max_action_chars=max_action_chars,
            render_mode=render_mode,
        )
        require_playwright()  # fail now, with the pip command, if Playwright is missing
        self.chromium = find_chromium(chromium)
        self.action_timeout_s = action_timeout_s
        self.viewport = viewport
        self.locale = locale
        self.timezone_id = timezone_id
        self.server = ShopServer(self.catalog, self.search)
        self.browser: ChromiumBrowser | None = None
        self._session_id = ""

    # -- browser state -----------------------------------------------------------------------
    @property
    def blocked_requests(self) -> int:
        """Requests to other origins blocked during the current episode."""
        return self.browser.blocked_requests if self.browser is not None else 0

    @property
    def browser_pid(self) -> int | None:
        """Process id of Chromium's main process (None before the first reset)."""
        return self.browser.pid if self.browser is not None else None

    @property
    def browser_restarts(self) -> int:
        return self.browser.restarts if self.browser is not None else 0

    def screenshot(self) -> bytes:
        """A PNG of what the agent's page looks like now."""
        return self._require_browser().screenshot()

    def run_in_page(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(page)`` with the episode's Playwright page (tests, debugging)."""
        return self._require_browser().run_in_page(fn)

    def _require_browser(self) -> ChromiumBrowser:
        if self.browser is None:
            raise RuntimeError("the browser starts at the first reset(); call reset() first")
        return self.browser

    # -- backend hooks ------------------------------------------------------------------------
    def _begin_episode(self) -> tuple[ShopState, PageView]:
        self.origin = self.server.start()
        if self.browser is None:
            self.browser = ChromiumBrowser(
                self.origin,
                executable=self.chromium,
                action_timeout_s=self.action_timeout_s,
                viewport=self.viewport,
                locale=self.locale,
                timezone_id=self.timezone_id,
            )
            self.browser.start()
        if self._session_id:
            self.server.end_session(self._session_id)
        self._session_id, state = self.server.new_session()
        cookies = [{"name": SESSION_COOKIE, "value": self._session_id, "url": self.origin}]
        try:
            view = self.browser.open_episode(cookies)
        except BackendFailure as first:
            logger.warning("opening an episode failed (%s); trying once more", first)
            try:
                view = self.browser.open_episode(cookies)
            except BackendFailure as second:
                raise RuntimeError(
                    f"Chromium failed twice while opening an episode ({first}; {second}); "
                    f"check that {self.chromium} runs headless on this machine"
                ) from second
        return state, view

    def _act(self, steps: Sequence[Step]) -> PageView:
        return self._require_browser().act(steps)

    def _extra_info(self) -> dict[str, Any]:
        return {
            "blocked_requests": self.blocked_requests,
            "browser_restarts": self.browser_restarts,
        }

    def close(self) -> None:
        if self.browser is not None:
            self.browser.close()
            self.browser = None
        self.server.close()
        super().close()
