"""MiniWoB++ tasks in real headless Chromium, as text environments.

The task pages of the ``miniwob`` package (``pip install 'archer-agents[browser]'``)
are served from its ``html/`` folder by a local HTTP server on 127.0.0.1 and
loaded in a confined Chromium (`archer_agents.tools.browser.session`). A reset
seeds the task page (``Math.seedrandom(seed)``; the task id is the seed), lifts
its time limit (``core.EPISODE_MAX_TIME``) so that slow models are not
penalised, and starts the episode (``core.startEpisodeReal()``).

MiniWoB++ pages are made to play episode after episode without a reload (each
``genProblem`` clears the last problem), so when the page of the task is still
open a reset restarts the episode in it (`BrowserSession.restart_episode`): the last
episode's timers are stopped, the reward display and episode count are put back
as a fresh page has them, nothing is focused or scrolled, storage and history
are cleared, the elements are numbered afresh, and the seed is applied as on a
fresh load, so a seed gives the same instance, instruction and element ids
either way (``tests/test_browser_miniwob_restart.py``). The page is loaded
again when the task changed, when the page is another one (the model navigated
away), when it is not a MiniWoB++ page, or when the restart fails (logged).
``restart_in_page=False`` always reloads; `last_reset` says which it was.

Observation: the instruction (``core.getUtterance()``), the URL, and the page as
an element tree with ids (``[3] button "Submit"``); a mistaken action's error is
the last line. Actions, as calls: ``click("3")``, ``fill("3", "text")``,
``select_option("3", "value")``, ``press("Enter")``, ``scroll(0, 200)``,
``go_back()``, ``goto("url")``, ``read_text()`` / ``read_text("3")``. The episode
ends when the page says so (``WOB_DONE_GLOBAL``); the reward is 1 when the page's
raw reward (``WOB_RAW_REWARD_GLOBAL``) is positive, else 0, as in BrowserGym.
After ``max_turns`` actions it is truncated with reward 0. Requests to other
origins are blocked and counted (``info["blocked_requests"]``); a browser crash
or hang ends the episode as failed (``info["failure"]``) and the browser restarts.
With ``screenshot=True``, ``info["screenshot"]`` holds a PNG of the viewport after
each reset and step (`archer_agents.environments.browser_env`).

Which tasks are registered, and which are left out and why, is in
`archer_agents.environments.miniwob.tasks`.
"""

from __future__ import annotations

import importlib.resources
import logging
from collections.abc import Sequence
from typing import Any

from archer_agents.environments.base import ScriptedAgent, to_ascii
from archer_agents.environments.browser_env import BrowserTextEnv
from archer_agents.environments.browser_random import RandomBrowserAgent
from archer_agents.environments.miniwob.tasks import SOLVERS, TASKS, TEST_SEEDS, TRAIN_SEEDS
from archer_agents.formats.tool_calls import ActionParseError, bind_positional, parse_tool_call
from archer_agents.tools.browser.chromium import find_chromium, require_playwright
from archer_agents.tools.browser.confined import BrowserFailure
from archer_agents.tools.browser.session import BrowserSession, PageAction
from archer_agents.tools.browser.static import StaticServer

logger = logging.getLogger(__name__)

DEFAULT_MAX_TURNS = 10
IGNORED = "#sync-task-cover, #reward-display, #click-canvas, #query"
"""MiniWoB's own display (start cover, last reward, click marks, instruction)."""
ACTION_HELP = (
    'Actions: click("id"), fill("id", "text"), select_option("id", "value"), '
    'press("Enter"), scroll(dx, dy), go_back(), goto("url"), read_text("id").'
)
_PARAMETERS: dict[str, tuple[str, ...]] = {
    "click": ("element_id",),
    "fill": ("element_id", "text"),
    "select_option": ("element_id", "value"),
    "press": ("key",),
    "scroll": ("dx", "dy"),
    "go_back": (),
    "goto": ("url",),
    "read_text": ("element_id",),
}
_OPTIONAL = {"read_text": {"element_id"}}
_START_JS = """(arg) => {
  if (typeof core === 'undefined' || typeof core.startEpisodeReal !== 'function' ||
      typeof genProblem !== 'function' || !document.getElementById('reward-display')) {
    return false;
  }
  if (core.EP_TIMER !== null) { clearTimeout(core.EP_TIMER); core.EP_TIMER = null; }
  core.clearTimer();
  core.wob_latest = '-';
  core.wob_scores = [];
  WOB_EPISODE_ID = 0;
  document.getElementById('reward-display').innerHTML = core.DISPLAY_HTML;
  core.reloadDisplay();
  for (const el of document.querySelectorAll('[data-tampered], [data-wob_ref]')) {
    delete el.dataset.tampered; delete el.dataset.wob_ref; delete el.dataset.wob_eps;
  }
  Math.seedrandom(arg.seed);
  core.EPISODE_MAX_TIME = arg.maxTime;
  core.startEpisodeReal();
  return WOB_DONE_GLOBAL === false;
}"""
"""Start an episode of a loaded task page, fresh or after an earlier episode in it.

The same script on both paths is what makes a seed give the same instance: the
last episode's time limit and countdown are stopped (``core.startEpisodeReal``
would start new ones beside a countdown still running), the reward display,
its scores and the episode count (``WOB_EPISODE_ID``) are put back as a fresh
page has them, as are the per-episode marks of MiniWoB's own DOM reader; then
the page's generator is seeded and the episode started. False when the page is
not a MiniWoB++ task page (then it is loaded again).
"""
_STATE_JS = """() => (typeof WOB_DONE_GLOBAL === 'undefined'
  ? {done: false, raw: 0, reward: 0, reason: 'not a task page'}
  : {done: WOB_DONE_GLOBAL, raw: WOB_RAW_REWARD_GLOBAL,
     reward: WOB_REWARD_GLOBAL, reason: WOB_REWARD_REASON})"""
