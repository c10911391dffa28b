"""A folder over HTTP on 127.0.0.1, for pages a browser environment loads (MiniWoB++).

A `LoopbackServer` (an ephemeral port on 127.0.0.1, a daemon thread); it
serves files under ``root`` only (the stdlib handler refuses paths outside it),
with ``Cache-Control: no-store`` so every episode loads the page afresh, and
logs requests at debug level instead of printing them.
"""

from __future__ import annotations

import functools
import logging
import os
from http.server import SimpleHTTPRequestHandler
from typing import Any

from archer_agents.tools.browser.loopback import LoopbackServer

logger = logging.getLogger(__name__)


class _QuietHandler(SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("static %s", format % args)


class StaticServer(LoopbackServer):
    """Serves ``root`` on ``http://127.0.0.1:<ephemeral port>``; `start` returns the origin."""

    thread_name = "archer-static-http"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        super().__init__()
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"cannot serve {self.root!r}: not a folder")

    def handler(self) -> Any:
        return functools.partial(_QuietHandler, directory=self.root)
