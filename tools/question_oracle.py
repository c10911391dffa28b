"""What every question-game oracle shares: text normalisation, guess parsing, verdicts, tools.

Twenty Questions and Guess My City answer free-text questions about a hidden
secret. Both read a question the same way, so that "Is the object a dog?",
"could it be a DOG" and "It's a dog?" mean one thing in both games:

- `normalize` lower-cases, strips accents and punctuation, drops articles and
  filler words, and rewrites the many ways of naming the secret ("the object",
  "your city", "I guess it's", ...) to one subject, ``is it``;
- `split_names` reads the rest of a guess as one or more names ("a dog, a cat
  or a mouse" names three), so that a game can refuse to let a list of guesses
  win;
- `Verdict` is what an oracle says about one question: the answer text and
  whether it was a correct guess of exactly one secret.

Normalisation is a handful of tuple operations and dictionary look-ups: the
games call it on every step of tens of thousands of training episodes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

YES = "Yes."
NO = "No."
INVALID_QUESTION = "Invalid question."

_TOKEN = re.compile(r"[a-z0-9]+|[,;/&+]")
SEPARATORS = frozenset({",", ";", "/", "&", "+", "or", "and", "nor"})
"""Tokens that separate the names of a multi-name guess ("a dog, a cat or a mouse")."""

_DROPPED = frozenset({"a", "an", "the", "please"})
_CONTRACTIONS = {"whats": ("what", "is"), "hows": ("how", "is"), "wheres": ("where", "is")}
_LEADING_FILLERS = frozenset(
    {"ok", "okay", "so", "hmm", "um", "uh", "well", "alright", "now", "next", "then", "question"}
)
_VERBS = frozenset({"is", "does", "can", "could", "would", "will", "has", "was", "do"})
_SUBJECTS: tuple[tuple[str, ...], ...] = tuple(
    sorted(
        (
            tuple(words.split())
            for words in (
                "this",
                "that",
                "object",
                "thing",
                "item",
                "word",
                "secret",
                "answer",
                "city",
                "place",
                "town",
                "location",
                "your object",
                "your thing",
                "your item",
                "your word",
                "your answer",
                "your city",
                "your place",
                "your secret",
                "secret object",
                "secret thing",
                "secret word",
                "secret city",
                "mystery object",
                "mystery city",
                "hidden object",
                "hidden city",
                "your secret object",
                "your secret city",
                "your secret word",
                "object you are thinking of",
                "thing you are thinking of",
                "city you are thinking of",
            )
        ),
        key=len,
        reverse=True,
    )
)
_GUESS_PREFIXES: tuple[tuple[str, ...], ...] = tuple(
    sorted(
        (
            tuple(words.split())
            for words in (
                "its",
                "it is",
                "is it called",
                "is it named",
                "is it maybe",
                "is it perhaps",
                "is it possibly",
                "maybe its",
                "maybe it is",
                "it must be",
                "must be",
                "it could be",
                "it might be",
                "could it be",
                "might it be",
                "would it be",
                "can it be",
                "i think its",
                "i think it is",
                "i guess its",
                "i guess it is",
                "i guess",
                "my guess is",
                "my guess",
                "my final guess is",
                "final guess",
                "guess",
                "answer is",
                "are you thinking of",
                "are you thinking about",
            )
        ),
        key=len,
        reverse=True,
    )
)
_TRAILERS: tuple[tuple[str, ...], ...] = (("or", "not"), ("by", "any", "chance"), ("then",))


def _by_first_word(phrases: Sequence[tuple[str, ...]]) -> dict[str, list[tuple[str, ...]]]:
    """Index phrases by their first word, longest first, so matching costs one look-up."""
    index: dict[str, list[tuple[str, ...]]] = {}
    for phrase in phrases:
        index.setdefault(phrase[0], []).append(phrase)
    return index


_SUBJECTS_BY_WORD = _by_first_word(_SUBJECTS)
_GUESS_PREFIXES_BY_WORD = _by_first_word(_GUESS_PREFIXES)


@dataclass(frozen=True, slots=True)
class Verdict:
    """An oracle's reply to one question."""

    answer: str
    """The text shown to the agent (``Yes.``, ``No.``, ``Invalid question.`` or a template)."""
    solved: bool = False
    """The question was a correct guess naming exactly one secret: the game is won."""
    guesses: tuple[str, ...] = ()
    """The secrets the question named as guesses, if it was a guess."""

    @property
    def invalid(self) -> bool:
        return self.answer == INVALID_QUESTION


