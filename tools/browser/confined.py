"""One headless Chromium, confined to allowed origins, every operation with a deadline.

Chromium is the system's, started as a process we own (so we can kill it) and
driven over CDP; finding it, and the one thread that owns Playwright, are in
`archer_agents.tools.browser.chromium`. Every browser operation is a job on
that thread with a deadline: if Chromium crashes the job fails, if it hangs the
deadline passes and we kill the process. Either way the caller gets a
`BrowserFailure` within the deadline and the browser is restarted; nothing
waits forever.

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
import os
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar
from urllib.parse import urlsplit

from archer_agents.tools.browser.chromium import (
    CHROMIUM_FLAGS,
    PlaywrightThread,
    find_chromium,
    is_playwright_error,
    kill_process_group,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


class BrowserFailure(RuntimeError):
    """The browser itself failed (not the model's action); the episode cannot go on.

    ``kind`` is ``crashed``, ``hung`` or ``error``; the message says what happened.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def parse_origin(origin: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of an ``http://host:port`` origin; ValueError otherwise."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"an origin must look like http://127.0.0.1:PORT, got {origin!r}")
    return parts.scheme, parts.hostname, parts.port


class ConfinedChromium:
    """One headless Chromium whose pages may reach only ``origins``.

    Subclasses open episodes with `new_context` and run page work through `_call`.

    Args:
        origins: the allowed origins (``http://127.0.0.1:PORT``); every other is blocked.
        executable: Chromium binary; default `find_chromium`.
        action_timeout_s: deadline of one browser operation (a click and its page load).
        launch_timeout_s: deadline for Chromium to start and accept the connection.
        viewport: (width, height) in CSS pixels.
        locale: the browser's locale.
        timezone_id: the browser's time zone.
        name: how logs and the profile folder name this browser.
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
        self.blocked_requests = 0
        """Requests to other origins aborted during the current episode."""
        self.blocked_urls: list[str] = []
        self.restarts = 0
        self.tracing = False
        """Record a Playwright trace of each new context (`save_trace` writes it)."""
        self._worker: PlaywrightThread | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self._browser: Any = None
        self._context: Any = None
        self._page: Any = None

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """Process id of the running Chromium (its main process), if any."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start Chromium and connect to it (a no-op when it is already running)."""
        if self.running and self._browser is not None:
            return
        self._stop_process()
        if self._worker is None or not self._worker.thread.is_alive():
            self._worker = PlaywrightThread(self.launch_timeout_s)
        user_data_dir = tempfile.mkdtemp(prefix=f"{self.name}-chromium-")
        command = [
            self.executable,
            *CHROMIUM_FLAGS,
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={user_data_dir}",
            "about:blank",
        ]
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._process = process
        self._finalizer = weakref.finalize(self, kill_process_group, process, user_data_dir)
        endpoint = self._wait_for_endpoint(process, user_data_dir)
        worker = self._worker

        def connect() -> Any:
            return worker.playwright.chromium.connect_over_cdp(
                endpoint, timeout=self.launch_timeout_s * 1000
            )

        try:
            self._browser = self._worker.submit(connect).result(timeout=self.launch_timeout_s + 5)
        except BaseException as exc:
            self._stop_process()
            raise RuntimeError(
                f"could not connect to Chromium ({self.executable}): {exc}; check that it "
                "starts with `chromium --headless --no-sandbox about:blank`"
            ) from exc
        logger.debug("Chromium %s running as pid %d", self.executable, process.pid)

    def _wait_for_endpoint(self, process: subprocess.Popen[bytes], user_data_dir: str) -> str:
        port_file = os.path.join(user_data_dir, "DevToolsActivePort")
        deadline = time.monotonic() + self.launch_timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._stop_process()
                raise RuntimeError(
                    f"Chromium ({self.executable}) exited with code {process.returncode} at "
                    "start-up; run it by hand with --headless --no-sandbox to see why"
                )
            with contextlib.suppress(OSError):
                with open(port_file, encoding="utf-8") as handle:
                    lines = handle.read().splitlines()
                if len(lines) >= 2 and lines[0].isdigit():
                    return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            time.sleep(0.05)
        self._stop_process()
        raise RuntimeError(
            f"Chromium ({self.executable}) did not open its debugging port within "
            f"{self.launch_timeout_s:.0f} s"
        )

    def _stop_process(self) -> None:
        self._browser = self._context = self._page = None
        if self._finalizer is not None:
            self._finalizer()  # kills the process group and removes the profile
            self._finalizer = None
        self._process = None

    def restart(self) -> None:
        """Kill Chromium (whatever state it is in) and start a fresh one."""
        self._stop_process()
        self.restarts += 1
        self.start()

    def close(self) -> None:
        """Close the episode, Chromium and the Playwright thread."""
        if self._worker is not None and self._browser is not None:
            browser = self._browser
            with contextlib.suppress(Exception):
                self._worker.submit(browser.close).result(timeout=5)
        self._stop_process()
        if self._worker is not None:
            self._worker.stop(timeout_s=5)
            self._worker = None

    # -- running jobs with deadlines --------------------------------------------------------
    def _call(self, fn: Callable[[], T], timeout_s: float) -> T:
        """Run ``fn`` on the Playwright thread; on crash or hang, restart and raise."""
        if self._worker is None or self._browser is None:
            raise BrowserFailure("crashed", "the browser is not running")
        future = self._worker.submit(fn)
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout:
            failure = BrowserFailure("hung", f"the browser did not answer within {timeout_s:.1f} s")
        except BrowserFailure:
            raise
        except Exception as exc:
            if not is_playwright_error(exc):
                raise
            failure = self._classify(exc)
        logger.warning("%s browser %s; restarting it", self.name, failure)
        self._recover(future)
        raise failure

    def _classify(self, exc: BaseException) -> BrowserFailure:
        message = " ".join(str(exc).split())[:300]
        if not self.running or "closed" in message.lower() or "crash" in message.lower():
            return BrowserFailure("crashed", message)
        if type(exc).__name__ == "TimeoutError":
            return BrowserFailure("hung", message)
        return BrowserFailure("error", message)

    def _recover(self, future: Future[Any]) -> None:
        self._stop_process()  # a job stuck on the dead browser fails now
        try:
            future.result(timeout=5)
        except FutureTimeout:
            logger.warning("the Playwright thread is stuck; abandoning it")
            self._worker = None
        except Exception:
            pass
        try:
            self.restart()
        except Exception:
            logger.exception("could not restart Chromium; will retry at the next episode")

    def _deadline(self, operations: int) -> float:
        return self.action_timeout_s * operations + 5.0

    # -- confinement ----------------------------------------------------------------------------
    def _route(self, route: Any) -> None:
        url = route.request.url
        try:
            if self.allows(url):
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
        context = self._browser.new_context(
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
        self._context = context
        self._page = context.new_page()
        return self._page

    def ensure_started(self) -> None:
        """Start (or restart) Chromium if it is not running."""
        if self._browser is None or not self.running:
            self.restart()

    def close_episode(self) -> None:
        if self._context is None or self._worker is None:
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
        if not self.tracing:
            raise RuntimeError(
                "this browser records no trace: set tracing = True before the episode"
            )
        self._call(lambda: self._context.tracing.stop(path=path), self._deadline(2))

    def run_in_page(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(page)`` on the Playwright thread (for tests and debugging)."""
        return self._call(lambda: fn(self._page), self._deadline(1))
