"""Twenty Questions (``archer/TwentyQuestions-v0``), the ArCHer paper's dialogue benchmark.

The agent asks yes/no questions about a hidden everyday object and wins by
naming it, within 20 turns. Episode rules, observation format and scripted
agents are those of every question game (`question_game`); the knowledge base
and its oracle are `archer_agents.tools.twenty_questions`. The secret objects
are split into fixed train and test sets; a task id is the object's name.

``archer/TwentyQuestionsMini-v0`` is the same game over a subset of the
knowledge base (52 objects, 12 properties: `TwentyQuestionsOracle.mini`), small
enough for a 0.6M-parameter model to learn on a CPU in minutes; it is the main
job's game (`archer quickstart`).

Both take your own knowledge base: ``gym.make("archer/TwentyQuestions-v0",
kb="my_kb.json")``, or ``--env-arg kb=my_kb.json`` on the command line. Its
format is documented in `archer_agents.tools.twenty_questions`.
"""

from __future__ import annotations

from pathlib import Path

from archer_agents.environments.questions.game import (
    DEFAULT_MAX_QUESTION_CHARS,
    DEFAULT_MAX_TURNS,
    QuestionGameEnv,
)
from archer_agents.tools.twenty_questions import TwentyQuestionsOracle


class TwentyQuestionsEnv(QuestionGameEnv):
    """Guess the hidden object by asking yes/no questions.

    Args:
        oracle: the oracle to play against; the shipped knowledge base by default.
        kb: a knowledge-base JSON file to play instead (exclusive with ``oracle``).
        max_turns: the horizon (20 in the paper).
        max_action_chars: longer questions are answered ``Invalid question.``.
        render_mode: ``"ansi"`` or None.
    """

    @staticmethod
    def default_oracle() -> TwentyQuestionsOracle:
        """The oracle played when none is given."""
        return TwentyQuestionsOracle.default()

    secret_kind = "an object"

    def __init__(
        self,
        *,
        oracle: TwentyQuestionsOracle | None = None,
        kb: str | Path | None = None,
        max_turns: int = DEFAULT_MAX_TURNS,
        max_action_chars: int = DEFAULT_MAX_QUESTION_CHARS,
        render_mode: str | None = None,
    ) -> None:
        if kb is not None:
            if oracle is not None:
                raise ValueError("pass either oracle or kb (a knowledge-base file), not both")
            oracle = TwentyQuestionsOracle.from_file(kb)
        super().__init__(
            oracle if oracle is not None else self.default_oracle(),
            max_turns=max_turns,
            max_action_chars=max_action_chars,
            render_mode=render_mode,
        )


class TwentyQuestionsMiniEnv(TwentyQuestionsEnv):
    """Twenty Questions over the mini knowledge base (52 objects, 12 properties).

    Args: as `TwentyQuestionsEnv`; the oracle defaults to `TwentyQuestionsOracle.mini`.
    """

    @staticmethod
    def default_oracle() -> TwentyQuestionsOracle:
        return TwentyQuestionsOracle.mini()
