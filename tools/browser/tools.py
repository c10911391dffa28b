"""The browser actions as LangChain tools, bound to one `BrowserSession`.

`BrowserToolkit(session).tools` are eight `StructuredTool`s (click, fill,
select_option, press, scroll, go_back, goto, read_text) that a LangChain agent
can call directly and that browser environments read their actions with, so
a model sees the same tool schemas in training and in deployment. Each tool
acts on the session's page and returns the page as text (`render_snapshot`);
the snapshot itself is kept in `BrowserToolkit.last` for the caller (an
environment's reward check, a scripted agent). A model's mistake comes back
in that text as an ``Error: ...`` line; only the browser's own failure raises
(`BrowserFailure`).
"""

from __future__ import annotations

from langchain_core.tools import BaseTool, StructuredTool

from archer_agents.tools.browser.session import BrowserSession, PageAction, PageSnapshot

TOOL_NAMES = ("click", "fill", "select_option", "press", "scroll", "go_back", "goto", "read_text")


def render_snapshot(snapshot: PageSnapshot) -> str:
    """The page as a model reads it: URL, element tree with ids, read text, last error."""
    lines = [f"URL: {snapshot.url}", "Page:", snapshot.tree() or "(nothing visible)"]
    if snapshot.text:
        lines.append(f"Text: {snapshot.text}")
    if snapshot.error:
        lines.append(snapshot.error)
    return "\n".join(lines)


class BrowserToolkit:
    """LangChain tools that act on ``session``'s current page (None: schemas only)."""

    def __init__(self, session: BrowserSession | None) -> None:
        self.session = session
        self.last: PageSnapshot | None = None
        """The snapshot after the last tool call (None before the first)."""
        self.tools: list[BaseTool] = self._build()

    def _run(self, action: PageAction) -> str:
        if self.session is None:
            raise RuntimeError("these browser tools are not bound to a browser session")
        self.last = self.session.act(action)
        return render_snapshot(self.last)

    def _build(self) -> list[BaseTool]:
        def click(element_id: str) -> str:
            """Click the element with this id (a number from the page listing)."""
            return self._run(PageAction("click", element_id))

        def fill(element_id: str, text: str) -> str:
            """Replace the text of an input or text area with ``text``."""
            return self._run(PageAction("fill", element_id, text))

        def select_option(element_id: str, value: str) -> str:
            """Choose the option shown as ``value`` in a drop-down list."""
            return self._run(PageAction("select_option", element_id, value))

        def press(key: str) -> str:
            """Press a key on the focused element, e.g. Enter, Tab, ArrowDown."""
            return self._run(PageAction("press", text=key))

        def scroll(dx: int, dy: int) -> str:
            """Scroll the page by dx, dy pixels (positive dy scrolls down)."""
            return self._run(PageAction("scroll", dx=dx, dy=dy))

        def go_back() -> str:
            """Go back to the previous page."""
            return self._run(PageAction("go_back"))

        def goto(url: str) -> str:
            """Open a URL (only the task's allowed origins can be reached)."""
            return self._run(PageAction("goto", text=url))

        def read_text(element_id: str = "") -> str:
            """Read the text of an element, or of the whole page without an id."""
            return self._run(PageAction("read_text", element_id))

        functions = (click, fill, select_option, press, scroll, go_back, goto, read_text)
        return [StructuredTool.from_function(fn) for fn in functions]

    def by_name(self) -> dict[str, BaseTool]:
        return {tool.name: tool for tool in self.tools}


__all__ = ["TOOL_NAMES", "BrowserToolkit", "render_snapshot"]
