"""Gymnasium registration of every archer environment, with lazy entry points.

Importing this module registers ids only; no environment module (and so no
browser or data set) is imported until `gymnasium.make` is called.
"""

from __future__ import annotations

import gymnasium as gym

NAMESPACE = "archer"

# (id, "module:Class") pairs; keyword arguments go through gymnasium.make(id, **kwargs).
ENVIRONMENTS: tuple[tuple[str, str], ...] = (
    (
        "archer/TwentyQuestions-v0",
        "archer_agents.environments.questions.twenty_questions:TwentyQuestionsEnv",
    ),
    (
        "archer/TwentyQuestionsMini-v0",
        "archer_agents.environments.questions.twenty_questions:TwentyQuestionsMiniEnv",
    ),
    ("archer/GuessMyCity-v0", "archer_agents.environments.questions.guess_my_city:GuessMyCityEnv"),
    ("archer/MiniShop-v0", "archer_agents.environments.minishop.env:MiniShopEnv"),
    ("archer/MiniShopBrowser-v0", "archer_agents.environments.minishop.browser:MiniShopBrowserEnv"),
    ("archer/SupportSim-v0", "archer_agents.environments.support.env:SupportSimEnv"),
)


MINIWOB_ENTRY_POINT = "archer_agents.environments.miniwob.env:MiniWoBEnv"
# MiniWoB++ tasks (archer/miniwob.<task>-v0), in real Chromium; what is left out and why is
# in environments/miniwob/tasks.py, which reads this list.
MINIWOB_TASKS: tuple[str, ...] = (
    "click-button",
    "click-button-sequence",
    "click-link",
    "click-option",
    "click-checkboxes",
    "click-dialog",
    "click-dialog-2",
    "click-tab",
    "click-test",
    "click-test-2",
    "click-widget",
    "enter-text",
    "enter-text-2",
    "enter-password",
    "focus-text",
    "focus-text-2",
    "login-user",
    "choose-list",
    "use-spinner",
    "unicode-test",
)


MINIWOB_SUITE_ID = f"{NAMESPACE}/miniwob.suite-v0"
"""Several MiniWoB++ tasks in one environment (``tasks=[...]``; task ids ``task:seed``)."""
MINIWOB_SUITE_ENTRY_POINT = "archer_agents.environments.miniwob.suite:MiniWoBSuiteEnv"

BROWSER_TASK_ID = f"{NAMESPACE}/BrowserTask-v0"
"""A browser task file in Chromium (``task=PATH``); the command line takes the path itself."""
BROWSER_TASK_ENTRY_POINT = "archer_agents.environments.browser_task.env:BrowserTaskEnv"


def register_all() -> None:
    """Register every environment once (safe to call repeatedly)."""
    for env_id, entry_point in ENVIRONMENTS:
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, disable_env_checker=True)
    if BROWSER_TASK_ID not in gym.registry:
        gym.register(
            id=BROWSER_TASK_ID, entry_point=BROWSER_TASK_ENTRY_POINT, disable_env_checker=True
        )
    if MINIWOB_SUITE_ID not in gym.registry:
        gym.register(
            id=MINIWOB_SUITE_ID, entry_point=MINIWOB_SUITE_ENTRY_POINT, disable_env_checker=True
        )
    for env_id, task in zip(miniwob_ids(), MINIWOB_TASKS, strict=True):
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point=MINIWOB_ENTRY_POINT,
                kwargs={"task": task},
                disable_env_checker=True,
            )


def miniwob_ids() -> list[str]:
    """The MiniWoB++ ids; not in `registered_ids`, as they need Chromium and ``miniwob``."""
    return [f"{NAMESPACE}/miniwob.{task}-v0" for task in MINIWOB_TASKS]


def registered_ids() -> list[str]:
    return [env_id for env_id, _ in ENVIRONMENTS]
