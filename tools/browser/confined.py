"""A browser context confined to allowed origins, every operation with a deadline.

Chromium is the system's, started as a process we own (so we can kill it) and
driven over CDP by one Playwright thread: that is a `ChromiumHost`
(`archer_agents.tools.browser.host`), which one or several `ConfinedChromium`
instances use, each with its own context. Every browser operation is a job on
that thread with a deadline: if Chromium crashes the job fails, if it hangs the
deadline passes and we kill the process. Either way the caller gets a
`BrowserFailure` within the deadline and the browser is restarted; nothing
waits forever. Contexts that shared the failed Chromium fail their episode at
their next operation, with the reason.

Confinement: every request of an episode's context is routed; anything not to
an allowed origin is aborted and counted (``blocked_requests``), web sockets to
other origins are closed and counted, downloads are refused, service workers
are blocked, and Chromium itself refuses ``file:`` URLs from web pages.
Determinism: fixed viewport, locale and timezone, a fresh context per episode,
and no back/forward cache.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from archer_agents.tools.browser.chromium import find_chromium
from archer_agents.tools.browser.host import BrowserFailure, ChromiumHost, acquire, release

logger = logging.getLogger(__name__)

T = TypeVar("T")


_CLEAR_STORAGE_JS = """async () => {
  try { localStorage.clear(); } catch (e) {}
  try { sessionStorage.clear(); } catch (e) {}
  window.name = '';
  try {
    const names = (await indexedDB.databases()).map((d) => d.name);
    await Promise.all(names.map((n) => new Promise((done) => {
      const request = indexedDB.deleteDatabase(n);
      request.onsuccess = request.onerror = request.onblocked = () => done();
    })));
  } catch (e) {}
  try { await Promise.all((await caches.keys()).map((k) => caches.delete(k))); } catch (e) {}
}"""
"""Clears what the current page's origin can keep between episodes (run in that page)."""


