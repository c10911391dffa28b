"""MiniWoB++ tasks in real headless Chromium, as text environments.

The task pages of the ``miniwob`` package (``pip install 'archer-agents[browser]'``)
are served from its ``html/`` folder by a local HTTP server on 127.0.0.1 and
loaded in a confined Chromium (`archer_agents.tools.browser.session`). Each
reset opens the task page in a fresh browser context, seeds it
(``Math.seedrandom(seed)``; the task id is the seed), lifts the page's time limit
(``core.EPISODE_MAX_TIME``) so that slow models are not penalised, and starts the
episode (``core.startEpisodeReal()``).

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

Which tasks are registered, and which are left out and why, is in
`archer_agents.environments.miniwob.tasks`.
"""

from __future__ import annotations

import importlib.resources
import logging
from collections.abc import Sequence
from typing import Any

from archer_agents.environments.base import ScriptedAgent, TextEnv, to_ascii
from archer_agents.environments.browser_random import RandomBrowserAgent
from archer_agents.environments.miniwob.tasks import SOLVERS, TASKS, TEST_SEEDS, TRAIN_SEEDS
from archer_agents.formats.tool_calls import ActionParseError, bind_positional, parse_tool_call
from archer_agents.tools.browser.chromium import find_chromium, require_playwright
from archer_agents.tools.browser.confined import BrowserFailure
from archer_agents.tools.browser.session import BrowserSession, PageAction, PageSnapshot
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
  Math.seedrandom(arg.seed);
  core.EPISODE_MAX_TIME = arg.maxTime;
  core.startEpisodeReal();
  return WOB_TASK_READY;
}"""
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


class MiniWoBEnv(TextEnv):
    """One MiniWoB++ task in headless Chromium.

    Args:
        task: the task's name (its page is ``miniwob/<task>.html``).
        max_turns: the horizon; reaching it before the page ends the episode truncates it.
        chromium: path or name of the Chromium binary (default: ``$ARCHER_CHROMIUM``,
            then ``chromium`` on PATH).
        action_timeout_s: deadline of one browser operation; past it the browser is
            considered hung, restarted, and the episode fails.
        element_timeout_s: how long an action waits for its element before it is
            reported as the model's mistake.
        viewport: browser viewport (width, height).
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
        max_action_chars: int = 2_000,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(max_action_chars=max_action_chars, render_mode=render_mode)
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
        self.server = StaticServer(self.root)
        self.browser: BrowserSession | None = None
        self.instruction = ""
        self.snapshot: PageSnapshot | None = None
        """The page as the agent saw it last (what scripted agents read)."""
        self.turn = 0
        self._done = False

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
    def blocked_requests(self) -> int:
        return self.browser.blocked_requests if self.browser is not None else 0

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
            self._open(url, int(task_id))
        except BrowserFailure as first:
            logger.warning("opening a MiniWoB++ episode failed (%s); trying once more", first)
            self._open(url, int(task_id))
        self.turn = 0
        self._done = False
        self._last_observation = self._observe("", "")
        self._chat = [{"role": "user", "content": self._last_observation}]
        info = {
            "task_id": task_id,
            "split": split,
            "task": self.task,
            "url": url,
            "blocked_requests": self.blocked_requests,
        }
        return self._last_observation, info

    def _open(self, url: str, seed: int) -> None:
        assert self.browser is not None
        self.browser.open(url)
        self.browser.evaluate(_START_JS, {"seed": seed, "maxTime": 10**9})
        self.instruction = str(self.browser.evaluate(_UTTERANCE_JS))
        self.snapshot = self.browser.snapshot()

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.browser is None or self.snapshot is None:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError("the episode is over; call reset() to start a new one")
        self.turn += 1
        info: dict[str, Any] = {"invalid_action": False, "tool_error": False}
        error, read = "", ""
        reward, terminated = 0.0, False
        try:
            too_long = self._action_too_long(action)
            if too_long is not None:
                raise ValueError(too_long)
            page_action = parse_action(action)
        except ValueError as exc:
            error = str(exc)
            info["invalid_action"] = True
        else:
            try:
                self.snapshot = self.browser.act(page_action)
                error, read = self.snapshot.error, self.snapshot.text
                if error:
                    info["invalid_action"] = True
                state = self.browser.evaluate(_STATE_JS)
                if state["done"]:
                    terminated = True
                    reward = 1.0 if float(state["raw"]) > 0 else 0.0
                    info["raw_reward"] = float(state["raw"])
                    info["reward_reason"] = state["reason"]
            except BrowserFailure as exc:
                error = f"Error: the browser failed ({exc}); the episode ends."
                terminated = True
                info["tool_error"] = True
                info["failure"] = str(exc)
                info["failure_kind"] = exc.kind
        if error:
            info["error"] = error
        truncated = not terminated and self.turn >= self.max_turns
        if terminated or truncated:
            self._done = True
            info["success"] = reward >= 1.0
        info["blocked_requests"] = self.blocked_requests
        self._last_observation = self._observe(error, read)
        self._chat += [
            {"role": "assistant", "content": action},
            {"role": "user", "content": self._last_observation},
        ]
        return self._last_observation, reward, terminated, truncated, info

    def _observe(self, error: str, read: str) -> str:
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
