"""The Guess My City oracle: free-form questions about a hidden city, answered from data.

Every phrasing the oracle understands is expanded once, at construction, from
the question templates (`archer_agents.tools.guess_my_city.phrasings`) over the
data's names (`archer_agents.tools.guess_my_city.cities`) into one table from
normalised text to a parsed question, so answering costs a dictionary look-up.
A question is:

- a yes/no question about one attribute ("Is it in Europe?", "Is it a French
  city?", "Is it the capital of Japan?", "Is the climate tropical?", "Does it
  have more than 5 million people?"), answered ``Yes.`` or ``No.``; "Is it in
  France or Spain?" is answered ``Yes.`` if either holds;
- an open question ("What continent is it on?", "What language do they
  speak?", "How many people live there?"), answered from a template that never
  names the city: when the country's name would give the city away (Mexico
  City, Singapore, Tunis) the country is not named;
- a guess naming cities ("Is it Paris?"), won only when it names exactly the
  secret;
- anything else: ``Invalid question.``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Literal

from langchain_core.tools import BaseTool

from archer_agents.tools.guess_my_city.cities import (
    POPULATION_BANDS,
    City,
    CityDatabase,
    Place,
    load_city_database,
)
from archer_agents.tools.guess_my_city.phrasings import (
    ADJECTIVE_TEMPLATES,
    CAPITAL_OF_TEMPLATES,
    CLIMATE_TEMPLATES,
    CONTINENT_TEMPLATES,
    COUNTRY_TEMPLATES,
    DESERT,
    FIXED,
    LANGUAGE_TEMPLATES,
    LOCATION_TEMPLATES,
    MAIN_LANGUAGE_TEMPLATES,
    OVER,
    PARAPHRASES,
    POPULATION_TEMPLATES,
    SIZE_PHRASES,
    SIZE_WORDS,
    TROPICS,
    UNDER,
)
from archer_agents.tools.question_oracle import (
    INVALID_QUESTION,
    NO,
    SEPARATORS,
    YES,
    Verdict,
    guess_verdict,
    make_question_tool,
    name_key,
    normalize,
    question_key,
    split_names,
)

HIDDEN_COUNTRY = "I cannot name the country without giving the city away."
_BAND_TEXT = {
    "under 1 million": "Fewer than 1 million people live in its urban area.",
    "1 to 5 million": "Between 1 and 5 million people live in its urban area.",
    "over 5 million": "More than 5 million people live in its urban area.",
}

Attribute = Literal[
    "location",
    "capital_of",
    "coastal",
    "capital",
    "population_over",
    "population_under",
    "language",
    "main_language",
    "climate",
    "hemisphere",
    "what_continent",
    "what_country",
    "what_language",
    "what_climate",
    "what_population",
    "what_hemisphere",
]


@dataclass(frozen=True, slots=True)
class CityQuestion:
    """How the oracle reads a question, independent of the secret."""

    kind: Literal["ask", "guess", "invalid"]
    attribute: Attribute | None = None
    values: tuple[str, ...] = ()
    """What the attribute is compared with; a yes/no question holds if any value matches."""
    negate: bool = False
    guesses: tuple[str, ...] = ()


_INVALID = CityQuestion("invalid")


class GuessMyCityOracle:
    """Answers questions about any city of a `CityDatabase`, from one look-up table."""

    def __init__(self, database: CityDatabase) -> None:
        self.database = database
        self._cities = {city.name: city for city in database.cities}
        self._splits = {
            split: tuple(c.name for c in database.cities if c.split == split)
            for split in ("train", "test")
        }
        self._countries = {country.name: country for country in database.countries}
        self._climate_groups = {c.name: c.group for c in database.climates}
        self._names: dict[str, str] = {}
        for city in database.cities:
            for name in (city.name, *city.aliases):
                owner = self._names.setdefault(name_key(name), city.name)
                if owner != city.name:
                    raise ValueError(
                        f"the name {name!r} of {city.name!r} is also a name of {owner!r}; "
                        "city names and aliases must be unique"
                    )
        self._guess_keys = {f"is it {key}" for key in self._names} | set(self._names)
        self._table: dict[str, CityQuestion] = {}
        self._locations: dict[str, tuple[str, ...]] = {}
        self._build_table()
        self.parse = lru_cache(maxsize=65_536)(self._parse)

    @classmethod
    def default(cls) -> GuessMyCityOracle:
        """The oracle over the shipped cities (built once per process)."""
        return _default_oracle()

    # -- the question table -------------------------------------------------
    def _add(self, phrasing: str, question: CityQuestion) -> None:
        key = question_key(normalize(phrasing))
        if key in self._guess_keys:
            return  # "Is it Singapore?" stays a guess of the city, not a country question
        owner = self._table.setdefault(key, question)
        if owner != question:
            raise ValueError(
                f"the question {phrasing!r} reads the same as another with a different "
                f"meaning ({owner} vs {question}); make the names in the data distinct"
            )

    def _add_all(
        self, templates: Iterable[str], phrases: Iterable[str], question: CityQuestion
    ) -> None:
        phrases = list(phrases)
        for template in templates:
            for phrase in phrases:
                self._add(template.format(phrase), question)

    def _build_table(self) -> None:
        db = self.database
        ask = CityQuestion
        for country in db.countries:
            value = f"country:{country.name}"
            names = [country.name, *country.aliases]
            self._register_location(names, value)
            self._add_all(COUNTRY_TEMPLATES, names, ask("ask", "location", (value,)))
            self._add_all(ADJECTIVE_TEMPLATES, country.adjectives, ask("ask", "location", (value,)))
            capital_of = ask("ask", "capital_of", (country.name,))
            self._add_all(CAPITAL_OF_TEMPLATES, names, capital_of)
            self._add_all(["Is it the {} capital?"], country.adjectives, capital_of)
        for continent in db.continents:
            value = f"continent:{continent.name}"
            names = [continent.name, *continent.aliases]
            self._register_location(names, value)
            self._add_all(CONTINENT_TEMPLATES, names, ask("ask", "location", (value,)))
            self._add_all(
                ADJECTIVE_TEMPLATES, continent.adjectives, ask("ask", "location", (value,))
            )
        both_americas = ("continent:North America", "continent:South America")
        self._register_location(["the Americas"], *both_americas)
        for key, values in self._locations.items():
            self._add_all(LOCATION_TEMPLATES, [key], ask("ask", "location", values))
        speakers: dict[str, list[str]] = {}
        for language in db.languages:
            for name in (language.name, *language.aliases):
                speakers.setdefault(name, []).append(language.name)
        for name, languages in speakers.items():
            values = tuple(languages)
            self._add_all(LANGUAGE_TEMPLATES, [name], ask("ask", "language", values))
            self._add_all(MAIN_LANGUAGE_TEMPLATES, [name], ask("ask", "main_language", values))
        for climate in db.climates:
            question = ask("ask", "climate", (climate.name,))
            self._add_all(CLIMATE_TEMPLATES, [climate.name, *climate.aliases], question)
        self._add_all(TROPICS, [""], ask("ask", "climate", ("tropical",)))
        self._add_all(DESERT, [""], ask("ask", "climate", ("dry",)))
        for canonical, (attribute, values, negate) in FIXED.items():
            question = ask("ask", attribute, values, negate)  # type: ignore[arg-type]
            self._add_all((canonical, *PARAPHRASES.get(canonical, ())), [""], question)
        for size, phrases in SIZE_PHRASES.items():
            for attribute, comparators in (
                ("population_over", OVER),
                ("population_under", UNDER),
            ):
                amounts = [f"{cmp} {phrase}" for cmp in comparators for phrase in phrases]
                question = ask("ask", attribute, (size,))  # type: ignore[arg-type]
                self._add_all(POPULATION_TEMPLATES, amounts, question)
                self._add_all(SIZE_WORDS.get((attribute, size), ()), [""], question)

    def _register_location(self, names: Iterable[str], *values: str) -> None:
        for name in names:
            key = name_key(name)
            owner = self._locations.setdefault(key, values)
            if owner != values:
                raise ValueError(f"the place name {name!r} names both {owner} and {values}")

    # -- the game's data ----------------------------------------------------
    def secrets(self, split: str | None = None) -> Sequence[str]:
        if split is None:
            return self._splits["train"] + self._splits["test"]
        if split not in self._splits:
            raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
        return self._splits[split]

    def city(self, name: str) -> City:
        return self._cities[self._check_secret(name)]

    def canonical_questions(self) -> Sequence[str]:
        return [*_OPEN_QUESTIONS, *self.weak_questions()]

    def weak_questions(self) -> Sequence[str]:
        """Yes/no questions only: the weak player never asks an open question."""
        db = self.database
        questions = ["Is it on the coast?", "Is it a capital city?"]
        questions += [f"Is it in {c.name}?" for c in db.continents]
        questions += [f"Is it in {_with_article(c)}?" for c in db.countries]
        questions += [f"Do people speak {lang.name} there?" for lang in db.languages]
        questions += [f"Is the climate {c.name}?" for c in db.climates]
        questions += [
            "Does it have more than 1 million people?",
            "Does it have more than 5 million people?",
            "Is it in the southern hemisphere?",
        ]
        return questions

    def guess_question(self, secret: str) -> str:
        return f"Is it {self._check_secret(secret)}?"

    def question_forms(self) -> dict[CityQuestion, str]:
        """One phrasing of every distinct question the oracle understands (for tests)."""
        forms: dict[CityQuestion, str] = {}
        for key, question in self._table.items():
            forms.setdefault(question, key)
        return forms

    # -- answering ------------------------------------------------------------
    def _parse(self, question: str) -> CityQuestion:
        tokens = normalize(question)
        parsed = self._table.get(question_key(tokens))
        if parsed is not None:
            return parsed
        rest = tokens[2:] if tokens[:2] == ("is", "it") else tokens
        for prefix in (("in",), ("city", "of"), ("city",)):
            if rest[: len(prefix)] == prefix:
                rest = rest[len(prefix) :]
                break
        guesses = split_names(rest, self._names)
        if guesses is not None:
            return CityQuestion("guess", guesses=guesses)
        if tokens[:3] == ("is", "it", "in") and any(t in SEPARATORS for t in tokens):
            places = split_names(tokens[3:], {key: key for key in self._locations})
            if places is not None:
                values = tuple(v for place in places for v in self._locations[place])
                return CityQuestion("ask", "location", values)
        return _INVALID

    def judge(self, question: str, secret: str) -> Verdict:
        city = self._cities.get(secret)
        if city is None:
            raise self._unknown_secret(secret)
        parsed = self.parse(question)
        if parsed.kind == "guess":
            return guess_verdict(parsed.guesses, secret)
        if parsed.kind == "invalid" or parsed.attribute is None:
            return Verdict(INVALID_QUESTION)
        return Verdict(_ANSWERS[parsed.attribute](self, city, parsed))

    def answer(self, question: str, secret: str) -> str:
        return self.judge(question, secret).answer

    def make_tool(self, secret: str) -> BaseTool:
        """A LangChain tool answering questions about the city ``secret``."""
        self._check_secret(secret)
        return make_question_tool(
            lambda question: self.answer(question, secret),
            name="ask_about_city",
            description=(
                "Ask one question about the secret city (e.g. 'Is it in Europe?', 'What "
                "language do they speak?') or guess it (e.g. 'Is it Paris?'). Unknown "
                "questions are answered 'Invalid question.'; a guess naming exactly the "
                "secret city is answered 'Yes.' and wins."
            ),
        )

    def country_hidden(self, city: City) -> bool:
        """Naming the country would name the city (Mexico City, Singapore, Tunis)."""
        city_name, country = name_key(city.name), name_key(city.country)
        return country in city_name or city_name in country

    def _climates_of(self, city: City) -> tuple[str, ...]:
        group = self._climate_groups[city.climate]
        return (city.climate,) if group is None else (city.climate, group)

    def _check_secret(self, secret: str) -> str:
        if secret not in self._cities:
            raise self._unknown_secret(secret)
        return secret

    def _unknown_secret(self, secret: str) -> ValueError:
        return ValueError(
            f"unknown secret city {secret!r}; use one of the {len(self._cities)} cities "
            f"of the data, e.g. {list(self._cities)[:3]}"
        )


_OPEN_QUESTIONS = tuple(q for q, (attribute, _, _) in FIXED.items() if attribute.startswith("what"))


def _with_article(place: Place) -> str:
    return f"{place.article} {place.name}" if place.article else place.name


def _yes(condition: bool, question: CityQuestion) -> str:
    return YES if condition != question.negate else NO


def _location(oracle: GuessMyCityOracle, city: City, q: CityQuestion) -> str:
    here = (f"country:{city.country}", f"continent:{city.continent}")
    return _yes(any(value in here for value in q.values), q)


def _what_country(oracle: GuessMyCityOracle, city: City, q: CityQuestion) -> str:
    if oracle.country_hidden(city):
        return HIDDEN_COUNTRY
    return f"It is in {_with_article(oracle._countries[city.country])}."


_BAND_INDEX = {band: index for index, band in enumerate(POPULATION_BANDS)}
_THRESHOLD_INDEX = {"1": 1, "5": 2}  # the first band at or above the threshold

_ANSWERS: dict[str, Callable[[GuessMyCityOracle, City, CityQuestion], str]] = {
    "location": _location,
    "capital_of": lambda o, c, q: _yes(c.capital and c.country in q.values, q),
    "coastal": lambda o, c, q: _yes(c.coastal, q),
    "capital": lambda o, c, q: _yes(c.capital, q),
    "population_over": lambda o, c, q: _yes(
        _BAND_INDEX[c.population] >= _THRESHOLD_INDEX[q.values[0]], q
    ),
    "population_under": lambda o, c, q: _yes(
        _BAND_INDEX[c.population] < _THRESHOLD_INDEX[q.values[0]], q
    ),
    "language": lambda o, c, q: _yes(any(lang in q.values for lang in c.languages), q),
    "main_language": lambda o, c, q: _yes(c.languages[0] in q.values, q),
    "climate": lambda o, c, q: _yes(any(v in q.values for v in o._climates_of(c)), q),
    "hemisphere": lambda o, c, q: _yes(c.hemisphere in q.values, q),
    "what_continent": lambda o, c, q: f"It is in {c.continent}.",
    "what_country": _what_country,
    "what_language": lambda o, c, q: f"The main language is {c.languages[0]}.",
    "what_climate": lambda o, c, q: f"The climate is {c.climate}.",
    "what_population": lambda o, c, q: _BAND_TEXT[c.population],
    "what_hemisphere": lambda o, c, q: f"It is in the {c.hemisphere}ern hemisphere.",
}


@cache
def _default_oracle() -> GuessMyCityOracle:
    return GuessMyCityOracle(load_city_database())


def answer_city_question(question: str, city: str) -> str:
    """Answer ``question`` about the secret ``city``."""
    return _default_oracle().answer(question, city)


def make_guess_my_city_tool(city: str) -> BaseTool:
    """A LangChain tool for playing Guess My City against ``city``."""
    return _default_oracle().make_tool(city)
