"""MiniShop's pages: one page model, rendered as HTML and as an accessibility tree.

The server sends `render_html(page)` to Chromium; the text backend shows
`render_tree(page.elements)` directly. The browser backend reads the live DOM
back with `SNAPSHOT_JS` into the same `Element` records and renders them with
the same `render_tree`, so both backends produce the same observation text
whenever Chromium shows what the page model says. Pages are plain HTML (no
script, no external assets) and every interactive element carries an id that
depends only on the page's content: a running number in document order with a
prefix for its kind (``t`` textbox, ``b`` button, ``l`` link, ``s`` select).
"""

from __future__ import annotations

import html
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

from archer_agents.tools.shop.catalog import Product

Role = Literal["heading", "text", "link", "button", "textbox", "combobox"]
INTERACTIVE_ROLES = ("link", "button", "textbox", "combobox")
ID_PREFIX = {"link": "l", "button": "b", "textbox": "t", "combobox": "s"}
RESULTS_PER_PAGE = 10
PLACEHOLDER_OPTION = "choose"
"""Text of the empty first option of every select: nothing chosen yet."""


@dataclass(frozen=True)
class Option:
    """One choice of a select: the value it submits and the text it shows."""

    value: str
    text: str


@dataclass(frozen=True)
class Element:
    """One node of the simplified accessibility tree.

    ``value`` is a textbox's text or the value of a select's chosen option.
    ``href``, ``form`` and ``field`` describe what the element does; they come
    from the page model only (a DOM snapshot leaves them empty).
    """

    role: Role
    name: str
    element_id: str = ""
    value: str = ""
    options: tuple[Option, ...] = ()
    href: str = ""
    form: int = -1
    field: str = ""

    @property
    def interactive(self) -> bool:
        return self.role in INTERACTIVE_ROLES

    def selected_text(self) -> str:
        for option in self.options:
            if option.value == self.value:
                return option.text
        return self.options[0].text if self.options else ""


@dataclass(frozen=True)
class Form:
    """A form: where it submits, how, and its hidden fields (which come first in it)."""

    action: str
    method: Literal["get", "post"]
    hidden: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Page:
    """Everything a page shows; the elements of one form are contiguous."""

    title: str
    elements: tuple[Element, ...]
    forms: tuple[Form, ...] = ()
    status: int = 200

    def element(self, element_id: str) -> Element | None:
        for element in self.elements:
            if element.element_id == element_id:
                return element
        return None


@dataclass(frozen=True)
class PageView:
    """What an agent sees of the current page, from either backend."""

    url: str
    elements: tuple[Element, ...]
    can_go_back: bool


# -- text helpers ----------------------------------------------------------------

_FORM_SAFE = frozenset(string.ascii_letters + string.digits + "*-._")


def normalize_space(text: str) -> str:
    """Collapse runs of whitespace and trim, as accessible names are computed."""
    return " ".join(text.split())


def sanitize_text_input(text: str) -> str:
    """What a single-line textbox keeps of typed text: no control characters."""
    return "".join(ch for ch in text if ch == "\t" or (ord(ch) >= 32 and ord(ch) != 127))


def _form_escape(text: str) -> str:
    # Lone surrogates become U+FFFD, as a browser's UTF-8 encoder does.
    data = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")
    return "".join(
        "+" if byte == 0x20 else chr(byte) if chr(byte) in _FORM_SAFE else f"%{byte:02X}"
        for byte in data
    )


def form_encode(pairs: Iterable[tuple[str, str]]) -> str:
    """application/x-www-form-urlencoded exactly as the HTML standard (and Chromium) writes it."""
    return "&".join(f"{_form_escape(k)}={_form_escape(v)}" for k, v in pairs)


def price_text(price: float) -> str:
    return f"${price:.2f}"


# -- page builders -----------------------------------------------------------------


