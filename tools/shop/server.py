"""The shop over HTTP on 127.0.0.1, for the browser backend.

A `LoopbackServer` (an ephemeral port on 127.0.0.1, a daemon thread). Each
episode is a session (a cookie set in the episode's fresh browser context)
with its own `ShopState`, so the server renders exactly the pages the text
backend shows. Pages are sent with ``Cache-Control: no-store`` so going back
reloads them, as the text backend assumes.
"""

from __future__ import annotations

import logging
import secrets
import threading
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler

from archer_agents.tools.browser.loopback import LoopbackServer
from archer_agents.tools.shop.catalog import Catalog
from archer_agents.tools.shop.pages import Page, message_page, render_html
from archer_agents.tools.shop.search import ProductSearch
from archer_agents.tools.shop.state import ShopState

logger = logging.getLogger(__name__)

SESSION_COOKIE = "minishop_session"
MAX_BODY_BYTES = 64 * 1024


class ShopServer(LoopbackServer):
    """Serves MiniShop sessions on ``http://127.0.0.1:<ephemeral port>``.

    Use as a context manager, or call `start` and `close`.
    """

    thread_name = "minishop-http"

    def __init__(self, catalog: Catalog, search: ProductSearch | None = None) -> None:
        super().__init__()
        self.catalog = catalog
        self.search = search or ProductSearch(catalog.products)
        self._sessions: dict[str, ShopState] = {}
        self._lock = threading.Lock()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        return _make_handler(self)

    # -- sessions ------------------------------------------------------------------------
    def new_session(self) -> tuple[str, ShopState]:
        """A fresh shopper: (cookie value, its state)."""
        session_id = secrets.token_hex(16)
        state = ShopState(self.catalog, self.search)
        with self._lock:
            self._sessions[session_id] = state
        return session_id, state

    def end_session(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def session(self, session_id: str) -> ShopState | None:
        with self._lock:
            return self._sessions.get(session_id)


def _make_handler(server: ShopServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "MiniShop/1"

        def do_GET(self) -> None:
            self._serve("GET", "")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._send(message_page("Too large", "The form is too large.", 413))
                return
            body = self.rfile.read(length).decode("utf-8", "replace") if length > 0 else ""
            self._serve("POST", body)

        def _serve(self, method: str, body: str) -> None:
            state = server.session(self._session_id())
            if state is None:
                page = message_page("No session", "Open the shop from its environment.", 403)
            else:
                page = state.request(method, self.path, body)
            self._send(page)

        def _session_id(self) -> str:
            cookie = SimpleCookie()
            try:
                cookie.load(self.headers.get("Cookie", ""))
            except CookieError:
                return ""
            morsel = cookie.get(SESSION_COOKIE)
            return morsel.value if morsel else ""

        def _send(self, page: Page) -> None:
            data = render_html(page).encode("utf-8")
            self.send_response(page.status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            logger.debug("%s " + format, self.address_string(), *args)

    return Handler
