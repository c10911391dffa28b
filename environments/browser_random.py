"""The random agent of the browser environments (MiniWoB++ and task files).

It acts on the elements of the environment's latest accessibility snapshot:
mostly clicks, a word typed into a text box, an option chosen in a select,
and now and then Enter. Its success is each task's floor.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from archer_agents.tools.browser.session import PageSnapshot


class _HasSnapshot(Protocol):
    snapshot: PageSnapshot | None


class RandomBrowserAgent:
    """Random actions on the listed elements: click (mostly), fill, select, press Enter."""

    WORDS = ("hello", "submit", "yes", "test", "abc")

    def __init__(self, env: _HasSnapshot, seed: int | None) -> None:
        self.env = env
        self.rng = np.random.default_rng(seed)

    def reset(self, observation: str, info: dict[str, Any]) -> None:
        pass

    def act(self, observation: str) -> str:
        snapshot = self.env.snapshot
        elements = list(snapshot.elements) if snapshot is not None else []
        if not elements or self.rng.random() < 0.05:
            return 'press("Enter")'
        element = elements[int(self.rng.integers(len(elements)))]
        if element.role == "textbox" and self.rng.random() < 0.7:
            word = self.WORDS[int(self.rng.integers(len(self.WORDS)))]
            return f"fill({element.element_id!r}, {word!r})"
        if element.role == "combobox" and element.options:
            option = element.options[int(self.rng.integers(len(element.options)))]
            return f"select_option({element.element_id!r}, {option!r})"
        return f"click({element.element_id!r})"


__all__ = ["RandomBrowserAgent"]
