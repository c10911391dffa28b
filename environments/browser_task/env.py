"""Any site as a text environment: a task file played in real headless Chromium.

The task file (`archer_agents.environments.browser_task.taskfile`) gives the
start URL, the allowed origins, the instruction, the success check and the
step limit. Each reset opens the start URL in a fresh confined browser context
(`archer_agents.tools.browser.session`); when the task ships a site, its folder
is served on 127.0.0.1 first.

Observation: the instruction, the URL, the page as an element tree with ids
(``[3] button "Send"``), the text read by ``read_text`` and the last action's
error, as in the MiniWoB++ environment. Actions are calls of the LangChain
browser tools (`archer_agents.tools.browser.tools`): ``click("3")``,
``fill("3", "text")``, ``select_option("3", "value")``, ``press("Enter")``,
``scroll(0, 200)``, ``go_back()``, ``goto("url")``, ``read_text("3")``; their
schemas are `tool_specs`, for chat models. After every action the success
check runs; success ends the episode with reward 1, and ``max_steps`` actions
without it truncate it with reward 0. Requests off the allowed origins are
blocked and counted (``info["blocked_requests"]``); a browser crash or hang
ends the episode as failed (``info["failure"]``) and the next reset restarts
the browser. With ``screenshot=True``, ``info["screenshot"]`` holds a PNG of the
viewport after each reset and step (`archer_agents.environments.browser_env`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from langchain_core.tools import BaseTool
from pydantic import ValidationError

from archer_agents.environments.base import ScriptedAgent, to_ascii
from archer_agents.environments.browser_env import BrowserTextEnv
from archer_agents.environments.browser_random import RandomBrowserAgent
from archer_agents.environments.browser_task.agents import ExpertAgent
from archer_agents.environments.browser_task.taskfile import BrowserTask, SuccessCheck, read_task
from archer_agents.environments.tool_env import bind_arguments
from archer_agents.formats.prompts import tool_spec
from archer_agents.formats.tool_calls import ActionParseError, parse_tool_call
from archer_agents.tools.browser.chromium import find_chromium, require_playwright
from archer_agents.tools.browser.confined import BrowserFailure
from archer_agents.tools.browser.session import DEFAULT_CONTEXTS_PER_BROWSER, BrowserSession
from archer_agents.tools.browser.static import StaticServer
from archer_agents.tools.browser.tools import BrowserToolkit, render_snapshot

logger = logging.getLogger(__name__)

TASK_IDS = ("0",)
"""A task file is one task; both splits hold it."""

_CHECK_JS = """async (c) => {
  try {
    if (c.kind === 'text_present') {
      return {ok: (document.body ? document.body.innerText : '').includes(c.value)};
    }
    if (c.kind === 'javascript') {
      let v = (0, eval)('(' + c.value + ')');
      if (typeof v === 'function') v = v();
      return {ok: !!(await v)};
    }
    const el = document.querySelector(c.value);
    const visible = !!el && el.getClientRects().length > 0 &&
      getComputedStyle(el).visibility !== 'hidden';
    const states = {visible, hidden: !visible, attached: !!el, detached: !el,
      checked: !!el && !!el.checked, unchecked: !!el && !el.checked,
      enabled: !!el && !el.disabled, disabled: !!el && !!el.disabled};
    return {ok: states[c.state]};
  } catch (e) {
    return {ok: false, error: String(e)};
  }
}"""


class BrowserTaskEnv(BrowserTextEnv):
    """One task file's task in headless Chromium.

    Args:
        task: a task file's path, or a `BrowserTask` (then ``base_dir`` is where its
            ``site`` is relative to).
        max_steps: overrides the task file's step limit.
        chromium: path or name of the Chromium binary (default: ``$ARCHER_CHROMIUM``,
            then ``chromium`` on PATH).
        action_timeout_s: deadline of one browser operation; past it the browser is
            considered hung, restarted, and the episode fails.
        element_timeout_s: how long ``read_text`` waits for its element (click, fill
            and select check theirs in the page at once; `BrowserSession`).
        viewport: browser viewport (width, height).
        trace: record a Playwright trace of each episode (`save_trace` writes it).
        contexts_per_browser: environments of this process share a Chromium, each in its
            own context, up to this many in one (1: a Chromium of its own). A crash fails
            the episodes of the environments in that Chromium only.
        screenshot: put a PNG of the viewport after every reset and step in
            ``info["screenshot"]`` (bytes); the text observation is unchanged.
        max_action_chars: longer actions are refused with an error observation.
        render_mode: None or 'ansi'.
    """

    def __init__(
        self,
        task: str | Path | BrowserTask,
        *,
        base_dir: str | Path | None = None,
        max_steps: int | None = None,
        chromium: str | None = None,
        action_timeout_s: float = 10.0,
        element_timeout_s: float = 1.0,
        viewport: tuple[int, int] = (1024, 768),
        trace: bool = False,
        contexts_per_browser: int = DEFAULT_CONTEXTS_PER_BROWSER,
        screenshot: bool = False,
        max_action_chars: int = 2_000,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(
            screenshot=screenshot, max_action_chars=max_action_chars, render_mode=render_mode
        )
        if isinstance(task, BrowserTask):
            self.task, self.base_dir = task, Path(base_dir or ".").resolve()
        else:
            self.task, self.base_dir = read_task(task)
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        self.max_steps = max_steps or self.task.max_steps
        require_playwright()
        self.chromium = find_chromium(chromium)
        self.action_timeout_s = action_timeout_s
        self.element_timeout_s = element_timeout_s
        self.viewport = tuple(viewport)
        self.trace = trace
        if contexts_per_browser < 1:
            raise ValueError(f"contexts_per_browser must be at least 1, got {contexts_per_browser}")
        self.contexts_per_browser = contexts_per_browser
        site = self.task.resolve_site(self.base_dir)
        self.server = StaticServer(site) if site is not None else None
        self.scripted_kinds = ("expert", "random") if self.task.solution else ("random",)
        self.toolkit: BrowserToolkit | None = None
        self.tool_specs = [tool_spec(t) for t in _schema_tools()]

    @property
    def instruction(self) -> str:
        return self.task.instruction

    def task_ids(self, split: str = "train") -> Sequence[str]:
        if split not in ("train", "test"):
            raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
        return list(TASK_IDS)

    @property
    def horizon(self) -> int:
        return self.max_steps

    # -- gymnasium ----------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        split, task_id = self._choose_task_id(options)
        site_origin = self.server.start() if self.server is not None else None
        url = self.task.url(site_origin)
        if self.browser is None:
            self.browser = BrowserSession(
                self.task.origins(site_origin),
                executable=self.chromium,
                action_timeout_s=self.action_timeout_s,
                element_timeout_s=self.element_timeout_s,
                viewport=self.viewport,
                contexts_per_browser=self.contexts_per_browser,
                name="browser-task",
            )
            self.browser.tracing = self.trace
            self.browser.start()
            self.toolkit = BrowserToolkit(self.browser)
        try:
            self.snapshot = self.browser.open(url)
        except BrowserFailure as first:
            logger.warning("opening %s failed (%s); trying once more", url, first)
            self.snapshot = self.browser.open(url)
        info = {"task_id": task_id, "split": split, "task": self.task.name, "url": url}
        return self._begin_episode(info)

    def _act(self, action: str, info: dict[str, Any]) -> tuple[float, bool, str, str]:
        if self.toolkit is None:
            raise RuntimeError("call reset() before step()")
        try:
            tool, arguments = self._read_action(action)
        except ValueError as exc:
            info["invalid_action"] = True
            return 0.0, False, str(exc), ""
        info["tool"] = tool.name
        tool.invoke(arguments)
        assert self.toolkit.last is not None
        self.snapshot = self.toolkit.last
        error, read = self.snapshot.error, self.snapshot.text
        info["invalid_action"] = bool(error)
        if self.check_success(info):
            return 1.0, True, error, read
        return 0.0, False, error, read

    def _read_action(self, action: str) -> tuple[BaseTool, dict[str, Any]]:
        """The tool an utterance calls and its validated arguments; ValueError if none."""
        assert self.toolkit is not None
        too_long = self._action_too_long(action)
        if too_long is not None:
            raise ValueError(too_long)
        try:
            call = parse_tool_call(action)
        except ActionParseError as exc:
            raise ValueError(str(exc)) from None
        tools = self.toolkit.by_name()
        tool = tools.get(call.name)
        if tool is None:
            raise ValueError(
                f"Error: unknown action {call.name!r}; the tools are {', '.join(tools)}."
            )
        try:
            return tool, bind_arguments(tool, call)
        except (ValueError, ValidationError) as exc:
            raise ValueError(f"Error: {exc}") from None

    def check_success(self, info: dict[str, Any] | None = None) -> bool:
        """Whether the page now passes the task's success check (a browser failure raises)."""
        assert self.browser is not None and self.snapshot is not None
        check: SuccessCheck = self.task.success
        if check.url_matches is not None:
            return re.search(check.url_matches, self.snapshot.url) is not None
        value = check.selector or check.text_present or check.javascript
        result = self.browser.evaluate(
            _CHECK_JS, {"kind": check.kind, "value": value, "state": check.state}
        )
        if result.get("error"):
            logger.warning("the success check of %s failed: %s", self.task.name, result["error"])
            if info is not None:
                info["check_error"] = str(result["error"])[:300]
        return bool(result.get("ok"))

    def _observe(self, error: str = "", read: str = "") -> str:
        assert self.snapshot is not None
        text = render_snapshot(replace(self.snapshot, error=error, text=read))
        return to_ascii(f"Instruction: {self.task.instruction}\n{text}")

    # -- recording ------------------------------------------------------------------------------
    def save_trace(self, path: str | Path) -> None:
        """Write this episode's Playwright trace (``trace=True``) to ``path`` (a .zip)."""
        if self.browser is None:
            raise RuntimeError("call reset() before save_trace()")
        self.browser.save_trace(str(path))

    def close(self) -> None:
        if self.browser is not None:
            self.browser.close()
            self.browser = None
        if self.server is not None:
            self.server.close()
        super().close()

    # -- scripted agents ------------------------------------------------------------------------
    def make_scripted_agent(self, kind: str, seed: int | None = None) -> ScriptedAgent:
        """'expert' (the task file's solution, where it has one) or 'random'."""
        self._check_kind(kind)
        if kind == "expert":
            return ExpertAgent(self)
        return RandomBrowserAgent(self, seed)


def _schema_tools() -> list[BaseTool]:
    """The browser tools, for their schemas only (no browser is started)."""
    return BrowserToolkit(None).tools
