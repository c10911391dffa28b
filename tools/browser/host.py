"""One Chromium process and the Playwright thread that drives it, shared by several contexts.

A `ChromiumHost` starts the system's Chromium as a process we own (its own
process group, so it can be killed whatever state it is in), connects to it
over CDP from one `PlaywrightThread`, and runs every browser operation as a
job with a deadline (`call`). When a job fails because Chromium crashed, or
passes its deadline because Chromium hangs, the host kills the process group,
starts a fresh Chromium and raises `BrowserFailure`. Each start bumps
`generation`: a browser context made in an earlier generation is gone, and its
owner (`ConfinedChromium`) reports its episode as failed rather than acting on
a page that no longer exists.

Several environments of one process share hosts through `acquire` and
`release`: each host serves at most ``contexts_per_browser`` contexts, so
``num_envs`` environments run in ``ceil(num_envs / contexts_per_browser)``
Chromium processes, and a crash fails only the episodes of the host it hit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from archer_agents.tools.browser.chromium import (
    CHROMIUM_FLAGS,
    PlaywrightThread,
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


class ChromiumHost:
    """One headless Chromium and its Playwright thread; restarted on crash or hang.

    Args:
        executable: the Chromium binary.
        launch_timeout_s: deadline for Chromium to start and accept the connection.
        name: how logs and the profile folder name this browser.
    """

    def __init__(
        self,
        executable: str,
        *,
        launch_timeout_s: float = 30.0,
        name: str = "browser",
        capacity: int = 1,
    ) -> None:
        self.executable = executable
        self.capacity = capacity
        """How many contexts `acquire` lets share this host."""
        self.launch_timeout_s = launch_timeout_s
        self.name = name
        self.restarts = 0
        """How often Chromium was killed and started again."""
        self.generation = 0
        """Bumped at every start; contexts of an older generation are gone."""
        self.users = 0
        """Contexts (environments) this host serves (`acquire`)."""
        self.browser: Any = None
        self._worker: PlaywrightThread | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self._lock = threading.RLock()

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """Process id of the running Chromium (its main process), if any."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return (
            self._process is not None and self._process.poll() is None and self.browser is not None
        )

    def start(self) -> None:
        """Start Chromium and connect to it (a no-op when it is already running)."""
        with self._lock:
            if self.running:
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
                self.browser = worker.submit(connect).result(timeout=self.launch_timeout_s + 5)
            except BaseException as exc:
                self._stop_process()
                raise RuntimeError(
                    f"could not connect to Chromium ({self.executable}): {exc}; check that it "
                    "starts with `chromium --headless --no-sandbox about:blank`"
                ) from exc
            self.generation += 1
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
        self.browser = None
        if self._finalizer is not None:
            self._finalizer()  # kills the process group and removes the profile
            self._finalizer = None
        self._process = None

    def restart(self) -> None:
        """Kill Chromium (whatever state it is in) and start a fresh one."""
        with self._lock:
            self._stop_process()
            self.restarts += 1
            self.start()

    def close(self) -> None:
        """Close Chromium and the Playwright thread."""
        with self._lock:
            if self._worker is not None and self.browser is not None:
                browser = self.browser
                with contextlib.suppress(Exception):
                    self._worker.submit(browser.close).result(timeout=5)
            self._stop_process()
            if self._worker is not None:
                self._worker.stop(timeout_s=5)
                self._worker = None

    # -- running jobs with deadlines --------------------------------------------------------
    def call(self, fn: Callable[[], T], timeout_s: float) -> T:
        """Run ``fn`` on the Playwright thread; on crash or hang, restart and raise.

        A job that fails because another job already restarted Chromium raises
        ``crashed`` without restarting it again.
        """
        worker = self._worker
        if worker is None or self.browser is None:
            raise BrowserFailure("crashed", "the browser is not running")
        generation = self.generation
        future = worker.submit(fn)
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
        with self._lock:
            if self.generation != generation:  # restarted meanwhile, for another context
                raise BrowserFailure("crashed", f"Chromium was restarted meanwhile ({failure})")
            logger.warning("%s browser %s; restarting it", self.name, failure)
            self._recover(future)
        raise failure

    def _classify(self, exc: BaseException) -> BrowserFailure:
        message = " ".join(str(exc).split())[:300]
        alive = self._process is not None and self._process.poll() is None
        if not alive or "closed" in message.lower() or "crash" in message.lower():
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


# -- sharing one Chromium between environments -----------------------------------------------
_POOL: list[ChromiumHost] = []
_POOL_LOCK = threading.Lock()


def acquire(
    executable: str, *, contexts_per_browser: int, launch_timeout_s: float, name: str
) -> ChromiumHost:
    """A host for one more context: a shared one with room, else a new one.

    ``contexts_per_browser`` 1 gives a private host (never shared).
    """
    if contexts_per_browser < 1:
        raise ValueError(f"contexts_per_browser must be at least 1, got {contexts_per_browser}")
    with _POOL_LOCK:
        if contexts_per_browser > 1:
            for host in _POOL:
                if (
                    host.executable == executable
                    and host.capacity == contexts_per_browser
                    and host.users < host.capacity
                    and host.launch_timeout_s == launch_timeout_s
                ):
                    host.users += 1
                    return host
        host = ChromiumHost(
            executable,
            launch_timeout_s=launch_timeout_s,
            name=name,
            capacity=contexts_per_browser,
        )
        host.users = 1
        if contexts_per_browser > 1:
            _POOL.append(host)
        return host


def release(host: ChromiumHost) -> None:
    """One context fewer; the last one out closes Chromium."""
    with _POOL_LOCK:
        host.users = max(0, host.users - 1)
        if host.users > 0:
            return
        if host in _POOL:
            _POOL.remove(host)
    host.close()