_UTTERANCE_JS = """() => { const u = core.getUtterance();
  return (u && typeof u === 'object') ? u.utterance : String(u); }"""


def miniwob_html_root() -> str:
    """The ``html/`` folder of the installed ``miniwob`` package."""
    try:
        root = importlib.resources.files("miniwob") / "html"
    except ModuleNotFoundError as exc:
        raise ImportError(
            "MiniWoB++ environments need the miniwob package: pip install 'archer-agents[browser]'"
        ) from exc
    return str(root)


def parse_action(text: str) -> PageAction:
    """Parse a call into a `PageAction`; ValueError (fit to show the model) if not one."""
    try:
        call = parse_tool_call(text)
    except ActionParseError as exc:
        raise ValueError(f"{exc} {ACTION_HELP}") from exc
    parameters = _PARAMETERS.get(call.name)
    if parameters is None:
        raise ValueError(f"Error: unknown action {call.name!r}. {ACTION_HELP}")
    try:
        args = bind_positional(call, parameters)
    except ActionParseError as exc:
        raise ValueError(f"{exc} {ACTION_HELP}") from exc
    extra = set(args) - set(parameters)
    missing = set(parameters) - set(args) - _OPTIONAL.get(call.name, set())
    if extra or missing:
        raise ValueError(
            f"Error: {call.name} takes ({', '.join(parameters)}); got {sorted(args)}. {ACTION_HELP}"
        )
    if call.name == "scroll":
        try:
            dx, dy = int(args["dx"]), int(args["dy"])
        except (TypeError, ValueError):
            raise ValueError("Error: scroll takes two whole numbers: scroll(0, 200).") from None
        return PageAction("scroll", dx=dx, dy=dy)
    for name, value in args.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"Error: argument {name!r} of {call.name} must be a string.")
    element_id = str(args.get("element_id", ""))
    text_arg = str(args.get("text", args.get("value", args.get("key", args.get("url", "")))))
    return PageAction(call.name, element_id=element_id, text=text_arg)


