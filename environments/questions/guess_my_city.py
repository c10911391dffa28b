"""Guess My City (``archer/GuessMyCity-v0``): find a hidden city with free-form questions.

The ArCHer paper's second dialogue task. The agent may ask yes/no questions
("Is it in Europe?") and open ones ("What language do they speak?"); answers
never name the city. Episode rules, observation format and scripted agents are
those of every question game (`question_game`); the cities and the oracle are
`archer_agents.tools.guess_my_city`. The cities are split into fixed train
and test sets; a task id is the city's name.
"""

from __future__ import annotations

from archer_agents.environments.questions.game import (
    DEFAULT_MAX_QUESTION_CHARS,
    DEFAULT_MAX_TURNS,
    QuestionGameEnv,
)
from archer_agents.tools.guess_my_city.oracle import GuessMyCityOracle


class GuessMyCityEnv(QuestionGameEnv):
    """Guess the hidden city by asking questions about it.

    Args:
        oracle: the oracle to play against; the shipped cities by default.
        max_turns: the horizon (20 in the paper).
        max_action_chars: longer questions are answered ``Invalid question.``.
        render_mode: ``"ansi"`` or None.
    """

    secret_kind = "a city"

    def __init__(
        self,
        *,
        oracle: GuessMyCityOracle | None = None,
        max_turns: int = DEFAULT_MAX_TURNS,
        max_action_chars: int = DEFAULT_MAX_QUESTION_CHARS,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(
            oracle if oracle is not None else GuessMyCityOracle.default(),
            max_turns=max_turns,
            max_action_chars=max_action_chars,
            render_mode=render_mode,
        )
