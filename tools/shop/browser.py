"""Real headless Chromium, driven through Playwright, confined to the shop.

The browser machinery (our own Chromium process, the Playwright thread,
deadlines, restart on crash or hang, origin confinement) is
`archer_agents.tools.browser.confined.ConfinedChromium`; this module adds the
shop's episodes: a session cookie, the shop's own page snapshot and the planned
steps of a MiniShop action. A crash or hang reaches the caller as
`BackendFailure` within the deadline.

Confinement: every request of the episode's context is routed; anything not to
the shop's own origin is aborted and counted, downloads are refused, service
workers are blocked, and Chromium itself refuses ``file:`` URLs from web pages.
Determinism: fixed viewport, locale and timezone, a fresh context per episode,
and no back/forward cache (going back reloads the page, as the text backend
assumes).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from archer_agents.tools.browser.chromium import is_playwright_error
from archer_agents.tools.browser.confined import ConfinedChromium
from archer_agents.tools.shop.actions import Step
from archer_agents.tools.shop.pages import SNAPSHOT_JS, PageView, elements_from_snapshot

logger = logging.getLogger(__name__)


class ChromiumBrowser(ConfinedChromium):
    """One headless Chromium serving episodes of one shop origin.

    Args:
        origin: the shop's origin (``http://127.0.0.1:PORT``); every other origin is blocked.
        executable: Chromium binary; default `find_chromium`.
        action_timeout_s: deadline of one browser operation (a click and its page load).
        launch_timeout_s: deadline for Chromium to start and accept the connection.
        viewport: (width, height) in CSS pixels.
        locale: the browser's locale.
        timezone_id: the browser's time zone.
    """

    def __init__(
        self,
        origin: str,
        *,
        executable: str | None = None,
        action_timeout_s: float = 10.0,
        launch_timeout_s: float = 30.0,
        viewport: tuple[int, int] = (1280, 720),
        locale: str = "en-US",
        timezone_id: str = "UTC",
    ) -> None:
        super().__init__(
            origin,
            executable=executable,
            action_timeout_s=action_timeout_s,
            launch_timeout_s=launch_timeout_s,
            viewport=viewport,
            locale=locale,
            timezone_id=timezone_id,
            name="minishop",
        )

    def open_episode(self, cookies: Sequence[dict[str, Any]], path: str = "/") -> PageView:
        """A fresh context (cookies, routing) on ``path``; the previous episode's is closed."""
        self.ensure_started()
        self.blocked_requests = 0
        self.blocked_urls = []

        def job() -> PageView:
            page = self.new_context(cookies)
            page.goto(self.origin + path, wait_until="domcontentloaded")
            return self._snapshot()

        return self._call(job, self._deadline(2))

    def act(self, steps: Sequence[Step]) -> PageView:
        """Carry out planned steps on the current page and return the page after them."""

        def job() -> PageView:
            for step in steps:
                self._perform(step)
            return self._snapshot()

        return self._call(job, self._deadline(len(steps) + 1))

    def view(self) -> PageView:
        return self._call(self._snapshot, self._deadline(1))

    def _perform(self, step: Step) -> None:
        page = self._page
        selector = f"id={step.element_id}"
        if step.kind == "fill":
            page.fill(selector, step.value)
        elif step.kind == "select":
            page.select_option(selector, value=step.value)
        elif step.kind == "back":
            page.go_back(wait_until="domcontentloaded")
        else:  # every link and button of the shop navigates
            with page.expect_navigation(wait_until="domcontentloaded"):
                page.click(selector)

    def _snapshot(self) -> PageView:
        try:
            data = self._page.evaluate(SNAPSHOT_JS)
        except Exception as exc:
            # A navigation replaced the document while we read it: read the new one.
            if not is_playwright_error(exc) or "context was destroyed" not in str(exc):
                raise
            self._page.wait_for_load_state("domcontentloaded")
            data = self._page.evaluate(SNAPSHOT_JS)
        return PageView(
            url=data["url"],
            elements=elements_from_snapshot(data["elements"]),
            can_go_back=bool(data["canGoBack"]),
        )
