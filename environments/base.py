"""The text-environment contract every archer environment follows.

A `TextEnv` is a `gymnasium.Env` whose observations and actions are strings.
Episodes are drawn from fixed task splits: ``reset(options={"split": "test",
"task_id": ...})`` picks one; without a task id a task of the split is drawn
from the seeded generator. When an episode ends, ``info["success"]`` says
whether it was won. Per-step diagnostics live in ``info`` under fixed keys:

- ``invalid_action``: the utterance could not be understood (unparsable, unknown
  tool, an invalid question, too long);
- ``tool_error``: a well-formed tool call failed (bad arguments, the tool raised);
- ``error``: the message shown to the agent for either, else absent.

Every environment also builds scripted agents (``expert``, ``weak``,
``random``) for behaviour-cloning data, tests and baselines.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from gymnasium import spaces

SPLITS = ("train", "test")

TEXT_CHARSET = frozenset(string.printable)
"""Characters our text spaces admit: printable ASCII plus whitespace."""

MAX_OBSERVATION_CHARS = 200_000
DEFAULT_MAX_ACTION_CHARS = 2_000


def text_space(max_length: int) -> spaces.Text:
    """A Gymnasium `Text` space over printable ASCII, possibly empty."""
    return spaces.Text(max_length=max_length, min_length=0, charset=TEXT_CHARSET)


_OUTSIDE_CHARSET = re.compile(r"[^\t\n\r\x0b\x0c\x20-\x7e]")
"""Any character not in `TEXT_CHARSET` (a regex is ~10x faster than a per-character loop)."""


def to_ascii(text: str) -> str:
    """Map text into `TEXT_CHARSET` so observations always lie in the space."""
    return _OUTSIDE_CHARSET.sub("?", text)


class ScriptedAgent(Protocol):
    """A non-learning agent that plays one episode at a time in one environment."""

    def reset(self, observation: str, info: dict[str, Any]) -> None:
        """Start a new episode (called right after the environment's reset)."""
        ...

    def act(self, observation: str) -> str:
        """The next utterance."""
        ...


class UnknownTaskError(KeyError):
    """A task id that is not in the requested split."""

    def __str__(self) -> str:
        return str(self.args[0])


class TextEnv(gym.Env[str, str]):
    """Base class: text spaces, task splits and scripted agents."""

    metadata: dict[str, Any] = {"render_modes": ["ansi"]}  # noqa: RUF012  (Gymnasium's name)
    scripted_kinds: tuple[str, ...] = ("expert", "weak", "random")
    """The scripted agents `make_scripted_agent` builds (an environment may offer fewer)."""
    text_layout: str = "transcript"
    """How the text observation lays out the episode, for the embedded chat template
    (`archer_agents.formats.chat_templates.EMBEDDED_CHAT_TEMPLATE`): ``transcript`` (every
    message, in the tool environments' format), ``questions`` or ``page`` (the latest one)."""

    def __init__(
        self,
        *,
        max_action_chars: int = DEFAULT_MAX_ACTION_CHARS,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode {render_mode!r} is not supported; use one of "
                f"{self.metadata['render_modes']} or None"
            )
        self.render_mode = render_mode
        self.max_action_chars = max_action_chars
        self.observation_space = text_space(MAX_OBSERVATION_CHARS)
        # The action space admits more than the limit so over-long actions can be
        # sent and rejected with an error observation rather than a crash.
        self.action_space = text_space(max_action_chars * 4)
        self._last_observation = ""
        self._chat: list[dict[str, Any]] = []
        self.tool_specs: list[dict[str, Any]] = []
        """The tools offered to the model (OpenAI function specs); empty for plain dialogue."""

    # -- chat -----------------------------------------------------------------
    def chat_messages(self) -> list[dict[str, Any]]:
        """The episode so far as chat messages, for a model that reads its own chat template.

        An optional ``system`` message (how to act), a ``user`` message (the
        task), then per turn the agent's ``assistant`` message (its utterance,
        exactly as said) and what came back: a ``tool`` result, or a ``user``
        message (an answer, a customer's reply, the next page). The text
        observation renders the same episode in the project's own format, which
        the critic reads; a chat policy renders these messages with its template
        (`archer_agents.formats.conversation`).
        """
        return [dict(message) for message in self._chat]

    @property
    def chat_template_kwargs(self) -> dict[str, Any]:
        """Variables for the policy's chat template (vLLM's ``chat_template_kwargs``).

        The embedded template reads ``text_layout`` and renders the chat messages
        exactly as this environment's text observation; other templates ignore it.
        """
        return {"text_layout": self.text_layout}

    # -- tasks --------------------------------------------------------------
    def task_ids(self, split: str = "train") -> Sequence[str]:
        """The fixed task ids of a split (``train`` or ``test``)."""
        raise NotImplementedError

    def _choose_task_id(self, options: dict[str, Any] | None) -> tuple[str, str]:
        """Resolve ``options`` into (split, task_id), drawing one when not given."""
        options = dict(options or {})
        split = options.pop("split", "train")
        task_id = options.pop("task_id", None)
        if options:
            raise ValueError(
                f"unknown reset option(s) {sorted(options)}; supported: 'split', 'task_id'"
            )
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
        ids = self.task_ids(split)
        if task_id is None:
            task_id = ids[int(self.np_random.integers(len(ids)))]
        elif str(task_id) not in set(ids):
            raise UnknownTaskError(
                f"task {task_id!r} is not in the {split} split "
                f"({len(ids)} tasks, e.g. {list(ids[:3])})"
            )
        return split, str(task_id)

    # -- scripted agents ----------------------------------------------------
    def make_scripted_agent(self, kind: str, seed: int | None = None) -> ScriptedAgent:
        """Build a scripted agent of ``kind`` (one of `scripted_kinds`) for this env."""
        raise NotImplementedError

    def _check_kind(self, kind: str) -> None:
        if kind not in self.scripted_kinds:
            raise ValueError(
                f"unknown scripted agent {kind!r} for {type(self).__name__}; "
                f"use one of {self.scripted_kinds}"
            )

    # -- helpers ------------------------------------------------------------
    def _action_too_long(self, action: str) -> str | None:
        if len(action) > self.max_action_chars:
            return (
                f"Error: the action is {len(action)} characters long; "
                f"the limit is {self.max_action_chars}."
            )
        return None

    def render(self) -> str | None:  # type: ignore[override]
        if self.render_mode == "ansi":
            return self._last_observation
        return None


def random_choice(rng: np.random.Generator, items: Sequence[Any] | np.ndarray) -> Any:
    """One item of a non-empty sequence, drawn with `rng`."""
    return items[int(rng.integers(len(items)))]
