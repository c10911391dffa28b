"""What the browser environments share: an episode's bookkeeping and the end of a step.

`MiniWoBEnv` (`archer_agents.environments.miniwob.env`) and `BrowserTaskEnv`
(`archer_agents.environments.browser_task.env`) differ in how an action is read
and carried out and in how success is judged. Everything around that is the
same for both and lives here, once: the checks before a step, a browser failure
ending the episode, the error shown to the model, truncation at the horizon,
``info["success"]`` at the end, the blocked-request count, the observation,
the chat history and, when asked for, a screenshot.

A subclass sets ``browser`` and ``snapshot`` in its reset, ends the reset with
`_begin_episode`, and implements `_act` (one action), `_observe` (the text the
model reads) and `horizon`.

Screenshots: with ``screenshot=True`` every reset and step puts a PNG of the
viewport, as the page looks after it, in ``info["screenshot"]`` (``bytes``; the
image is the viewport's size). The text observation is the same with or without
it, so text policies are unaffected and a multimodal one reads both. After a
browser failure there is no page to show: ``info["screenshot"]`` is None.
"""

from __future__ import annotations

from typing import Any

from archer_agents.environments.base import TextEnv
from archer_agents.tools.browser.confined import BrowserFailure
from archer_agents.tools.browser.session import BrowserSession, PageSnapshot


class BrowserTextEnv(TextEnv):
    """Base class of the browser environments: a step's frame around `_act`.

    Args:
        screenshot: put a PNG of the page after every reset and step in
            ``info["screenshot"]``.
        max_action_chars: longer actions are refused with an error observation.
        render_mode: None or 'ansi'.
    """

    text_layout = "page"

    def __init__(
        self, *, screenshot: bool = False, max_action_chars: int, render_mode: str | None
    ) -> None:
        super().__init__(max_action_chars=max_action_chars, render_mode=render_mode)
        self.screenshot_in_info = screenshot
        self.browser: BrowserSession | None = None
        self.snapshot: PageSnapshot | None = None
        """The page as the agent saw it last (what scripted agents read)."""
        self.turn = 0
        self._done = False

    @property
    def horizon(self) -> int:
        """Actions after which an episode that has not ended is truncated."""
        raise NotImplementedError

    @property
    def blocked_requests(self) -> int:
        """Requests off the allowed origins blocked in this episode."""
        return self.browser.blocked_requests if self.browser is not None else 0

    # -- what a subclass implements -----------------------------------------------------------
    def _act(self, action: str, info: dict[str, Any]) -> tuple[float, bool, str, str]:
        """Carry out ``action``: (reward, terminated, error shown to the model, text read).

        A mistake of the model is an error (and ``info["invalid_action"]``), not an
        exception; a `BrowserFailure` raised here ends the episode as failed.
        """
        raise NotImplementedError

    def _observe(self, error: str = "", read: str = "") -> str:
        """The observation of the page now (`snapshot`), with the text read and the error."""
        raise NotImplementedError

    # -- the frame ------------------------------------------------------------------------------
    def _begin_episode(self, info: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """End a reset whose page is open: turn 0, the first observation, the chat."""
        self.turn = 0
        self._done = False
        self._last_observation = self._observe()
        self._chat = [{"role": "user", "content": self._last_observation}]
        info["blocked_requests"] = self.blocked_requests
        if self.screenshot_in_info:
            info["screenshot"] = self.screenshot()
        return self._last_observation, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.browser is None or self.snapshot is None:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError("the episode is over; call reset() to start a new one")
        self.turn += 1
        info: dict[str, Any] = {"invalid_action": False, "tool_error": False}
        reward, terminated, error, read = 0.0, False, "", ""
        try:
            reward, terminated, error, read = self._act(action, info)
            if self.screenshot_in_info:
                info["screenshot"] = self.screenshot()
        except BrowserFailure as exc:
            error = f"Error: the browser failed ({exc}); the episode ends."
            terminated = True
            info.update(tool_error=True, failure=str(exc), failure_kind=exc.kind)
            if self.screenshot_in_info:
                info["screenshot"] = None
        return self._end_step(
            action, info, reward=reward, terminated=terminated, error=error, read=read
        )

    def _end_step(
        self,
        action: str,
        info: dict[str, Any],
        *,
        reward: float,
        terminated: bool,
        error: str,
        read: str,
    ) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """The end of every step: the error, truncation at the horizon, success when the
        episode is over, the blocked-request count, the observation and the chat."""
        if error:
            info["error"] = error
        truncated = not terminated and self.turn >= self.horizon
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

    # -- recording ------------------------------------------------------------------------------
    def screenshot(self) -> bytes:
        """A PNG of the viewport as the page looks now."""
        if self.browser is None:
            raise RuntimeError("call reset() before screenshot()")
        return self.browser.screenshot()


__all__ = ["BrowserTextEnv"]
