"""Question games (Twenty Questions, Guess My City): one environment, many oracles.

Both games are the LMRL-Gym / ArCHer dialogue: the agent asks questions about
a hidden secret and wins by naming it. What differs is only the oracle (data,
parser, answers: `archer_agents.tools.question_oracle.QuestionOracle`); the
episode is the same and lives here:

- the observation is ``"Questions:\\n"`` followed by one ``"<question> <answer>"``
  line per turn, exactly the paper's format;
- reward -1 per turn, 0 on the turn of a correct guess, which terminates the
  episode; after ``max_turns`` (20) turns the episode is truncated, so returns
  lie in [-20, 0];
- a guess counts only when it names exactly one secret;
- ``info["invalid_action"]`` is True when the answer is ``Invalid question.`` or
  the action is over-long; ``info["success"]`` is set when the episode ends.

The scripted agents (expert, weak, random) work for any oracle. They ask
canonical questions, so their episodes are clean behaviour-cloning data, and
they decide from a table of every canonical question's answer for every
secret, built once per oracle, so a decision costs a few numpy operations.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from archer_agents.environments.base import ScriptedAgent, TextEnv, random_choice, to_ascii
from archer_agents.tools.question_oracle import (
    INVALID_QUESTION,
    YES,
    QuestionOracle,
    Verdict,
)

logger = logging.getLogger(__name__)

OBSERVATION_HEADER = "Questions:\n"
DEFAULT_MAX_TURNS = 20
DEFAULT_MAX_QUESTION_CHARS = 300
"""A question longer than this is refused; it also keeps the history short."""


class QuestionGameEnv(TextEnv):
    """Ask questions about a hidden secret; win by naming it.

    Args:
        oracle: answers questions and names the secrets and their splits.
        max_turns: the horizon; reaching it unsolved truncates the episode.
        max_action_chars: longer actions are answered ``Invalid question.``.
        render_mode: ``"ansi"`` returns the observation text, or None.
    """

    text_layout = "questions"

    def __init__(
        self,
        oracle: QuestionOracle,
        *,
        max_turns: int = DEFAULT_MAX_TURNS,
        max_action_chars: int = DEFAULT_MAX_QUESTION_CHARS,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(max_action_chars=max_action_chars, render_mode=render_mode)
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")
        self.oracle = oracle
        self.max_turns = max_turns
        self.secret: str | None = None
        self.turn = 0
        self._done = True
        self._table: AnswerTable | None = None

    secret_kind = "a secret"
    """What the secret is, for the chat form's rules (``"an object"``, ``"a city"``)."""

    def task_ids(self, split: str = "train") -> Sequence[str]:
        return self.oracle.secrets(split)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        split, task_id = self._choose_task_id(options)
        self.secret = task_id
        self.turn = 0
        self._done = False
        self._last_observation = OBSERVATION_HEADER
        self._chat = [{"role": "user", "content": self.chat_rules}]
        return self._last_observation, {"task_id": task_id, "split": split, "turn": 0}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.secret is None or self._done:
            raise RuntimeError(
                "step() called before reset() or after the episode ended; call reset() first"
            )
        self.turn += 1
        question = " ".join(action.split())
        too_long = self._action_too_long(action)
        if too_long is not None:
            verdict = Verdict(INVALID_QUESTION)
            question = question[: self.max_action_chars] + "..."
        else:
            verdict = self.oracle.judge(question, self.secret)
        line = f"{question} {verdict.answer}"
        if not (line.isascii() and line.isprintable()):  # the fast path skips a per-char copy
            line = to_ascii(line)
        self._last_observation += line + "\n"
        self._chat += [
            {"role": "assistant", "content": action},
            {"role": "user", "content": verdict.answer},
        ]
        terminated = verdict.solved
        truncated = not terminated and self.turn >= self.max_turns
        info: dict[str, Any] = {
            "invalid_action": verdict.invalid,
            "tool_error": False,
            "answer": verdict.answer,
            "turn": self.turn,
        }
        if verdict.invalid:
            info["error"] = too_long or INVALID_QUESTION
        if terminated or truncated:
            self._done = True
            info["success"] = terminated
        return self._last_observation, 0.0 if terminated else -1.0, terminated, truncated, info

    @property
    def chat_rules(self) -> str:
        """The game's rules as the opening user message of the chat form."""
        return (
            f"Let's play a guessing game: I have chosen {self.secret_kind}. "
            "Ask me one yes/no question at a time and I will answer Yes. or No.; "
            "you win by naming the secret, and every question costs one point."
        )

    # -- scripted agents ----------------------------------------------------
    @property
    def answer_table(self) -> AnswerTable:
        """Every canonical question's answer for every secret (built on first use)."""
        if self._table is None:
            self._table = AnswerTable.build(self.oracle)
        return self._table

    def make_scripted_agent(self, kind: str, seed: int | None = None) -> ScriptedAgent:
        self._check_kind(kind)
        rng = np.random.default_rng(seed)
        if kind == "expert":
            return ExpertAgent(self.answer_table, rng, max_turns=self.max_turns)
        if kind == "weak":
            return WeakAgent(self.answer_table, rng, max_turns=self.max_turns)
        return RandomAgent(self.answer_table, rng)


