"""A folder over HTTP on 127.0.0.1, for pages a browser environment loads (MiniWoB++).

A stdlib `ThreadingHTTPServer` on an ephemeral port in a daemon thread; it
serves files under ``root`` only (the stdlib handler refuses paths outside it),
with ``Cache-Control: no-store`` so every episode loads the page afresh, and
logs requests at debug level instead of printing them.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)


class _QuietHandler(SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("static %s", format % args)


class StaticServer:
    """Serves ``root`` on ``http://127.0.0.1:<ephemeral port>``; `start` returns the origin."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"cannot serve {self.root!r}: not a folder")
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Start serving (idempotent); return the origin."""
        if self._httpd is None:
            handler = functools.partial(_QuietHandler, directory=self.root)
            httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            httpd.daemon_threads = True
            self._httpd = httpd
            self._thread = threading.Thread(
                target=httpd.serve_forever, name="archer-static-http", daemon=True
            )
            self._thread.start()
            logger.debug("serving %s on %s", self.root, self.origin)
        return self.origin

    @property
    def origin(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the static server is not running; call start() first")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> StaticServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
