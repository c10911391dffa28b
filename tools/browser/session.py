"""A confined page for a model to act on: an element-id snapshot and actions.

The snapshot is built in the page by a script that walks the visible DOM and
tags every element it lists with a ``data-archer-id`` attribute the first time
it sees it. Ids are therefore stable for the life of an element within a page
(a later snapshot of the same element shows the same id), deterministic for a
deterministic page (the same page, seeded the same, gets the same ids), and
actions find their element by that attribute. Playwright 1.65 has no
``page.accessibility``; tagging in the page gives ids we control, where CDP's
accessibility node ids change from one read to the next.

Actions: click, fill, select_option, press, scroll, go_back, goto (allowed
origins only) and read_text. A mistake of the model (an unknown id, an element
that cannot be filled, a key that does not exist, a URL off the allowed
origins) does not raise: the snapshot after it carries the error, for the
environment to show as an observation. Only the browser's own failure (crash,
hang) raises, as `BrowserFailure`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from archer_agents.tools.browser.chromium import is_playwright_error
from archer_agents.tools.browser.confined import ConfinedChromium, origin_of

logger = logging.getLogger(__name__)

ID_ATTRIBUTE = "data-archer-id"
MAX_NAME_CHARS = 100
MAX_TEXT_CHARS = 4_000
DEFAULT_CONTEXTS_PER_BROWSER = 8
"""Sessions of one process share a Chromium, up to this many contexts in each."""

SNAPSHOT_JS = r"""
(opts) => {
  const ATTR = 'data-archer-id';
  const ignore = new Set(opts.ignore ? Array.from(document.querySelectorAll(opts.ignore)) : []);
  if (opts.fresh) {
    for (const el of document.querySelectorAll('[' + ATTR + ']')) el.removeAttribute(ATTR);
    window.__archerNextId = 1;
  }
  if (window.__archerNextId === undefined) window.__archerNextId = 1;
  const out = [];
  const clean = (t) => (t || '').replace(/\s+/g, ' ').trim();
  const cut = (t) => (t.length > opts.maxName ? t.slice(0, opts.maxName - 3) + '...' : t);
  const SKIP = new Set(['SCRIPT', 'STYLE', 'NOSCRIPT', 'TEMPLATE', 'HEAD', 'META', 'LINK']);
  const INPUT_ROLES = {checkbox: 'checkbox', radio: 'radio', button: 'button', submit: 'button',
                       reset: 'button', range: 'slider', number: 'spinbutton', file: 'file'};
  const NAMED_BY_TEXT = new Set(['link', 'button', 'heading', 'tab', 'menuitem', 'option',
                                 'listitem', 'label']);
  const LEAF = new Set(['link', 'button', 'combobox', 'textbox', 'heading', 'option', 'slider',
                        'spinbutton']);
  const ownText = (el) => {
    let t = '';
    for (const n of el.childNodes) if (n.nodeType === 3) t += ' ' + n.textContent;
    return clean(t);
  };
  const labelOf = (el) => {
    if (el.getAttribute('aria-label')) return clean(el.getAttribute('aria-label'));
    if (el.labels && el.labels.length) return clean(el.labels[0].innerText);
    if (el.placeholder) return clean(el.placeholder);
    return '';
  };
  const roleOf = (el) => {
    const tag = el.tagName.toLowerCase();
    const explicit = el.getAttribute('role');
    if (explicit) return explicit;
    if (tag === 'a') return 'link';
    if (tag === 'button') return 'button';
    if (tag === 'select') return 'combobox';
    if (tag === 'textarea') return 'textbox';
    if (tag === 'input') {
      const type = (el.type || 'text').toLowerCase();
      return type === 'hidden' ? null : (INPUT_ROLES[type] || 'textbox');
    }
    if (/^h[1-6]$/.test(tag)) return 'heading';
    if (tag === 'img') return 'image';
    if (tag === 'label') return 'label';
    if (tag === 'li') return 'listitem';
    if (el.isContentEditable && el.getAttribute('contenteditable') !== null) return 'textbox';
    if (el.onclick || el.hasAttribute('tabindex')) return 'clickable';
    const parent = el.parentElement;
    if (getComputedStyle(el).cursor === 'pointer' &&
        !(parent && getComputedStyle(parent).cursor === 'pointer')) return 'clickable';
    if (ownText(el)) return 'text';
    return null;
  };
  const walk = (el, depth) => {
    if (SKIP.has(el.tagName) || ignore.has(el)) return;
    const style = getComputedStyle(el);
    if (style.display === 'none' || style.visibility === 'hidden') return;
    const rect = el.getBoundingClientRect();
    const role = rect.width > 0 && rect.height > 0 ? roleOf(el) : null;
    let next = depth;
    if (role) {
      let id = el.getAttribute(ATTR);
      if (!id) { id = String(window.__archerNextId++); el.setAttribute(ATTR, id); }
      const tag = el.tagName.toLowerCase();
      let name;
      if (NAMED_BY_TEXT.has(role) && !(role === 'label' && el.control)) name = clean(el.innerText);
      else if (['textbox', 'checkbox', 'radio', 'combobox', 'slider', 'spinbutton', 'file']
               .includes(role)) name = labelOf(el);
      else name = ownText(el) || clean(el.getAttribute('alt') || el.getAttribute('title') || '');
      if (role === 'label' && el.control) name = ownText(el);
      const item = {id, role, depth, tag, name: cut(name)};
      const editable = tag === 'input' || tag === 'textarea' || tag === 'select';
      if (editable) item.value = cut(el.value || '');
      if (tag === 'input') item.type = (el.type || 'text').toLowerCase();
      if (role === 'checkbox' || role === 'radio') item.checked = !!el.checked;
      if (tag === 'select') item.options = Array.from(el.options).map((o) => cut(clean(o.text)));
      if (el.disabled) item.disabled = true;
      if (document.activeElement === el) item.focused = true;
      out.push(item);
      next = depth + 1;
      if (LEAF.has(role)) return;
    }
    for (const child of el.children) walk(child, next);
  };
  if (document.body) walk(document.body, 0);
  return {url: location.href, title: document.title, elements: out};
}
"""


_CLICK_POINT_JS = r"""
(selector) => {
  const el = document.querySelector(selector);
  if (!el) return {missing: true};
  el.scrollIntoView({block: 'nearest', inline: 'nearest'});
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0 || getComputedStyle(el).visibility === 'hidden') {
    return {error: 'is not visible'};
  }
  if (el.disabled) return {error: 'is disabled'};
  const x = r.left + r.width / 2, y = r.top + r.height / 2;
  const hit = document.elementFromPoint(x, y);
  if (hit && hit !== el && !el.contains(hit) && !(hit.control === el) &&
      !(el.labels && Array.from(el.labels).some((l) => l.contains(hit)))) {
    const id = hit.getAttribute('data-archer-id');
    const tag = '<' + hit.tagName.toLowerCase() + (hit.id ? '#' + hit.id : '') + '>';
    return {error: `is covered by ${id ? '[' + id + ']' : tag}; a click there would hit that`};
  }
  return {x, y};
}
"""
"""Where a click on an element lands, or why it cannot (run in the page)."""

_FIELD_JS = r"""
([selector, kind, value]) => {
  const el = document.querySelector(selector);
  if (!el) return {missing: true};
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0 || getComputedStyle(el).visibility === 'hidden') {
    return {error: 'is not visible'};
  }
  if (el.disabled) return {error: 'is disabled'};
  if (kind === 'fill' && el.readOnly) return {error: 'is read-only'};
  if (kind === 'select_option' && el.tagName === 'SELECT' &&
      !Array.from(el.options).some((o) => o.value === value || o.label === value)) {
    return {error: `has no option ${JSON.stringify(value)}`};
  }
  return {};
}
"""
"""Why a fill or a select on an element cannot be done now, if it cannot (run in the page)."""

_QUIET_PAGE_JS = r"""
(url) => {
  if (document.activeElement && document.activeElement !== document.body) {
    document.activeElement.blur();
  }
  const selection = window.getSelection();
  if (selection) selection.removeAllRanges();
  window.scrollTo(0, 0);
  if (location.href !== url) history.replaceState(history.state, '', url);
}
"""
"""Before an episode restarts in its page: nothing focused, selected or scrolled, and the
URL without the fragment the last episode may have added, as a freshly loaded page is."""


@dataclass(frozen=True)
class Element:
    """One listed element of a snapshot; ``element_id`` is what actions take."""

    element_id: str
    role: str
    name: str
    depth: int = 0
    tag: str = ""
    value: str | None = None
    type: str | None = None
    checked: bool | None = None
    options: tuple[str, ...] = ()
    disabled: bool = False
    focused: bool = False

    def line(self) -> str:
        """``[12] checkbox "Yes" checked``, indented two spaces per level."""
        parts = [f"[{self.element_id}] {self.role}"]
        if self.name:
            parts.append(json.dumps(self.name))
        if self.type == "password":
            parts.append("password")
        if self.value is not None and self.role not in ("checkbox", "radio", "button"):
            parts.append(f"value={json.dumps(self.value)}")
        if self.checked is not None:
            parts.append("checked" if self.checked else "unchecked")
        if self.options:
            parts.append(f"options={json.dumps(list(self.options))}")
        if self.disabled:
            parts.append("disabled")
        if self.focused:
            parts.append("focused")
        return "  " * self.depth + " ".join(parts)


@dataclass(frozen=True)
class PageSnapshot:
    """What the page shows now; ``error`` is the last action's mistake, if any."""

    url: str
    title: str
    elements: tuple[Element, ...]
    error: str = ""
    text: str = ""
    """What read_text read (empty after other actions)."""

    def tree(self) -> str:
        return "\n".join(element.line() for element in self.elements)

    def find(self, role: str | None = None, name: str | None = None) -> list[Element]:
        """Elements with that role and/or exactly that name."""
        return [
            e
            for e in self.elements
            if (role is None or e.role == role) and (name is None or e.name == name)
        ]

    def by_id(self, element_id: str) -> Element | None:
        return next((e for e in self.elements if e.element_id == element_id), None)


