"""The Guess My City data: the cities and the names questions may use, checked when loaded.

The cities (``data/guess_my_city.json``) carry country, continent, coast,
capital status, population band, languages, climate and hemisphere; the
continents, countries, languages and climates list every name, alias and
adjective a question may use for them. `load_city_database` reads and
validates the file, so that a city naming an unknown country fails on load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DATA_PATH = Path(__file__).parent.parent / "data" / "guess_my_city.json"

PopulationBand = Literal["under 1 million", "1 to 5 million", "over 5 million"]
POPULATION_BANDS: tuple[PopulationBand, ...] = (
    "under 1 million",
    "1 to 5 million",
    "over 5 million",
)


class Place(BaseModel):
    """A continent or a country: how questions may name it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    aliases: list[str] = Field(default_factory=list)
    adjectives: list[str] = Field(default_factory=list, description="e.g. 'French' for France.")
    article: str | None = Field(None, description="'the' for names read with it.")


class Language(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    aliases: list[str] = Field(
        default_factory=list, description="Other names; one alias may cover several languages."
    )


class Climate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    group: str | None = Field(None, description="A broader climate it also counts as.")
    aliases: list[str] = Field(default_factory=list)


class City(BaseModel):
    """One city that can be the secret."""

    model_config = ConfigDict(extra="forbid")

    name: str
    aliases: list[str] = Field(default_factory=list)
    country: str
    continent: str
    coastal: bool = Field(description="On a sea or ocean coast (lakes and rivers do not count).")
    capital: bool = Field(description="A national capital (seat of government included).")
    population: PopulationBand = Field(description="Urban-area population band, approximate.")
    languages: list[str] = Field(min_length=1, description="Main language first.")
    climate: str
    hemisphere: Literal["north", "south"]
    split: Literal["train", "test"]


class CityDatabase(BaseModel):
    """The game's data, checked for consistency when loaded."""

    model_config = ConfigDict(extra="forbid")

    description: str
    continents: list[Place]
    countries: list[Place]
    languages: list[Language]
    climates: list[Climate]
    cities: list[City]

    @model_validator(mode="after")
    def _check(self) -> CityDatabase:
        known = {
            "continent": {c.name for c in self.continents},
            "country": {c.name for c in self.countries},
            "language": {lang.name for lang in self.languages},
            "climate": {c.name for c in self.climates},
        }
        for climate in self.climates:
            if climate.group is not None and climate.group not in known["climate"]:
                raise ValueError(f"climate {climate.name!r} has unknown group {climate.group!r}")
        names = [city.name for city in self.cities]
        if len(set(names)) != len(names):
            raise ValueError("city names must be unique")
        for city in self.cities:
            for field, values in (
                ("continent", [city.continent]),
                ("country", [city.country]),
                ("language", city.languages),
                ("climate", [city.climate]),
            ):
                unknown = [v for v in values if v not in known[field]]
                if unknown:
                    raise ValueError(
                        f"city {city.name!r} has unknown {field} {unknown}; add it to the "
                        f"{field} list of the data file or fix the spelling"
                    )
        return self


def load_city_database(path: str | Path | None = None) -> CityDatabase:
    """Read and validate city data (the shipped file by default)."""
    source = Path(path) if path is not None else DATA_PATH
    with source.open(encoding="utf-8") as handle:
        return CityDatabase.model_validate(json.load(handle))