def origin_of(url: str) -> str:
    """``scheme://host:port`` of ``url``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def parse_origin(origin: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of an ``http://host:port`` origin; ValueError otherwise."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"an origin must look like http://127.0.0.1:PORT, got {origin!r}")
    return parts.scheme, parts.hostname, parts.port


class ConfinedChromium:
    """A confined browser context (one episode's page at a time) in a headless Chromium.

    Subclasses open episodes with `new_context` and run page work through `_call`.
    Several instances may share one Chromium (``contexts_per_browser`` > 1): each
    has its own context, allowed origins and blocked-request count; a crash or hang
    of the shared Chromium fails the episode of every instance in it (their next
    call raises `BrowserFailure`), and the next episode runs in a fresh Chromium.

    Args:
        origins: the allowed origins (``http://127.0.0.1:PORT``); every other is blocked.
        executable: Chromium binary; default `find_chromium`.
        action_timeout_s: deadline of one browser operation (a click and its page load).
        launch_timeout_s: deadline for Chromium to start and accept the connection.
        viewport: (width, height) in CSS pixels.
        locale: the browser's locale.
        timezone_id: the browser's time zone.
        name: how logs and the profile folder name this browser.
        contexts_per_browser: how many instances may share one Chromium (1: a private one).
    """

    def __init__(
        self,
        origins: str | Sequence[str],
        *,
        executable: str | None = None,
        action_timeout_s: float = 10.0,
        launch_timeout_s: float = 30.0,
        viewport: tuple[int, int] = (1280, 720),
        locale: str = "en-US",
        timezone_id: str = "UTC",
        name: str = "browser",
        contexts_per_browser: int = 1,
    ) -> None:
        if action_timeout_s <= 0 or launch_timeout_s <= 0:
            raise ValueError("action_timeout_s and launch_timeout_s must be positive")
        listed = [origins] if isinstance(origins, str) else list(origins)
        if not listed:
            raise ValueError("give at least one allowed origin")
        self._allowed = {parse_origin(origin) for origin in listed}
        self.origins = [origin.rstrip("/") for origin in listed]
        self.origin = self.origins[0]
        self.executable = find_chromium(executable)
        self.action_timeout_s = action_timeout_s
        self.launch_timeout_s = launch_timeout_s
        self.viewport = viewport
        self.locale = locale
        self.timezone_id = timezone_id
        self.name = name
        self.contexts_per_browser = contexts_per_browser
        self.blocked_requests = 0
        """Requests to other origins aborted during the current episode."""
        self.blocked_urls: list[str] = []
        self.tracing = False
        """Record a Playwright trace of each new context (`save_trace` writes it)."""
        self.host: ChromiumHost | None = None
        self._context: Any = None
        self._page: Any = None
        self._generation = 0
        self._document_origins: set[str] = set()
        """Origins this episode loaded documents from (a page of each may have stored data)."""
        self._chunk_open = False
        self._cdp: Any = None
        self._cdp_page: Any = None

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """Process id of the running Chromium (its main process), if any."""
        return self.host.pid if self.host is not None else None

    @property
    def running(self) -> bool:
        return self.host is not None and self.host.running

    @property
    def restarts(self) -> int:
        """How often the Chromium this context runs in was restarted."""
        return self.host.restarts if self.host is not None else 0

    def start(self) -> None:
        """Start (or join) Chromium and connect to it (a no-op when it is already running)."""
        if self.host is None:
            self.host = acquire(
                self.executable,
                contexts_per_browser=self.contexts_per_browser,
                launch_timeout_s=self.launch_timeout_s,
                name=self.name,
            )
        self.host.start()

    def restart(self) -> None:
        """Kill Chromium (whatever state it is in) and start a fresh one."""
        self.start()
        assert self.host is not None
        self._context = self._page = None
        self.host.restart()

    def ensure_started(self) -> None:
        """Start (or restart) Chromium if it is not running."""
        if self.host is None:
            self.start()
        elif not self.host.running:
            self.restart()

    def close(self) -> None:
        """Close the episode and leave Chromium (the last context out closes it)."""
        self.close_episode()
        if self.host is not None:
            host, self.host = self.host, None
            release(host)

    # -- running jobs with deadlines --------------------------------------------------------
    def _call(self, fn: Callable[[], T], timeout_s: float) -> T:
        """Run ``fn`` on the Playwright thread; on crash or hang, restart and raise."""
        host = self.host
        if host is None:
            raise BrowserFailure("crashed", "the browser is not running")
        if self._context is not None and self._generation != host.generation:
            self._context = self._page = None
            raise BrowserFailure(
                "crashed", "Chromium failed in another episode and was restarted; this page is gone"
            )
        try:
            return host.call(fn, timeout_s)
        except BrowserFailure:
            self._context = self._page = None
            raise

    def _deadline(self, operations: int) -> float:
        return self.action_timeout_s * operations + 5.0

    # -- confinement ----------------------------------------------------------------------------
    def _route(self, route: Any) -> None:
        url = route.request.url
        try:
            if self.allows(url):
                if route.request.resource_type == "document":
                    self._document_origins.add(origin_of(url))
                route.continue_()
            else:
                self.block(url)
                route.abort("blockedbyclient")
        except Exception:  # the page went away while the request was in flight
            logger.debug("could not settle route for %s", url[:200], exc_info=True)

    def _route_web_socket(self, ws: Any) -> None:
        if not self.allows(ws.url.replace("ws", "http", 1)):
            self.block(ws.url)
        with contextlib.suppress(Exception):
            ws.close()

    def block(self, url: str) -> None:
        """Count ``url`` as a blocked request of this episode."""
        self.blocked_requests += 1
        if len(self.blocked_urls) < 100:
            self.blocked_urls.append(url[:200])
        logger.debug("blocked request to %s", url[:200])

    def allows(self, url: str) -> bool:
        """Whether ``url`` is on an allowed origin (the only ones the browser may reach)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        if parts.username is not None or parts.password is not None:
            return False
        return (parts.scheme, parts.hostname, port) in self._allowed

    # -- episodes -----------------------------------------------------------------------------
    def new_context(self, cookies: Sequence[dict[str, Any]] = ()) -> Any:
        """(On the Playwright thread) a fresh confined context and page; the old one is closed.

        Resets the blocked-request count. Returns the new page.
        """
        self.blocked_requests = 0
        self.blocked_urls = []
        width, height = self.viewport
        if self._context is not None:
            with contextlib.suppress(Exception):
                self._context.close()
            self._context = self._page = None
        assert self.host is not None
        self._generation = self.host.generation
        context = self.host.browser.new_context(
            viewport={"width": width, "height": height},
            screen={"width": width, "height": height},
            device_scale_factor=1,
            locale=self.locale,
            timezone_id=self.timezone_id,
            accept_downloads=False,
            service_workers="block",
            color_scheme="light",
            reduced_motion="reduce",
        )
        context.set_default_timeout(self.action_timeout_s * 1000)
        context.set_default_navigation_timeout(self.action_timeout_s * 1000)
        context.route("**/*", self._route)
        context.route_web_socket("**/*", self._route_web_socket)
        if cookies:
            context.add_cookies([dict(c) for c in cookies])
        if self.tracing:
            context.tracing.start(screenshots=True, snapshots=True, sources=False)
            context.tracing.start_chunk()
            self._chunk_open = True
        self._context = context
        self._document_origins = set()
        self._page = context.new_page()
        return self._page

    def reuse_page(self) -> Any | None:
        """(On the Playwright thread) this episode's page, made ready for the next episode
        without a new context, or None when only a fresh context will do.

        A new context costs a new renderer process (hundreds of milliseconds); when the
        last episode loaded documents from one origin only and its page is still there,
        clearing what that origin's pages can keep (cookies, local and session storage,
        IndexedDB, Cache Storage, ``window.name``) leaves nothing of the last episode
        for the next one to see. The caller navigates, then calls `forget_history`.
        Resets the blocked-request count.
        """
        page, context = self._page, self._context
        if page is None or context is None or self.host is None:
            return None
        if self._generation != self.host.generation or len(self._document_origins) != 1:
            return None
        (origin,) = self._document_origins
        if origin_of(page.url) != origin or len(context.pages) != 1:
            return None
        if not self.clear_page_state():
            return None
        self._document_origins = set()
        return page

    def clear_page_state(self) -> bool:
        """(On the Playwright thread) clear what the page's origin keeps between episodes
        (cookies, storage, IndexedDB, Cache Storage, ``window.name``), reset the
        blocked-request count and start the next episode's trace chunk; False when the
        page could not be cleared (the caller opens a fresh context)."""
        page, context = self._page, self._context
        try:
            page.evaluate(_CLEAR_STORAGE_JS)
            context.clear_cookies()
        except Exception:
            logger.debug("could not clear the last episode's page; opening a fresh context")
            return False
        self.blocked_requests = 0
        self.blocked_urls = []
        if self.tracing:
            if self._chunk_open:
                context.tracing.stop_chunk()  # the last episode's, never saved
            context.tracing.start_chunk()
            self._chunk_open = True
        return True

    def forget_history(self) -> None:
        """(On the Playwright thread) drop the page's history before its current entry, so
        that going back cannot reach an earlier episode."""
        self.cdp().send("Page.resetNavigationHistory")

    def cdp(self) -> Any:
        """(On the Playwright thread) a CDP session to this episode's page, kept with it."""
        if self._cdp is None or self._cdp_page is not self._page:
            self._cdp = self._page.context.new_cdp_session(self._page)
            self._cdp_page = self._page
        return self._cdp

    def close_episode(self) -> None:
        if self._context is None or not self.running:
            self._context = self._page = None
            return
        context = self._context

        def job() -> None:
            context.close()
            self._context = self._page = None

        with contextlib.suppress(Exception):
            self._call(job, self._deadline(1))

    def screenshot(self) -> bytes:
        """A PNG of the viewport, as the agent's page looks now."""
        return self._call(
            lambda: self._page.screenshot(type="png", animations="disabled", caret="hide"),
            self._deadline(1),
        )

    def save_trace(self, path: str) -> None:
        """Stop the episode's Playwright trace (``tracing``) and write it to ``path`` (a zip
        that ``playwright show-trace`` opens)."""
        if not self.tracing or not self._chunk_open:
            raise RuntimeError(
                "this browser records no trace of this episode: set tracing = True before it"
            )

        def job() -> None:
            self._context.tracing.stop_chunk(path=path)
            self._chunk_open = False

        self._call(job, self._deadline(2))

    def run_in_page(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(page)`` on the Playwright thread (for tests and debugging)."""
        return self._call(lambda: fn(self._page), self._deadline(1))
