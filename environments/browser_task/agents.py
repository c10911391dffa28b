"""Scripted agents for task files: the file's own solution, and random play.

The expert follows the task file's ``solution``: each step names its element
by role and name, found in the page the agent sees at that step (ids change
from page to page, names do not), so a solution written once plays any
episode of its task. The random agent clicks, fills and selects among the
listed elements, for baselines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from archer_agents.environments.browser_task.taskfile import SolutionStep
from archer_agents.tools.browser.session import PageSnapshot

if TYPE_CHECKING:
    from archer_agents.environments.browser_task.env import BrowserTaskEnv

IDLE = "read_text()"
"""What a scripted agent does when it has nothing to do (reads the page, changes nothing)."""


def step_action(step: SolutionStep, snapshot: PageSnapshot) -> str:
    """The call that carries out ``step`` on ``snapshot``; ``read_text()`` if its element
    is not on the page."""
    if step.action == "press":
        return f"press({step.text!r})"
    if step.action == "scroll":
        return f"scroll({step.dx}, {step.dy})"
    if step.action == "go_back":
        return "go_back()"
    if step.action == "goto":
        return f"goto({step.text!r})"
    matches = snapshot.find(step.role, step.name)
    if not matches:
        return IDLE
    element_id = matches[0].element_id
    if step.action == "click":
        return f"click({element_id!r})"
    if step.action == "read_text":
        return f"read_text({element_id!r})"
    return f"{step.action}({element_id!r}, {step.text!r})"


class ExpertAgent:
    """Plays the task file's solution, one step a turn."""

    def __init__(self, env: BrowserTaskEnv) -> None:
        self.env = env
        self._next = 0

    def reset(self, observation: str, info: dict[str, Any]) -> None:
        self._next = 0

    def act(self, observation: str) -> str:
        steps = self.env.task.solution
        if self._next >= len(steps) or self.env.snapshot is None:
            return IDLE
        step = steps[self._next]
        self._next += 1
        return step_action(step, self.env.snapshot)
