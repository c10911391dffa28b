"""The Twenty Questions oracle: a knowledge base of objects x yes/no properties.

LMRL-Gym's oracle is a fine-tuned flan-t5; ours answers from shipped data
(``data/twenty_questions.json``) so that it is exact, deterministic and costs
microseconds. A question is read (`TwentyQuestionsOracle.parse`) as one of:

- a property question, matched against each property's canonical question and
  paraphrases after normalisation ("Is the object alive", "is it a living
  thing?" and "IS IT ALIVE" are one question), answered ``Yes.`` or ``No.``;
- a guess naming objects by name or alias ("Is it a dog?", "Is it dog?"),
  answered ``Yes.`` and won only when it names exactly the secret, so that
  "Is it a dog or a cat?" is answered ``No.`` whatever the secret;
- anything else, answered ``Invalid question.``.

`answer_question` is the pure function; `make_twenty_questions_tool` wraps it
as a LangChain tool for one secret.

The mini game (``data/twenty_questions_mini.json``, `TwentyQuestionsOracle.mini`)
is a subset of the same knowledge base for quick CPU runs: 12 properties,
chosen greedily so that each one added splits the most objects into new
groups of identical answers, and one object from each of the 52 groups they
form (so every object has its own answers). Objects keep their facts. Its
splits are shared: every object is a task of both the train and the test split,
as in the paper's Twenty Questions, whose agents are evaluated on the objects
they trained on. The full game holds 50 objects out instead, which also asks a
policy to name objects it has only seen guessed wrongly; RL on the training
objects alone teaches it to name those.

Your own knowledge base is a JSON file of the same format as the shipped one,
read by `load_knowledge_base` (``gym.make("archer/TwentyQuestions-v0",
kb="my_kb.json")``, ``--env-arg kb=my_kb.json`` on the command line)::

    {
      "description": "Kitchen things.",
      "shared_splits": false,
      "properties": [
        {"name": "metal", "question": "Is it made of metal?",
         "description": "Mostly metal.", "paraphrases": ["is it metallic"]}
      ],
      "objects": [
        {"name": "spoon", "category": "utensil", "split": "train",
         "aliases": ["teaspoon"], "yes": ["metal"], "no": []},
        {"name": "cup", "category": "tableware", "split": "test",
         "article": "a", "yes": [], "no": ["metal"]}
      ]
    }

- ``properties``: unique ``name``; ``question`` is the canonical phrasing the
  scripted agents ask; ``paraphrases`` are other phrasings the oracle
  understands (normalised: case, punctuation and articles do not matter);
- ``objects``: unique ``name`` (and ``aliases``, which guesses may use too);
  ``split`` is ``train`` or ``test``; every property is listed under exactly
  one of ``yes`` and ``no``; ``article`` (optional) is the article of the
  canonical guess (``""`` for none; default ``a``/``an``);
- ``shared_splits`` (optional): every object is a task of both splits.

A knowledge base that breaks these rules is refused with what to fix; two
objects with the same answer to every property question (only a guess tells
them apart) are accepted with a logged warning.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Literal

from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field, model_validator

from archer_agents.tools.question_oracle import (
    INVALID_QUESTION,
    NO,
    YES,
    Verdict,
    guess_verdict,
    make_question_tool,
    name_key,
    normalize,
    question_key,
    split_names,
)

logger = logging.getLogger(__name__)

DATA_PATH = Path(__file__).parent / "data" / "twenty_questions.json"
MINI_PATH = DATA_PATH.with_name("twenty_questions_mini.json")


class PropertySpec(BaseModel):
    """A yes/no property of objects and the ways of asking about it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Identifier, e.g. 'alive'.")
    question: str = Field(description="The canonical question, e.g. 'Is it alive?'.")
    description: str = Field(description="What the property means where it could be misread.")
    paraphrases: list[str] = Field(default_factory=list, description="Other phrasings.")


class ObjectSpec(BaseModel):
    """One object that can be the secret."""

    model_config = ConfigDict(extra="forbid")

    name: str
    category: str
    split: Literal["train", "test"]
    aliases: list[str] = Field(default_factory=list, description="Other names a guess may use.")
    article: str | None = Field(
        None, description="Article of the canonical guess; default 'a'/'an' by the first letter."
    )
    yes: list[str] = Field(description="Properties the object has.")
    no: list[str] = Field(description="Properties the object lacks.")


