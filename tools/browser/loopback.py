"""An HTTP server on 127.0.0.1 in a daemon thread: the lifecycle every local site shares.

Both local sites a browser environment loads (MiniShop's pages, MiniWoB++'s
static files) are a stdlib `ThreadingHTTPServer` on an ephemeral loopback port,
started lazily and stopped with the environment; subclasses say only which
request handler serves them.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)


class LoopbackServer:
    """Serves ``handler()`` on ``http://127.0.0.1:<ephemeral port>``.

    Use as a context manager, or call `start` (idempotent; returns the origin)
    and `close`.
    """

    thread_name = "archer-http"

    def __init__(self) -> None:
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def handler(self) -> type[BaseHTTPRequestHandler] | Any:
        """The request handler class (or factory) to serve with."""
        raise NotImplementedError

    def start(self) -> str:
        """Start serving (idempotent); return the origin, e.g. ``http://127.0.0.1:41234``."""
        if self._httpd is None:
            httpd = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
            httpd.daemon_threads = True
            self._httpd = httpd
            self._thread = threading.Thread(
                target=httpd.serve_forever, name=self.thread_name, daemon=True
            )
            self._thread.start()
            logger.debug("%s serving on %s", type(self).__name__, self.origin)
        return self.origin

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError(f"the {type(self).__name__} is not running; call start() first")
        return int(self._httpd.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