class _PageBuilder:
    def __init__(self, title: str) -> None:
        self.title = title
        self.elements: list[Element] = []
        self.forms: list[Form] = []
        self._count = 0
        self._form = -1

    def _next_id(self, role: Role) -> str:
        self._count += 1
        return f"{ID_PREFIX[role]}{self._count}"

    def heading(self, name: str) -> None:
        self.elements.append(Element("heading", name))

    def text(self, name: str) -> None:
        self.elements.append(Element("text", name))

    def link(self, name: str, href: str) -> None:
        self.elements.append(Element("link", name, self._next_id("link"), href=href))

    def begin_form(
        self,
        action: str,
        method: Literal["get", "post"],
        hidden: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.forms.append(Form(action, method, tuple(hidden)))
        self._form = len(self.forms) - 1

    def end_form(self) -> None:
        self._form = -1

    def textbox(self, label: str, field_name: str, value: str = "") -> None:
        element_id = self._next_id("textbox")
        self.elements.append(
            Element("textbox", label, element_id, value, form=self._form, field=field_name)
        )

    def combobox(self, label: str, field_name: str, values: Sequence[str]) -> None:
        options = (Option("", PLACEHOLDER_OPTION), *(Option(v, v) for v in values))
        element_id = self._next_id("combobox")
        self.elements.append(
            Element("combobox", label, element_id, "", options, form=self._form, field=field_name)
        )

    def button(self, name: str) -> None:
        self.elements.append(Element("button", name, self._next_id("button"), form=self._form))

    def build(self, status: int = 200) -> Page:
        return Page(self.title, tuple(self.elements), tuple(self.forms), status)


def _search_header(builder: _PageBuilder, query: str = "") -> None:
    builder.begin_form("/search", "get")
    builder.textbox("Search", "q", query)
    builder.button("Search")
    builder.end_form()


def results_href(query: str, page_number: int) -> str:
    return "/search?" + form_encode([("q", query), ("page", str(page_number))])


def item_href(asin: str) -> str:
    return f"/item/{asin}"


def search_page() -> Page:
    builder = _PageBuilder("Search")
    builder.heading("MiniShop")
    _search_header(builder)
    builder.text("Type what you are looking for and press Search.")
    return builder.build()


def results_page(query: str, page_number: int, products: Sequence[Product]) -> Page:
    """Page ``page_number`` (1-based, clamped) of ``products``, already ranked for ``query``."""
    pages = max(1, -(-len(products) // RESULTS_PER_PAGE))
    page_number = min(max(page_number, 1), pages)
    builder = _PageBuilder("Results")
    _search_header(builder, query)
    builder.heading(f'Results for "{query}"')
    if not products:
        builder.text(f'No products match "{query}".')
        return builder.build()
    builder.text(f"Page {page_number} of {pages} ({len(products)} results)")
    start = (page_number - 1) * RESULTS_PER_PAGE
    for product in products[start : start + RESULTS_PER_PAGE]:
        builder.link(product.title, item_href(product.asin))
        builder.text(price_text(product.price))
    if page_number > 1:
        builder.link("< Prev", results_href(query, page_number - 1))
    if page_number < pages:
        builder.link("Next >", results_href(query, page_number + 1))
    return builder.build()


def item_page(product: Product) -> Page:
    builder = _PageBuilder(product.title)
    _search_header(builder)
    builder.heading(product.title)
    builder.text(f"Price: {price_text(product.price)}")
    builder.text(product.description)
    builder.text(f"Features: {', '.join(product.attributes)}")
    builder.begin_form("/buy", "post", hidden=[("asin", product.asin)])
    for dimension, values in product.options.items():
        builder.combobox(dimension, dimension, values)
    builder.button("Buy Now")
    builder.end_form()
    return builder.build()


def done_page(product: Product, chosen: Mapping[str, str]) -> Page:
    builder = _PageBuilder("Order placed")
    builder.heading("Thank you for your order")
    builder.text(f"You bought: {product.title}")
    picked = ", ".join(f"{k} {v}" for k, v in chosen.items() if v) or "none chosen"
    builder.text(f"Options: {picked}")
    builder.text(f"Price: {price_text(product.price)}")
    return builder.build()


def message_page(title: str, message: str, status: int) -> Page:
    builder = _PageBuilder(title)
    _search_header(builder)
    builder.heading(title)
    builder.text(message)
    return builder.build(status)


# -- HTML --------------------------------------------------------------------------------

_STYLE = """
body { font-family: sans-serif; margin: 0; background: #f4f6f8; color: #1d2430; }
header { background: #23395d; padding: 12px 24px; }
header input { width: 420px; padding: 6px; font-size: 15px; }
main { padding: 16px 24px; }
h1, h2 { color: #23395d; }
a { color: #0b63c5; display: block; margin-top: 12px; font-size: 16px; }
p { margin: 4px 0; }
button { background: #f0a400; border: 1px solid #a06800; padding: 6px 14px; font-size: 15px; }
select { margin: 6px 12px 6px 0; padding: 4px; }
"""


def _attr(text: str) -> str:
    return html.escape(text, quote=True)


def _element_html(element: Element, first_heading: bool) -> str:
    name = html.escape(element.name, quote=False)
    eid = _attr(element.element_id)
    if element.role == "heading":
        tag = "h1" if first_heading else "h2"
        return f"<{tag}>{name}</{tag}>"
    if element.role == "text":
        return f"<p>{name}</p>"
    if element.role == "link":
        return f'<a id="{eid}" href="{_attr(element.href)}">{name}</a>'
    if element.role == "button":
        return f'<button id="{eid}" type="submit">{name}</button>'
    if element.role == "textbox":
        return (
            f'<input id="{eid}" type="text" name="{_attr(element.field)}" '
            f'aria-label="{_attr(element.name)}" value="{_attr(element.value)}" autocomplete="off">'
        )
    options = "".join(
        f'<option value="{_attr(o.value)}"{" selected" if o.value == element.value else ""}>'
        f"{html.escape(o.text, quote=False)}</option>"
        for o in element.options
    )
    return (
        f'<select id="{eid}" name="{_attr(element.field)}" aria-label="{_attr(element.name)}" '
        f'autocomplete="off">{options}</select>'
    )


def render_html(page: Page) -> str:
    """The page as a complete HTML document (no scripts, no external requests)."""
    body: list[str] = []
    open_form = -1
    seen_heading = False
    for element in page.elements:
        if element.form != open_form:
            if open_form >= 0:
                body.append("</form>")
            if element.form >= 0:
                form = page.forms[element.form]
                hidden = "".join(
                    f'<input type="hidden" name="{_attr(k)}" value="{_attr(v)}">'
                    for k, v in form.hidden
                )
                body.append(
                    f'<form action="{_attr(form.action)}" method="{form.method}" '
                    f'autocomplete="off">{hidden}'
                )
            open_form = element.form
        body.append(_element_html(element, first_heading=not seen_heading))
        seen_heading = seen_heading or element.role == "heading"
    if open_form >= 0:
        body.append("</form>")
    # The search form sits in a header bar; everything after it is the main content.
    split = next((i + 1 for i, part in enumerate(body) if part == "</form>"), 0)
    if page.elements and page.elements[0].form >= 0:
        header, main = body[:split], body[split:]
    else:
        header, main = [], body
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>MiniShop: {html.escape(page.title, quote=False)}</title>"
        '<link rel="icon" href="data:,">'
        f"<style>{_STYLE}</style></head>\n<body>"
        f"<header>{''.join(header)}</header>\n<main>{''.join(main)}</main>\n</body></html>\n"
    )


# -- accessibility tree -------------------------------------------------------------------


def render_tree(elements: Sequence[Element]) -> str:
    """One line per node: ``[b12] button 'Buy Now'``; a select lists its options below it."""
    lines: list[str] = []
    for element in elements:
        name = normalize_space(element.name)
        if not element.interactive:
            lines.append(f"{element.role} '{name}'")
            continue
        line = f"[{element.element_id}] {element.role} '{name}'"
        if element.role == "textbox" and element.value:
            line += f" value='{element.value}'"
        if element.role == "combobox":
            line += f" value='{normalize_space(element.selected_text())}'"
        lines.append(line)
        lines.extend(f"  option '{normalize_space(o.text)}'" for o in element.options)
    return "\n".join(lines)


def render_observation(instruction: str, url: str, elements: Sequence[Element], error: str) -> str:
    """The text an agent reads: instruction, URL, page tree, and the last action's error."""
    parts = [f"Instruction: {instruction}", f"URL: {url}", render_tree(elements)]
    if error:
        parts.append(error)
    return "\n".join(parts) + "\n"


SNAPSHOT_JS = """() => {
  const out = [];
  const visit = (node) => {
    for (const el of node.children) {
      const tag = el.tagName.toLowerCase();
      if (tag === "script" || tag === "style" || tag === "template" || el.hidden) continue;
      if (/^h[1-6]$/.test(tag)) out.push({role: "heading", name: el.textContent});
      else if (tag === "p") out.push({role: "text", name: el.textContent});
      else if (tag === "a") {
        if (el.hasAttribute("href")) out.push({role: "link", id: el.id, name: el.textContent});
      } else if (tag === "button") out.push({role: "button", id: el.id, name: el.textContent});
      else if (tag === "input") {
        if (el.type === "text" || el.type === "search")
          out.push({role: "textbox", id: el.id, name: el.getAttribute("aria-label") || "",
                    value: el.value});
      } else if (tag === "select") {
        out.push({role: "combobox", id: el.id, name: el.getAttribute("aria-label") || "",
                  value: el.value,
                  options: Array.from(el.options, (o) => ({value: o.value, text: o.textContent}))});
      } else visit(el);
    }
  };
  if (document.body) visit(document.body);
  const canGoBack = window.navigation ? window.navigation.canGoBack : history.length > 1;
  return {url: location.href, canGoBack: canGoBack, elements: out};
}"""
"""Reads the live DOM (current values included) into records for `elements_from_snapshot`."""


def elements_from_snapshot(records: Sequence[Mapping[str, Any]]) -> tuple[Element, ...]:
    """`Element`s from what `SNAPSHOT_JS` returned."""
    elements = []
    for record in records:
        role = cast(Role, record["role"])
        if role not in ("heading", "text", *INTERACTIVE_ROLES):
            raise ValueError(f"unexpected role {role!r} in a DOM snapshot")
        options = tuple(Option(o["value"], o["text"]) for o in record.get("options", ()))
        elements.append(
            Element(role, record["name"], record.get("id", ""), record.get("value", ""), options)
        )
    return tuple(elements)


# -- reading the tree back (for scripted agents) ------------------------------------------

_LINE = re.compile(
    r"^(?:\[(?P<id>[a-z]\d+)\] )?(?P<role>heading|text|link|button|textbox|combobox) "
    r"'(?P<name>.*?)'(?: value='(?P<value>.*)')?$"
)
_OPTION = re.compile(r"^  option '(?P<text>.*)'$")


@dataclass
class ObservedPage:
    """An observation read back into its parts."""

    instruction: str = ""
    url: str = ""
    elements: list[Element] = field(default_factory=list)
    error: str = ""

    def find(self, role: str, name: str | None = None) -> list[Element]:
        return [e for e in self.elements if e.role == role and (name is None or e.name == name)]


def parse_observation(text: str) -> ObservedPage:
    """Split an observation from `render_observation` into instruction, URL, elements, error."""
    page = ObservedPage()
    for line in text.splitlines():
        if line.startswith("Instruction: ") and not page.instruction:
            page.instruction = line[len("Instruction: ") :]
        elif line.startswith("URL: ") and not page.url:
            page.url = line[len("URL: ") :]
        elif line.startswith("Error: "):
            page.error = line
        elif (option := _OPTION.match(line)) and page.elements:
            last = page.elements[-1]
            text_ = option["text"]
            page.elements[-1] = replace(last, options=(*last.options, Option(text_, text_)))
        elif match := _LINE.match(line):
            role = cast(Role, match["role"])
            page.elements.append(
                Element(role, match["name"], match["id"] or "", match["value"] or "")
            )
    return page