class KnowledgeBase(BaseModel):
    """Objects x properties, checked for completeness when loaded."""

    model_config = ConfigDict(extra="forbid")

    description: str
    properties: list[PropertySpec]
    objects: list[ObjectSpec]
    shared_splits: bool = False
    """Every object is in both splits, ignoring its own (the mini game; see the module doc)."""

    @model_validator(mode="after")
    def _check(self) -> KnowledgeBase:
        names = [p.name for p in self.properties]
        if len(set(names)) != len(names):
            raise ValueError("property names must be unique")
        objects = [o.name for o in self.objects]
        if len(set(objects)) != len(objects):
            raise ValueError("object names must be unique")
        everything = set(names)
        for obj in self.objects:
            listed = obj.yes + obj.no
            if set(obj.yes) & set(obj.no) or len(listed) != len(set(listed)):
                raise ValueError(f"object {obj.name!r} lists a property twice")
            if set(listed) != everything:
                missing = sorted(everything - set(listed))
                unknown = sorted(set(listed) - everything)
                raise ValueError(
                    f"object {obj.name!r} must list every property under yes or no; "
                    f"missing {missing}, unknown {unknown}"
                )
        return self

    def indistinguishable(self) -> list[list[str]]:
        """Groups of objects with the same answer to every property question."""
        groups: dict[frozenset[str], list[str]] = {}
        for obj in self.objects:
            groups.setdefault(frozenset(obj.yes), []).append(obj.name)
        return [names for names in groups.values() if len(names) > 1]

    def subset(
        self,
        objects: Sequence[str],
        properties: Sequence[str],
        description: str,
        *,
        shared_splits: bool = False,
    ) -> KnowledgeBase:
        """The knowledge base restricted to ``objects`` and ``properties`` (in this order)."""
        by_name = {obj.name: obj for obj in self.objects}
        by_property = {prop.name: prop for prop in self.properties}
        unknown = sorted(set(objects) - set(by_name)) + sorted(set(properties) - set(by_property))
        if unknown:
            raise ValueError(f"a subset names what the knowledge base lacks: {unknown}")
        kept = set(properties)
        return KnowledgeBase(
            description=description,
            shared_splits=shared_splits,
            properties=[by_property[name] for name in properties],
            objects=[
                by_name[name].model_copy(
                    update={
                        "yes": [p for p in by_name[name].yes if p in kept],
                        "no": [p for p in by_name[name].no if p in kept],
                    }
                )
                for name in objects
            ],
        )


class KnowledgeBaseSubset(BaseModel):
    """A subset of the shipped knowledge base, by object and property names."""

    model_config = ConfigDict(extra="forbid")

    description: str
    properties: list[str]
    objects: list[str]
    shared_splits: bool = False
    """Put every object in both splits (see `KnowledgeBase.shared_splits`)."""


def load_mini_knowledge_base(path: str | Path | None = None) -> KnowledgeBase:
    """The mini game's knowledge base: a subset (``path``, the shipped one by default)."""
    source = Path(path) if path is not None else MINI_PATH
    with source.open(encoding="utf-8") as handle:
        subset = KnowledgeBaseSubset.model_validate(json.load(handle))
    return load_knowledge_base().subset(
        subset.objects, subset.properties, subset.description, shared_splits=subset.shared_splits
    )


def load_knowledge_base(path: str | Path | None = None) -> KnowledgeBase:
    """Read and validate a knowledge base (the shipped one by default)."""
    source = Path(path) if path is not None else DATA_PATH
    with source.open(encoding="utf-8") as handle:
        return KnowledgeBase.model_validate(json.load(handle))


@dataclass(frozen=True, slots=True)
class ParsedQuestion:
    """How the oracle reads a question, independent of the secret."""

    kind: Literal["property", "guess", "invalid"]
    property: str | None = None
    guesses: tuple[str, ...] = ()


_INVALID = ParsedQuestion("invalid")


