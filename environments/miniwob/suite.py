"""Several MiniWoB++ tasks as one environment, for training one policy on a selection.

A task id names the task and its seed, ``"click-button:17"``; the train and test
splits are every task of the selection crossed with `TRAIN_SEEDS` or `TEST_SEEDS`,
so a test episode is an instance no training episode saw. A reset switches the
page to the id's task when it differs from the last one (the browser and its
context stay), then plays it exactly as `MiniWoBEnv` plays a single task; its
``info`` names the task (``info["task"]``) so results can be read per task.

Registered as ``archer/miniwob.suite-v0`` with `DEFAULT_SELECTION`, the tasks that
have scripted solvers (`SOLVERS`): behaviour cloning has expert play for each.
``gymnasium.make("archer/miniwob.suite-v0", tasks=[...])`` picks others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from archer_agents.environments.miniwob.env import MiniWoBEnv
from archer_agents.environments.miniwob.tasks import SOLVERS, TASKS, TEST_SEEDS, TRAIN_SEEDS

DEFAULT_SELECTION: tuple[str, ...] = ("click-button", "click-link", "click-option", "enter-text")
"""Tasks with scripted solvers that random play seldom wins (click-dialog and focus-text it
always wins): clicking the named element, choosing an option, typing the given text."""


def split_task_id(task_id: str) -> tuple[str, str]:
    """``"click-button:17"`` -> ``("click-button", "17")``."""
    task, sep, seed = str(task_id).rpartition(":")
    if not sep or not task or not seed.isdigit():
        raise ValueError(f"a suite task id is 'task:seed', e.g. 'click-button:17', not {task_id!r}")
    return task, seed


class MiniWoBSuiteEnv(MiniWoBEnv):
    """A selection of MiniWoB++ tasks in one browser; task ids are ``task:seed``.

    Args:
        tasks: the selection, each a registered task (`TASKS`); default `DEFAULT_SELECTION`.
        **kwargs: as for `MiniWoBEnv` (``max_turns``, ``chromium``, timeouts, ...).
    """

    def __init__(self, tasks: Sequence[str] = DEFAULT_SELECTION, **kwargs: Any) -> None:
        selection = tuple(dict.fromkeys(tasks))
        if not selection:
            raise ValueError("a MiniWoB++ suite needs at least one task")
        unknown = [task for task in selection if task not in TASKS]
        if unknown:
            raise ValueError(f"unknown MiniWoB++ task(s) {unknown}; registered: {', '.join(TASKS)}")
        self.selection = selection
        self._suite_task_id = ""
        super().__init__(selection[0], **kwargs)
        self._ids = {
            "train": [f"{t}:{s}" for s in TRAIN_SEEDS for t in selection],
            "test": [f"{t}:{s}" for s in TEST_SEEDS for t in selection],
        }

    def use_task(self, task: str) -> None:
        super().use_task(task)
        # the suite offers what all its tasks offer (``selection`` is set before any use_task)
        solved = all(t in SOLVERS for t in self.selection)
        self.scripted_kinds = ("expert", "random") if solved else ("random",)

    def task_ids(self, split: str = "train") -> Sequence[str]:
        if split not in self._ids:
            raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
        return self._ids[split]

    def _choose_task_id(self, options: dict[str, Any] | None) -> tuple[str, str]:
        """Draw or check a ``task:seed`` id, switch to its task, and hand the seed on."""
        split, task_id = super()._choose_task_id(options)
        task, instance = split_task_id(task_id)
        if task != self.task:
            self.use_task(task)
        self._suite_task_id = task_id
        return split, instance

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        observation, info = super().reset(seed=seed, options=options)
        info["task_id"] = self._suite_task_id
        return observation, info
