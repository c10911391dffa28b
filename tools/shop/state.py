"""The one MiniShop state machine, driven by both backends.

`ShopState` is the shop as a server sees it: a request (method, path, form
body) goes in, a `Page` comes out, and ``POST /buy`` records the purchase.
The HTTP server calls it for every request Chromium makes; the text backend
calls it directly.

`TextClient` is the text backend's stand-in for the browser: it keeps what a
browser keeps (the current page, values typed into its controls, the history)
and turns clicks into the requests a browser would send, encoded the way
Chromium encodes them. Its rules follow what Chromium does, checked by the
parity tests: a link to the current URL replaces the history entry while a
form submission always adds one; going back reloads the page (the shop's
pages are not cached), so typed values are gone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qs, urlsplit

from archer_agents.tools.browser.confined import BrowserFailure
from archer_agents.tools.shop.actions import Step
from archer_agents.tools.shop.catalog import Catalog
from archer_agents.tools.shop.pages import (
    Page,
    PageView,
    done_page,
    form_encode,
    item_page,
    message_page,
    results_page,
    search_page,
)
from archer_agents.tools.shop.search import ProductSearch

logger = logging.getLogger(__name__)

START_PATH = "/"


BackendFailure = BrowserFailure
"""The machinery behind the shop (the browser) failed; the episode cannot go on.

``kind`` is ``crashed``, ``hung`` or ``error``; the message says what happened.
"""


@dataclass(frozen=True)
class Purchase:
    """What Buy Now submitted."""

    asin: str
    options: dict[str, str]


class ShopState:
    """One shopper's session on the server side: routing, pages and the purchase."""

    def __init__(self, catalog: Catalog, search: ProductSearch | None = None) -> None:
        self.catalog = catalog
        self.search = search or ProductSearch(catalog.products)
        self.purchase: Purchase | None = None
        self.requests: list[str] = []
        """Every request served, as ``"GET /search?q=..."``."""
        self._lock = threading.Lock()

    def request(self, method: str, target: str, body: str = "") -> Page:
        """Serve ``method target`` (path plus query) with a url-encoded form ``body``."""
        with self._lock:
            self.requests.append(f"{method} {target}")
            return self._route(method.upper(), target, body)

    def _route(self, method: str, target: str, body: str) -> Page:
        parts = urlsplit(target)
        path = parts.path
        params = parse_qs(parts.query, keep_blank_values=True)
        known = path in ("/", "/search", "/buy") or path.startswith("/item/")
        if method == "GET" and path == "/":
            return search_page()
        if method == "GET" and path == "/search":
            query = params.get("q", [""])[0]
            page_text = params.get("page", ["1"])[0]
            page_number = int(page_text) if page_text.isdigit() else 1
            return results_page(query, page_number, self.search.search(query))
        if method == "GET" and path.startswith("/item/"):
            product = self.catalog.by_asin.get(path[len("/item/") :])
            if product is None:
                return message_page("Not found", "There is no such product.", 404)
            return item_page(product)
        if method == "POST" and path == "/buy":
            return self._buy(parse_qs(body, keep_blank_values=True))
        if known:
            return message_page("Not allowed", f"{method} is not supported here.", 405)
        return message_page("Not found", "There is no such page.", 404)

    def _buy(self, form: dict[str, list[str]]) -> Page:
        product = self.catalog.by_asin.get(form.get("asin", [""])[0])
        if product is None:
            return message_page("Not found", "There is no such product.", 404)
        if self.purchase is not None:
            return message_page(
                "Already ordered", "This session has already placed its order.", 409
            )
        chosen = {}
        for dimension, values in product.options.items():
            value = form.get(dimension, [""])[0]
            chosen[dimension] = value if value in values else ""
        self.purchase = Purchase(product.asin, chosen)
        logger.debug("purchase %s %s", product.asin, chosen)
        return done_page(product, chosen)


@dataclass
class _Entry:
    method: str
    target: str
    body: str = ""


@dataclass
class TextClient:
    """The text backend: what Chromium does with the shop's pages, without Chromium."""

    state: ShopState
    origin: str
    _history: list[_Entry] = field(default_factory=list)
    _page: Page | None = None
    _values: dict[str, str] = field(default_factory=dict)

    def open(self, target: str = START_PATH) -> PageView:
        """Start a fresh tab on ``target``."""
        self._history = []
        self._navigate(_Entry("GET", target), push=True)
        return self.view()

    def view(self) -> PageView:
        if self._page is None:
            raise RuntimeError("TextClient.open() must be called before view()")
        elements = tuple(
            replace(e, value=self._values[e.element_id]) if e.element_id in self._values else e
            for e in self._page.elements
        )
        url = self.origin + self._history[-1].target
        return PageView(url, elements, can_go_back=len(self._history) > 1)

    def perform(self, steps: Sequence[Step]) -> PageView:
        """Carry out planned steps (already checked against this page)."""
        for step in steps:
            self._perform(step)
        return self.view()

    def _perform(self, step: Step) -> None:
        assert self._page is not None
        if step.kind == "back":
            if len(self._history) > 1:
                self._history.pop()
                self._navigate(self._history.pop(), push=True)
            return
        element = self._page.element(step.element_id)
        if element is None:
            raise ValueError(f"step {step} names no element of the current page")
        if step.kind in ("fill", "select"):
            self._values[element.element_id] = step.value
        elif element.role == "link":
            same_url = element.href == self._history[-1].target
            self._navigate(_Entry("GET", element.href), push=not same_url)
        else:
            self._submit(element.form)

    def _submit(self, form_index: int) -> None:
        assert self._page is not None
        form = self._page.forms[form_index]
        pairs = list(form.hidden)
        for element in self._page.elements:
            if element.form == form_index and element.role in ("textbox", "combobox"):
                pairs.append((element.field, self._values.get(element.element_id, element.value)))
        encoded = form_encode(pairs)
        if form.method == "get":
            self._navigate(_Entry("GET", f"{form.action}?{encoded}"), push=True)
        else:
            self._navigate(_Entry("POST", form.action, encoded), push=True)

    def _navigate(self, entry: _Entry, *, push: bool) -> None:
        self._page = self.state.request(entry.method, entry.target, entry.body)
        self._values = {}
        if push or not self._history:
            self._history.append(entry)
        else:
            self._history[-1] = entry