class QuestionOracle(Protocol):
    """The data side of a question game: secrets, answers and the scripted agents' questions."""

    def secrets(self, split: str | None = None) -> Sequence[str]:
        """Secret names of a split (``train`` or ``test``), or all of them."""
        ...

    def judge(self, question: str, secret: str) -> Verdict:
        """Answer ``question`` about ``secret``."""
        ...

    def canonical_questions(self) -> Sequence[str]:
        """The questions the expert chooses from, one phrasing each."""
        ...

    def weak_questions(self) -> Sequence[str]:
        """The questions the weak scripted agent chooses from (a subset of the canonical ones)."""
        ...

    def guess_question(self, secret: str) -> str:
        """The canonical phrasing of a guess of ``secret``."""
        ...


def tokenize(text: str) -> list[str]:
    """Lower-case ASCII words and digits, keeping list separators (``, ; / & +``) as tokens."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _TOKEN.findall(folded.lower().replace("'", ""))


def normalize(text: str) -> tuple[str, ...]:
    """Tokens of a question with its subject rewritten to ``is it`` / ``does it`` / ...

    List separators are kept so that a guess can be split into names; drop them
    with `question_key` to look a question up.
    """
    tokens: list[str] = []
    for token in tokenize(text):
        if token in _CONTRACTIONS:
            tokens.extend(_CONTRACTIONS[token])
        elif token not in _DROPPED:
            tokens.append(token)
    while tokens and (tokens[0] in _LEADING_FILLERS or tokens[0].isdigit() or tokens[0] in ",;"):
        tokens.pop(0)
    while tokens and tokens[-1] in ",;":
        tokens.pop()
    for trailer in _TRAILERS:
        if len(tokens) > len(trailer) and tuple(tokens[-len(trailer) :]) == trailer:
            del tokens[-len(trailer) :]
    if not tokens:
        return ()
    for prefix in _GUESS_PREFIXES_BY_WORD.get(tokens[0], ()):
        if tuple(tokens[: len(prefix)]) == prefix:
            tokens = ["is", "it", *tokens[len(prefix) :]]
            break
    if len(tokens) > 1 and tokens[0] in _VERBS:
        for subject in _SUBJECTS_BY_WORD.get(tokens[1], ()):
            if tuple(tokens[1 : 1 + len(subject)]) == subject:
                tokens = [tokens[0], "it", *tokens[1 + len(subject) :]]
                break
    return tuple(tokens)


def question_key(tokens: Sequence[str]) -> str:
    """The look-up key of normalised tokens: words only, space-separated."""
    return " ".join(token for token in tokens if token[0].isalnum())


def name_key(name: str) -> str:
    """The look-up key of a secret's name or alias ("Yo-Yo" and "yo yo" share one)."""
    return question_key([token for token in tokenize(name) if token not in _DROPPED])


def split_names(tokens: Sequence[str], index: Mapping[str, str]) -> tuple[str, ...] | None:
    """Resolve ``tokens`` as a list of names through ``index`` (name key -> secret).

    Returns the distinct secrets named, in order, or None when any part is not
    a known name (so the text is not a guess at all).
    """
    parts: list[list[str]] = [[]]
    for token in tokens:
        if token in SEPARATORS:
            parts.append([])
        elif token != "either":
            parts[-1].append(token)
    named: list[str] = []
    for part in parts:
        if not part:
            continue
        secret = index.get(" ".join(part))
        if secret is None:
            return None
        if secret not in named:
            named.append(secret)
    return tuple(named) if named else None


def guess_verdict(guesses: tuple[str, ...], secret: str) -> Verdict:
    """A guess wins only when it names exactly one secret, the right one."""
    solved = guesses == (secret,)
    return Verdict(YES if solved else NO, solved=solved, guesses=guesses)


class QuestionInput(BaseModel):
    """Arguments of a question-game tool."""

    question: str = Field(
        description="One question about the secret, or a guess naming one secret "
        "(e.g. 'Is it a dog?')."
    )


def make_question_tool(answer: Callable[[str], str], *, name: str, description: str) -> BaseTool:
    """A LangChain tool that answers one question with ``answer``."""

    def ask(question: str) -> str:
        return answer(question)

    return StructuredTool.from_function(
        func=ask, name=name, description=description, args_schema=QuestionInput
    )
