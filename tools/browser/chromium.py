"""Finding the system's Chromium, killing its processes, and the thread that owns Playwright.

Chromium is the system's (``chromium`` on PATH, or ``ARCHER_CHROMIUM``), started
as a process we own, in its own process group, so that `kill_process_group`
can end it and its children whatever state they are in. Playwright's sync API
is bound to the thread that started it, so one `PlaywrightThread` owns the
driver and runs every browser operation as a job, whose `Future` the caller
waits on with a deadline. `archer_agents.tools.browser.host.ChromiumHost`
launches Chromium and drives it with these; MiniShop, MiniWoB and task files build on it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

T = TypeVar("T")

CHROMIUM_ENV_VAR = "ARCHER_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-features=BackForwardCache,PaintHolding",
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--hide-scrollbars",
    "--mute-audio",
)
"""Flags for a quiet, offline, deterministic headless Chromium.

Without the background-networking flags Chromium calls home at start-up;
without disabling the back/forward cache, going back can restore typed values.
The backgrounding flags keep every context of a shared Chromium running at full
speed (timers and rendering are otherwise throttled in pages not in front), and
without paint holding a new page paints as soon as it can.
"""
INSTALL_PLAYWRIGHT = "pip install 'archer-agents[browser]'"


def find_chromium(executable: str | None = None) -> str:
    """The Chromium binary: ``executable``, else ``$ARCHER_CHROMIUM``, else one on PATH."""
    wanted = executable or os.environ.get(CHROMIUM_ENV_VAR)
    if wanted:
        found = shutil.which(wanted)
        if found is None:
            source = "executable" if executable else f"${CHROMIUM_ENV_VAR}"
            raise FileNotFoundError(
                f"{source} is {wanted!r}, which is not an executable file; point it at a "
                "Chromium or Chrome binary"
            )
        return found
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(
        "the browser environments need Chromium and none was found on PATH "
        f"(looked for {', '.join(CHROMIUM_NAMES)}); install it (Debian: "
        f"`apt-get install chromium`) or set {CHROMIUM_ENV_VAR}=/path/to/chrome"
    )


def require_playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise ImportError(
            f"the browser environments need Playwright, which is not installed: "
            f"{INSTALL_PLAYWRIGHT} "
            f"(no browser download is needed; Chromium is found on PATH or via "
            f"${CHROMIUM_ENV_VAR})"
        ) from exc
    return sync_playwright


class PlaywrightThread:
    """A thread that owns one Playwright driver and runs jobs on it, one at a time."""

    def __init__(self, start_timeout_s: float) -> None:
        self._jobs: list[tuple[Callable[[], Any], Future[Any]] | None] = []
        self._wake = threading.Condition()
        self._ready: Future[Any] = Future()
        self.playwright: Any = None
        self.thread = threading.Thread(target=self._main, name="archer-playwright", daemon=True)
        self.thread.start()
        try:
            self.playwright = self._ready.result(timeout=start_timeout_s)
        except FutureTimeout as exc:
            raise RuntimeError(
                f"Playwright did not start within {start_timeout_s:.0f} s; check that "
                f"`python -m playwright --version` works ({INSTALL_PLAYWRIGHT})"
            ) from exc

    def _main(self) -> None:
        try:
            playwright = require_playwright()().start()
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(playwright)
        while True:
            with self._wake:
                while not self._jobs:
                    self._wake.wait()
                job = self._jobs.pop(0)
            if job is None:
                break
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)
        with contextlib.suppress(Exception):
            playwright.stop()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._wake:
            self._jobs.append((fn, future))
            self._wake.notify()
        return future

    def stop(self, timeout_s: float) -> None:
        with self._wake:
            self._jobs.append(None)
            self._wake.notify()
        self.thread.join(timeout_s)


def kill_process_group(process: subprocess.Popen[bytes], user_data_dir: str) -> None:
    """Kill Chromium and its children (they share the process group we created)."""
    if process.poll() is None:
        try:
            if hasattr(os, "killpg"):
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
        except ProcessLookupError:
            pass
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    shutil.rmtree(user_data_dir, ignore_errors=True)


def is_playwright_error(exc: BaseException) -> bool:
    """Whether ``exc`` is Playwright's own error (False when Playwright is not installed)."""
    try:
        from playwright.sync_api import Error
    except ImportError:
        return False
    return isinstance(exc, Error)