@dataclass(frozen=True)
class PageAction:
    """One model action: ``kind`` is click, fill, select_option, press, scroll, go_back,
    goto or read_text."""

    kind: str
    element_id: str = ""
    text: str = ""
    dx: int = 0
    dy: int = 0


ACTION_KINDS = ("click", "fill", "select_option", "press", "scroll", "go_back", "goto", "read_text")
_ID = re.compile(r"\d{1,9}")


class PageActionError(Exception):
    """A mistake of the model's action; the message is fit to show it."""


class BrowserSession(ConfinedChromium):
    """A confined Chromium with one page at a time, seen as element-id snapshots.

    Sessions share a Chromium by default (``contexts_per_browser``, 8): several
    environments of one process run as contexts of one browser.

    Args: those of `ConfinedChromium`, plus
        ignore_selector: elements (and their subtrees) the snapshot leaves out.
        element_timeout_s: how long ``read_text`` waits for its element's text. Click,
            fill and select do not wait: a script in the page checks their element at
            once (the model is told why it cannot be used), and the action after it is
            bounded by ``action_timeout_s``, so a busy machine does not make it a mistake.
        reuse_context: start an episode in the last one's page, cleared, where that is
            safe (`ConfinedChromium.reuse_page`), rather than in a new context.
    """

    def __init__(
        self,
        origins: str | Sequence[str],
        *,
        ignore_selector: str = "",
        element_timeout_s: float = 2.0,
        reuse_context: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("name", "session")
        kwargs.setdefault("contexts_per_browser", DEFAULT_CONTEXTS_PER_BROWSER)
        super().__init__(origins, **kwargs)
        self.ignore_selector = ignore_selector
        self.element_timeout_s = element_timeout_s
        self.reuse_context = reuse_context

    # -- episodes ------------------------------------------------------------------------------
    def open(self, url: str, script: str | None = None, arg: Any = None) -> PageSnapshot:
        """A new episode on ``url`` (which must be on an allowed origin).

        With ``reuse_context`` the last episode's page is reused when nothing of that
        episode can show through (`reuse_page`), else a fresh context is opened.
        ``script`` (the environment's, with ``arg``), if given, runs in the loaded page
        before the snapshot: it sets the episode up (a MiniWoB++ page is seeded and
        started), so the first snapshot numbers the elements of the episode's page.
        """
        if not self.allows(url):
            raise ValueError(f"{url!r} is not on an allowed origin ({', '.join(self.origins)})")
        self.ensure_started()

        def job() -> PageSnapshot:
            page = self.reuse_page() if self.reuse_context else None
            if page is None:
                page = self.new_context()
                page.goto(url, wait_until="load")
            else:
                page.goto(url, wait_until="load")
                self.forget_history()
            if script is not None:
                page.evaluate(script, arg)
            return self._snapshot()

        return self._call(job, self._deadline(3))

    def restart_episode(self, url: str, script: str, arg: Any = None) -> PageSnapshot | None:
        """A new episode in the page that shows ``url`` now, begun by ``script`` instead
        of a reload; None when that page cannot be restarted (then `open` it).

        Loading a page again costs its parsing, scripts and layout; a page that can
        start a new episode by itself (MiniWoB++'s ``core.startEpisodeReal``) need not
        pay that. The last episode's page is used when it is still the only page of
        its context, on ``url`` (a fragment aside) and of this origin only, and
        ``script`` (the environment's, with ``arg``) returns a truthy value; before it
        runs, the page is quieted as a fresh load is (nothing focused, selected or
        scrolled, no fragment), and after it, the page's storage, cookies and history
        are cleared as `reuse_page` clears them, the blocked-request count is reset and
        the elements are numbered afresh from 1, so the snapshot reads as after a
        reload. The page's own script state carries over: ``script`` is what must
        start a clean episode. None (logged) when the page is another one or
        ``script`` fails or returns a falsy value; a browser failure raises.
        """
        self.ensure_started()

        def job() -> PageSnapshot | None:
            page, context = self._page, self._context
            bare_url = url.split("#", 1)[0]
            if (
                page is None
                or context is None
                or len(context.pages) != 1
                or page.url.split("#", 1)[0] != bare_url
                or self._document_origins != {origin_of(url)}
            ):
                logger.debug("no page of %s to restart in; it will be loaded", url)
                return None
            try:
                page.evaluate(_QUIET_PAGE_JS, url)
                started = page.evaluate(script, arg)
            except Exception as exc:
                if not is_playwright_error(exc) or not self.running:
                    raise
                logger.warning("restarting %s in its page failed: %s", url, _first_line(exc))
                return None
            if not started:
                logger.warning("restarting %s in its page failed (script said %r)", url, started)
                return None
            if not self.clear_page_state():
                return None
            self.forget_history()
            return self._snapshot(fresh=True)

        return self._call(job, self._deadline(2))

    def evaluate(self, expression: str, arg: Any = None) -> Any:
        """Run the environment's own script in the page (not the model's)."""
        return self._call(lambda: self._page.evaluate(expression, arg), self._deadline(1))

    def snapshot(self) -> PageSnapshot:
        return self._call(self._snapshot, self._deadline(1))

    def act(self, action: PageAction) -> PageSnapshot:
        """Carry out ``action``; the snapshot after it carries the model's mistake, if any."""
        if action.kind not in ACTION_KINDS:
            raise ValueError(f"unknown action kind {action.kind!r}; use one of {ACTION_KINDS}")

        def job() -> PageSnapshot:
            error, text = "", ""
            try:
                text = self._perform(action)
            except PageActionError as exc:
                error = str(exc)
            except Exception as exc:
                if not is_playwright_error(exc) or not self.running:
                    raise
                error = f"Error: {action.kind} failed: {_first_line(exc)}"
            if error:
                logger.debug("model action %s failed: %s", action, error)
            self._settle()
            return replace(self._snapshot(), error=error, text=text)

        return self._call(job, self._deadline(3))

    # convenience wrappers
    def click(self, element_id: str) -> PageSnapshot:
        return self.act(PageAction("click", element_id))

    def fill(self, element_id: str, text: str) -> PageSnapshot:
        return self.act(PageAction("fill", element_id, text))

    def select_option(self, element_id: str, value: str) -> PageSnapshot:
        return self.act(PageAction("select_option", element_id, value))

    def press(self, key: str) -> PageSnapshot:
        return self.act(PageAction("press", text=key))

    def scroll(self, dx: int, dy: int) -> PageSnapshot:
        return self.act(PageAction("scroll", dx=dx, dy=dy))

    def go_back(self) -> PageSnapshot:
        return self.act(PageAction("go_back"))

    def goto(self, url: str) -> PageSnapshot:
        return self.act(PageAction("goto", text=url))

    def read_text(self, element_id: str = "") -> PageSnapshot:
        return self.act(PageAction("read_text", element_id))

    # -- on the Playwright thread ------------------------------------------------------------
    def _locator(self, element_id: str) -> Any:
        if not _ID.fullmatch(element_id):
            raise PageActionError(f"Error: {element_id!r} is not an element id (ids are numbers).")
        locator = self._page.locator(f'[{ID_ATTRIBUTE}="{element_id}"]')
        if locator.count() == 0:
            raise PageActionError(f"Error: there is no element [{element_id}] on the page.")
        return locator.first

    def _perform(self, action: PageAction) -> str:
        page = self._page
        timeout = self.element_timeout_s * 1000
        kind = action.kind
        if kind == "click":
            self._click(action.element_id)
        elif kind == "fill":
            self._checked_field(action).fill(
                action.text, force=True, timeout=self.action_timeout_s * 1000
            )
        elif kind == "select_option":
            self._checked_field(action).select_option(
                action.text, force=True, timeout=self.action_timeout_s * 1000
            )
        elif kind == "press":
            if not action.text:
                raise PageActionError('Error: press needs a key, e.g. press("Enter").')
            page.keyboard.press(action.text)
        elif kind == "scroll":
            page.evaluate("([x, y]) => window.scrollBy(x, y)", [action.dx, action.dy])
        elif kind == "go_back":
            if not self._can_go_back():
                raise PageActionError("Error: there is no previous page to go back to.")
            page.go_back(wait_until="domcontentloaded")
        elif kind == "goto":
            if not self.allows(action.text):
                self.block(action.text)
                raise PageActionError(
                    f"Error: {action.text[:200]!r} is outside the allowed origins "
                    f"({', '.join(self.origins)}); the request was blocked."
                )
            page.goto(action.text, wait_until="load")
        else:  # read_text
            if action.element_id:
                text = self._locator(action.element_id).inner_text(timeout=timeout)
            else:
                text = page.inner_text("body", timeout=timeout)
            text = " ".join(text.split())
            return text[:MAX_TEXT_CHARS]
        return ""

    def _click(self, element_id: str) -> None:
        """A real mouse click at the element's centre, after one check in the page.

        Playwright's own checks wait for the element to be stable over two animation
        frames (tens of milliseconds a click); the model acts on a snapshot of a page
        at rest, so one script checks instead that the element exists, has a box, is
        enabled and is what the mouse would hit there, and tells the model why not;
        then the mouse clicks there, as a user's would.

        That check is the click's whole wait for its element, so the click itself is
        bounded by the action's deadline (``action_timeout_s``), not by
        ``element_timeout_s``: on a busy machine a forced click (scroll, mouse down and
        up, a navigation it starts) may take longer than the wait for an element, and
        it must not be reported as the model's mistake when it is slow.
        """
        if not _ID.fullmatch(element_id):
            raise PageActionError(f"Error: {element_id!r} is not an element id (ids are numbers).")
        where = self._page.evaluate(_CLICK_POINT_JS, f'[{ID_ATTRIBUTE}="{element_id}"]')
        if "missing" in where:
            raise PageActionError(f"Error: there is no element [{element_id}] on the page.")
        if "error" in where:
            raise PageActionError(f"Error: element [{element_id}] {where['error']}.")
        # forced: the checks above stand for Playwright's; it still waits for a navigation
        # the click starts, so the snapshot after it is of the page the click led to
        self._page.locator(f'[{ID_ATTRIBUTE}="{element_id}"]').click(
            force=True, timeout=self.action_timeout_s * 1000
        )

    def _checked_field(self, action: PageAction) -> Any:
        """The locator of a fill's or select's element, checked in the page first.

        As for `_click`: one script checks what Playwright would wait for (the element
        is there, has a box, is enabled, not read-only; a select has the option), tells
        the model why not, and the forced action after it is bounded by the action's
        deadline, so a slow machine does not turn it into the model's mistake. What
        only Playwright knows (an element that cannot be filled at all) fails at once.
        """
        element_id = action.element_id
        if not _ID.fullmatch(element_id):
            raise PageActionError(f"Error: {element_id!r} is not an element id (ids are numbers).")
        selector = f'[{ID_ATTRIBUTE}="{element_id}"]'
        where = self._page.evaluate(_FIELD_JS, [selector, action.kind, action.text])
        if "missing" in where:
            raise PageActionError(f"Error: there is no element [{element_id}] on the page.")
        if "error" in where:
            raise PageActionError(
                f"Error: {action.kind} failed: element [{element_id}] {where['error']}."
            )
        return self._page.locator(selector).first

    def _can_go_back(self) -> bool:
        """Whether the previous history entry exists and is on an allowed origin (the
        context's first entry is about:blank, which is not)."""
        history = self.cdp().send("Page.getNavigationHistory")
        index = int(history["currentIndex"])
        return index > 0 and self.allows(str(history["entries"][index - 1]["url"]))

    def _settle(self) -> None:
        try:
            self._page.wait_for_load_state("domcontentloaded")
        except Exception as exc:
            if not is_playwright_error(exc) or not self.running:
                raise

    def _snapshot(self, fresh: bool = False) -> PageSnapshot:
        """The page as element lines; ``fresh`` numbers its elements anew from 1 (the ids
        of a page whose episode restarted in place, as a reload would number them)."""
        arg = {"ignore": self.ignore_selector, "maxName": MAX_NAME_CHARS, "fresh": fresh}
        try:
            data = self._page.evaluate(SNAPSHOT_JS, arg)
        except Exception as exc:
            # A navigation replaced the document while we read it: read the new one.
            if not is_playwright_error(exc) or "context was destroyed" not in str(exc):
                raise
            self._page.wait_for_load_state("domcontentloaded")
            data = self._page.evaluate(SNAPSHOT_JS, arg)
        elements = tuple(
            Element(
                element_id=str(item["id"]),
                role=str(item["role"]),
                name=str(item.get("name", "")),
                depth=int(item.get("depth", 0)),
                tag=str(item.get("tag", "")),
                value=item.get("value"),
                type=item.get("type"),
                checked=item.get("checked"),
                options=tuple(item.get("options", ())),
                disabled=bool(item.get("disabled", False)),
                focused=bool(item.get("focused", False)),
            )
            for item in data["elements"]
        )
        return PageSnapshot(url=data["url"], title=data["title"], elements=elements)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    message = lines[0] if lines else type(exc).__name__
    return message[:300]


__all__ = [
    "ACTION_KINDS",
    "ID_ATTRIBUTE",
    "BrowserSession",
    "Element",
    "PageAction",
    "PageActionError",
    "PageSnapshot",
]