class TwentyQuestionsOracle:
    """Answers questions about any object of a knowledge base, from look-up tables."""

    def __init__(self, knowledge_base: KnowledgeBase) -> None:
        self.knowledge_base = knowledge_base
        for names in knowledge_base.indistinguishable():
            logger.warning(
                "knowledge base %r: objects %s have the same answer to every property question, "
                "so only a guess tells them apart; add a property that separates them",
                knowledge_base.description[:60],
                ", ".join(names),
            )
        self._facts = {obj.name: frozenset(obj.yes) for obj in knowledge_base.objects}
        self._splits = {
            split: tuple(
                obj.name
                for obj in knowledge_base.objects
                if obj.split == split or knowledge_base.shared_splits
            )
            for split in ("train", "test")
        }
        self._questions: dict[str, str] = {}
        for prop in knowledge_base.properties:
            for phrasing in (prop.question, *prop.paraphrases):
                key = question_key(normalize(phrasing))
                owner = self._questions.setdefault(key, prop.name)
                if owner != prop.name:
                    raise ValueError(
                        f"the phrasing {phrasing!r} of property {prop.name!r} reads the same as "
                        f"one of {owner!r}; remove or reword one of them in the knowledge base"
                    )
        self._names: dict[str, str] = {}
        for obj in knowledge_base.objects:
            for name in (obj.name, *obj.aliases):
                key = name_key(name)
                owner = self._names.setdefault(key, obj.name)
                if owner != obj.name:
                    raise ValueError(
                        f"the name {name!r} of {obj.name!r} is also a name of {owner!r}; "
                        "names and aliases must be unique in the knowledge base"
                    )
                if f"is it {key}" in self._questions:
                    raise ValueError(
                        f"'Is it {name}?' would read as the property question "
                        f"{self._questions[f'is it {key}']!r}, not a guess of {obj.name!r}; "
                        "rename the object or drop the paraphrase"
                    )
        self._guess_questions = {
            obj.name: f"Is it {_article(obj)}{obj.name}?" for obj in knowledge_base.objects
        }
        self.parse = lru_cache(maxsize=65_536)(self._parse)

    @classmethod
    def default(cls) -> TwentyQuestionsOracle:
        """The oracle over the shipped knowledge base (built once per process)."""
        return _default_oracle()

    @classmethod
    def from_file(cls, path: str | Path) -> TwentyQuestionsOracle:
        """The oracle over a knowledge-base file (see the module docstring for its format).

        Built once per file and version in a process, so every environment of a
        run shares it.
        """
        source = Path(path).expanduser()
        if not source.is_file():
            raise FileNotFoundError(
                f"no knowledge base at {source}; pass a JSON file in the format of "
                "archer_agents.tools.twenty_questions (its module docstring)"
            )
        resolved = source.resolve()
        return _file_oracle(str(resolved), os.stat(resolved).st_mtime_ns)

    @classmethod
    def mini(cls) -> TwentyQuestionsOracle:
        """The oracle of the mini game (52 objects, 12 properties; built once per process)."""
        return _mini_oracle()

    # -- the game's data ----------------------------------------------------
    def secrets(self, split: str | None = None) -> Sequence[str]:
        if split is None:
            return tuple(obj.name for obj in self.knowledge_base.objects)
        if split not in self._splits:
            raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
        return self._splits[split]

    def property_names(self) -> list[str]:
        return [prop.name for prop in self.knowledge_base.properties]

    def has_property(self, secret: str, prop: str) -> bool:
        return prop in self._facts[self._check_secret(secret)]

    def canonical_questions(self) -> Sequence[str]:
        return [prop.question for prop in self.knowledge_base.properties]

    def weak_questions(self) -> Sequence[str]:
        return self.canonical_questions()

    def guess_question(self, secret: str) -> str:
        return self._guess_questions[self._check_secret(secret)]

    # -- answering ------------------------------------------------------------
    def _parse(self, question: str) -> ParsedQuestion:
        tokens = normalize(question)
        prop = self._questions.get(question_key(tokens))
        if prop is not None:
            return ParsedQuestion("property", property=prop)
        rest = tokens[2:] if tokens[:2] == ("is", "it") else tokens
        guesses = split_names(rest, self._names)
        if guesses is None:
            return _INVALID
        return ParsedQuestion("guess", guesses=guesses)

    def judge(self, question: str, secret: str) -> Verdict:
        facts = self._facts.get(secret)
        if facts is None:
            raise self._unknown_secret(secret)
        parsed = self.parse(question)
        if parsed.kind == "property":
            return Verdict(YES if parsed.property in facts else NO)
        if parsed.kind == "guess":
            return guess_verdict(parsed.guesses, secret)
        return Verdict(INVALID_QUESTION)

    def answer(self, question: str, secret: str) -> str:
        return self.judge(question, secret).answer

    def make_tool(self, secret: str) -> BaseTool:
        """A LangChain tool answering questions about ``secret``."""
        self._check_secret(secret)
        return make_question_tool(
            lambda question: self.answer(question, secret),
            name="ask_question",
            description=(
                "Ask one yes/no question about the secret object (e.g. 'Is it an animal?') "
                "or guess it (e.g. 'Is it a dog?'). Answers 'Yes.', 'No.' or 'Invalid "
                "question.'; a guess naming exactly the secret object is answered 'Yes.' "
                "and wins."
            ),
        )

    def _check_secret(self, secret: str) -> str:
        if secret not in self._facts:
            raise self._unknown_secret(secret)
        return secret

    def _unknown_secret(self, secret: str) -> ValueError:
        return ValueError(
            f"unknown secret object {secret!r}; use one of the knowledge base's "
            f"{len(self._facts)} objects, e.g. {list(self._facts)[:3]}"
        )


def _article(obj: ObjectSpec) -> str:
    if obj.article is not None:
        return f"{obj.article} " if obj.article else ""
    return "an " if obj.name[0] in "aeiou" else "a "


@cache
def _default_oracle() -> TwentyQuestionsOracle:
    return TwentyQuestionsOracle(load_knowledge_base())


@lru_cache(maxsize=8)
def _file_oracle(path: str, mtime_ns: int) -> TwentyQuestionsOracle:
    try:
        knowledge_base = load_knowledge_base(path)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    except ValueError as exc:  # pydantic's ValidationError: the first problem, on one line
        first = str(exc).splitlines()
        raise ValueError(f"{path} is not a valid knowledge base: {' '.join(first[:3])}") from None
    return TwentyQuestionsOracle(knowledge_base)


@cache
def _mini_oracle() -> TwentyQuestionsOracle:
    return TwentyQuestionsOracle(load_mini_knowledge_base())


def answer_question(question: str, secret: str) -> str:
    """Answer ``question`` about ``secret``: ``Yes.``, ``No.`` or ``Invalid question.``."""
    return _default_oracle().answer(question, secret)


def make_twenty_questions_tool(secret: str) -> BaseTool:
    """A LangChain tool for playing Twenty Questions against ``secret``."""
    return _default_oracle().make_tool(secret)