class MiniWoBEnv(BrowserTextEnv):
    """One MiniWoB++ task in headless Chromium.

    Args:
        task: the task's name (its page is ``miniwob/<task>.html``).
        max_turns: the horizon; reaching it before the page ends the episode truncates it.
        chromium: path or name of the Chromium binary (default: ``$ARCHER_CHROMIUM``,
            then ``chromium`` on PATH).
        action_timeout_s: deadline of one browser operation; past it the browser is
            considered hung, restarted, and the episode fails.
        element_timeout_s: how long ``read_text`` waits for its element (click, fill
            and select check theirs in the page at once; `BrowserSession`).
        viewport: browser viewport (width, height).
        screenshot: put a PNG of the viewport after every reset and step in
            ``info["screenshot"]`` (bytes); the text observation is unchanged.
        restart_in_page: restart an episode of the same task in its open page rather
            than loading the page again (the same instance for a seed either way).
        max_action_chars: longer actions are refused with an error observation.
        render_mode: None or 'ansi'.
    """

    def __init__(
        self,
        task: str = "click-button",
        *,
        max_turns: int = DEFAULT_MAX_TURNS,
        chromium: str | None = None,
        action_timeout_s: float = 10.0,
        element_timeout_s: float = 1.0,
        viewport: tuple[int, int] = (800, 600),
        screenshot: bool = False,
        restart_in_page: bool = True,
        max_action_chars: int = 2_000,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(
            screenshot=screenshot, max_action_chars=max_action_chars, render_mode=render_mode
        )
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")
        self.root = miniwob_html_root()
        require_playwright()
        self.use_task(task)
        self.max_turns = max_turns
        self.chromium = find_chromium(chromium)
        self.action_timeout_s = action_timeout_s
        self.element_timeout_s = element_timeout_s
        self.viewport = viewport
        self.restart_in_page = restart_in_page
        self.server = StaticServer(self.root)
        self.instruction = ""
        self.last_reset = ""
        """How the last reset began its episode: 'restart' (in the open page) or 'load'."""

    # -- tasks ------------------------------------------------------------------------------
    def use_task(self, task: str) -> None:
        """Play ``task`` from the next reset on, in the same browser (tests, benchmarks)."""
        page = importlib.resources.files("miniwob") / "html" / "miniwob" / f"{task}.html"
        if not page.is_file():
            raise ValueError(f"no MiniWoB++ task {task!r} (registered: {', '.join(TASKS)})")
        self.task = task
        self.scripted_kinds = ("expert", "random") if task in SOLVERS else ("random",)
        self.snapshot = None

    def task_ids(self, split: str = "train") -> Sequence[str]:
        if split == "train":
            return [str(seed) for seed in TRAIN_SEEDS]
        if split == "test":
            return [str(seed) for seed in TEST_SEEDS]
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")

    @property
    def horizon(self) -> int:
        return self.max_turns

    # -- gymnasium ----------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        split, task_id = self._choose_task_id(options)
        origin = self.server.start()
        if self.browser is None:
            self.browser = BrowserSession(
                origin,
                executable=self.chromium,
                action_timeout_s=self.action_timeout_s,
                element_timeout_s=self.element_timeout_s,
                viewport=self.viewport,
                ignore_selector=IGNORED,
                name="miniwob",
            )
            self.browser.start()
        url = f"{origin}/miniwob/{self.task}.html"
        try:
            self._start(url, int(task_id))
        except BrowserFailure as first:
            logger.warning("opening a MiniWoB++ episode failed (%s); trying once more", first)
            self._start(url, int(task_id), restart=False)
        info = {"task_id": task_id, "split": split, "task": self.task, "url": url}
        return self._begin_episode(info)

    def _start(self, url: str, seed: int, restart: bool = True) -> None:
        """Begin the episode of ``seed``: restarted in the open page of the task where
        that works (`BrowserSession.restart_episode`), else on the page loaded afresh."""
        assert self.browser is not None
        arg = {"seed": seed, "maxTime": 10**9}
        snapshot = None
        if restart and self.restart_in_page:
            snapshot = self.browser.restart_episode(url, _START_JS, arg)
        if snapshot is None:
            snapshot = self.browser.open(url, _START_JS, arg)
            self.last_reset = "load"
        else:
            self.last_reset = "restart"
        self.instruction = str(self.browser.evaluate(_UTTERANCE_JS))
        self.snapshot = snapshot

    def _act(self, action: str, info: dict[str, Any]) -> tuple[float, bool, str, str]:
        assert self.browser is not None
        try:
            too_long = self._action_too_long(action)
            if too_long is not None:
                raise ValueError(too_long)
            page_action = parse_action(action)
        except ValueError as exc:
            info["invalid_action"] = True
            return 0.0, False, str(exc), ""
        self.snapshot = self.browser.act(page_action)
        error, read = self.snapshot.error, self.snapshot.text
        if error:
            info["invalid_action"] = True
        state = self.browser.evaluate(_STATE_JS)
        if not state["done"]:
            return 0.0, False, error, read
        info["raw_reward"] = float(state["raw"])
        info["reward_reason"] = state["reason"]
        return (1.0 if float(state["raw"]) > 0 else 0.0), True, error, read

    def _observe(self, error: str = "", read: str = "") -> str:
        assert self.snapshot is not None
        lines = [f"Instruction: {self.instruction}", f"URL: {self.snapshot.url}", "Page:"]
        lines.append(self.snapshot.tree() or "(nothing visible)")
        if read:
            lines.append(f"Text: {read}")
        if error:
            lines.append(error)
        return to_ascii("\n".join(lines))

    def close(self) -> None:
        if self.browser is not None:
            self.browser.close()
            self.browser = None
        self.server.close()
        super().close()

    # -- scripted agents ------------------------------------------------------------------------
    def make_scripted_agent(self, kind: str, seed: int | None = None) -> ScriptedAgent:
        """'expert' (a task's scripted solver, where it has one) or 'random'."""
        self._check_kind(kind)
        if kind == "expert":
            return ExpertAgent(self)
        return RandomBrowserAgent(self, seed)


class ExpertAgent:
    """Plans the whole episode from the instruction and the first snapshot (`SOLVERS`)."""

    def __init__(self, env: MiniWoBEnv) -> None:
        self.env = env
        self._plan: list[str] = []

    def reset(self, observation: str, info: dict[str, Any]) -> None:
        assert self.env.snapshot is not None
        solver = SOLVERS[self.env.task]
        self._plan = list(solver(self.env.instruction, self.env.snapshot))

    def act(self, observation: str) -> str:
        return self._plan.pop(0) if self._plan else 'press("Enter")'