@dataclass
class AnswerTable:
    """What the scripted agents know: the answer of each canonical question for each secret.

    The agents assume every secret is possible (they do not know the split).
    """

    questions: list[str]
    """Canonical questions, in the oracle's order."""
    secrets: list[str]
    """Every secret of the game, train and test."""
    answers: np.ndarray
    """(Q, N) int: id of the answer to question q for secret n."""
    answer_ids: list[dict[str, int]]
    """Per question: answer text -> id."""
    offsets: np.ndarray
    """(Q,) int: start of each question's answer ids in one flat numbering."""
    weak: np.ndarray
    """(Q,) bool: questions the weak agent may ask."""
    guesses: list[str]
    """(N) the canonical guess of each secret."""

    @classmethod
    def build(cls, oracle: QuestionOracle) -> AnswerTable:
        questions = list(oracle.canonical_questions())
        secrets = list(oracle.secrets())
        answers = np.zeros((len(questions), len(secrets)), dtype=np.int64)
        answer_ids: list[dict[str, int]] = []
        for q, question in enumerate(questions):
            ids: dict[str, int] = {}
            for n, secret in enumerate(secrets):
                verdict = oracle.judge(question, secret)
                if verdict.invalid or verdict.guesses:
                    raise ValueError(
                        f"canonical question {question!r} is not a question about {secret!r} "
                        f"(answered {verdict.answer!r}); fix the oracle's canonical questions"
                    )
                answers[q, n] = ids.setdefault(verdict.answer, len(ids))
            answer_ids.append(ids)
        sizes = np.array([len(ids) for ids in answer_ids], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        weak_set = set(oracle.weak_questions())
        unknown = weak_set - set(questions)
        if unknown:
            raise ValueError(f"weak questions {sorted(unknown)} are not canonical questions")
        weak = np.array([question in weak_set for question in questions])
        guesses = [oracle.guess_question(secret) for secret in secrets]
        return cls(questions, secrets, answers, answer_ids, offsets, weak, guesses)


def expected_turns_table(size: int) -> np.ndarray:
    """V[m]: expected turns to win among m equally likely candidates with ideal halving questions.

    V[1] = 1 (one guess). With m candidates one either guesses (winning with
    probability 1/m, else continuing with m-1) or asks a question that halves
    them; the cheaper option is taken. The expert uses V to value the
    candidate sets a real question would leave.
    """
    table = np.zeros(size + 1)
    if size >= 1:
        table[1] = 1.0
    for m in range(2, size + 1):
        guess = 1.0 + (m - 1) / m * table[m - 1]
        high, low = math.ceil(m / 2), m // 2
        halve = 1.0 + (high * table[high] + low * table[low]) / m
        table[m] = min(guess, halve)
    return table


class _TrackingAgent:
    """Keeps the set of secrets consistent with the answers seen so far."""

    def __init__(self, table: AnswerTable, rng: np.random.Generator, *, max_turns: int) -> None:
        self.table = table
        self.rng = rng
        self.max_turns = max_turns
        self.candidates = np.ones(len(table.secrets), dtype=bool)
        self._last: tuple[str, int] | None = None
        self._flat_size = int(table.offsets[-1] + len(table.answer_ids[-1]))

    def reset(self, observation: str, info: dict[str, Any]) -> None:
        self.candidates = np.ones(len(self.table.secrets), dtype=bool)
        self._last = None

    def act(self, observation: str) -> str:
        self._update(observation)
        turns_used = observation.count("\n") - OBSERVATION_HEADER.count("\n")
        kind, index = self._choose(self.max_turns - turns_used)
        self._last = (kind, index)
        return self.table.questions[index] if kind == "question" else self.table.guesses[index]

    def _choose(self, turns_left: int) -> tuple[str, int]:
        raise NotImplementedError

    def _update(self, observation: str) -> None:
        if self._last is None:
            return
        kind, index = self._last
        asked = self.table.questions[index] if kind == "question" else self.table.guesses[index]
        last_line = observation.rstrip("\n").rsplit("\n", 1)[-1]
        if not last_line.startswith(asked + " "):
            logger.debug("observation does not end with our question %r; ignoring it", asked)
            return
        answer = last_line[len(asked) + 1 :]
        if kind == "guess":
            if answer != YES:
                self.candidates[index] = False
            return
        answer_id = self.table.answer_ids[index].get(answer)
        if answer_id is None:
            logger.debug("unexpected answer %r to %r; ignoring it", answer, asked)
            return
        consistent = self.candidates & (self.table.answers[index] == answer_id)
        if consistent.any():
            self.candidates = consistent
        else:
            logger.debug("no secret fits the answers so far; keeping the previous candidates")

    def _guess_any(self) -> tuple[str, int]:
        return "guess", int(random_choice(self.rng, np.flatnonzero(self.candidates)))


class ExpertAgent(_TrackingAgent):
    """Asks the most informative question; guesses when a guess is worth more.

    Each question is valued by the expected number of turns left after it,
    1 + sum over answers of P(answer) * V(candidates left), with V from
    `expected_turns_table`; a guess is valued 1 + (n-1)/n * V(n-1). The cheaper
    one is played (ties go to the guess); on the last turn it always guesses.
    """

    def __init__(self, table: AnswerTable, rng: np.random.Generator, *, max_turns: int) -> None:
        super().__init__(table, rng, max_turns=max_turns)
        self._values = expected_turns_table(len(table.secrets))

    def _choose(self, turns_left: int) -> tuple[str, int]:
        idx = np.flatnonzero(self.candidates)
        n = len(idx)
        if n == 1 or turns_left <= 1:
            return self._guess_any()
        flat = (self.table.answers[:, idx] + self.table.offsets[:, None]).ravel()
        counts = np.bincount(flat, minlength=self._flat_size)  # (total answers,)
        per_answer = counts * self._values[counts]
        expected = np.add.reduceat(per_answer, self.table.offsets) / n  # (Q,)
        largest = np.maximum.reduceat(counts, self.table.offsets)
        informative = largest < n
        costs = np.where(informative, 1.0 + expected, np.inf)
        best = float(costs.min())
        guess_cost = 1.0 + (n - 1) / n * self._values[n - 1]
        if guess_cost <= best + 1e-12:
            return self._guess_any()
        ties = np.flatnonzero(costs <= best + 1e-12)
        return "question", int(random_choice(self.rng, ties))


class WeakAgent(_TrackingAgent):
    """A plausible but clearly worse player.

    It keeps the candidates consistent like the expert but, instead of the best
    question, asks a random one from its pool among those that split the
    candidates with at least ``min_share`` of them on the smaller side (or any
    informative one when none does). It guesses only when one or two
    candidates remain or, with probability ``early_guess``, as soon as
    ``early_guess_below`` or fewer remain.
    """

    min_share = 0.05
    early_guess = 0.25
    early_guess_below = 8

    def _choose(self, turns_left: int) -> tuple[str, int]:
        idx = np.flatnonzero(self.candidates)
        n = len(idx)
        if n <= 2 or turns_left <= 1:
            return self._guess_any()
        if n <= self.early_guess_below and self.rng.random() < self.early_guess:
            return self._guess_any()
        flat = (self.table.answers[:, idx] + self.table.offsets[:, None]).ravel()
        counts = np.bincount(flat, minlength=self._flat_size)
        largest = np.maximum.reduceat(counts, self.table.offsets)  # (Q,)
        informative = (largest < n) & self.table.weak
        balanced = informative & (n - largest >= self.min_share * n)
        options = np.flatnonzero(balanced if balanced.any() else informative)
        if len(options) == 0:
            return self._guess_any()
        return "question", int(random_choice(self.rng, options))


class RandomAgent:
    """Uniformly random among every canonical question and every secret's guess."""

    def __init__(self, table: AnswerTable, rng: np.random.Generator) -> None:
        self.actions = list(table.questions) + list(table.guesses)
        self.rng = rng

    def reset(self, observation: str, info: dict[str, Any]) -> None:
        return None

    def act(self, observation: str) -> str:
        return str(random_choice(self.rng, self.actions))
