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


def register_all() -> None:
    """Register every environment once (safe to call repeatedly)."""
    for env_id, entry_point in ENVIRONMENTS:
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, disable_env_checker=True)


def registered_ids() -> list[str]:
    return [env_id for env_id, _ in ENVIRONMENTS]
