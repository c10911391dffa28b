"""Property tests of config values and ``--set`` overrides (`training.config.load_config`).

Whatever the overrides, the file bytes or the values in a file, loading a run
config returns a config or raises `ConfigError` with one line naming where the
problem came from; nothing else escapes (no ValueError from a number past the
digit limit, no RecursionError from deep nesting, no TypeError from a key set
inside a plain value, no endless loop on a YAML alias that holds itself). A
config that loads holds only finite numbers, and an override that is accepted
is the value the config holds. In particular NaN and infinity, however they are
spelt (``nan``, ``inf``, ``Infinity``, ``.inf``, ``1e999``, quoted), are refused
for every float field of every algorithm, sampling temperature included, with
one line that names the key.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from archer_agents.cli.run_config import ALGORITHMS, algorithm_classes, run_config_class
from archer_agents.training.config import (
    ConfigError,
    load_config,
    parse_override,
    read_config_file,
)
from archer_agents.training.trainer_config import TrainerConfig

RUN = run_config_class(algorithm_classes("archer")[1])
SECTIONS = {"trainer": {}, "algorithm": {}}
"""What `archer train` starts from: every section present, so only overrides can be wrong."""
FAST = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

KEYS = [
    *(f"trainer.{name}" for name in TrainerConfig.model_fields),
    *(f"algorithm.{name}" for name in RUN.model_fields["algorithm"].annotation.model_fields),
    *TrainerConfig.model_fields,
]
HOSTILE = [
    "9" * 5000,
    "-" + "9" * 5000,
    "[" * 3000,
    "{a: " * 500,
    "&a [*a]",
    "&a [*a, *a]",
    "&a {x: *a}",
    ".nan",
    "-.inf",
    "1e999",
    "nan",
    "inf",
    "-Infinity",
    "!!python/object/apply:os.system ['true']",
    "2020-01-01",
    "~",
    "",
    "'",
    "[1, 2",
    "- - -",
    "\ud800",
    "0x1F",
]
keys = st.one_of(
    st.sampled_from([*KEYS, "trainer", "algorithm", "trainer.", ".", "x.y", ""]),
    st.text(max_size=15),
)
values = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=30),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=6,
    ).map(lambda value: json.dumps(value)),
)
overrides = st.lists(
    st.one_of(st.tuples(keys, values).map(lambda kv: f"{kv[0]}={kv[1]}"), st.text(max_size=20)),
    max_size=4,
)


def numbers_in(value: Any) -> list[float]:
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, dict):
        return [n for item in value.values() for n in numbers_in(item)]
    if isinstance(value, list | tuple):
        return [n for item in value for n in numbers_in(item)]
    return [value] if isinstance(value, float) else []


def assert_one_named_line(error: ConfigError, *names: str) -> None:
    text = str(error)
    assert text and "\n" not in text
    assert any(name in text for name in names), text


@FAST
@given(overrides)
def test_any_overrides_give_a_config_or_a_named_config_error(items: list[str]) -> None:
    try:
        config = load_config(RUN, None, items, defaults=SECTIONS)
    except ConfigError as error:
        assert_one_named_line(error, "override")
        return
    assert all(math.isfinite(n) for n in numbers_in(config))


@FAST
@given(st.text(max_size=60) | st.sampled_from(HOSTILE))
def test_parse_override_reads_any_text_or_names_it(text: str) -> None:
    try:
        key, value = parse_override(text)
    except ConfigError as error:
        assert_one_named_line(error, "override")
        return
    assert key and "=" in text
    assert all(math.isfinite(n) for n in numbers_in(value))


@FAST
@given(
    field=st.sampled_from(["iterations", "episodes_per_iteration", "num_envs", "keep_checkpoints"]),
    number=st.integers(min_value=-(10**30), max_value=10**30),
)
def test_an_accepted_integer_override_is_the_value_held(field: str, number: int) -> None:
    """ge=1 fields: 1 and above are taken as given; anything else is refused, naming it."""
    try:
        config = load_config(RUN, None, [f"trainer.{field}={number}"], defaults=SECTIONS)
    except ConfigError as error:
        assert number < 1
        assert_one_named_line(error, f"trainer.{field}")
        return
    assert getattr(config.trainer, field) == number >= 1  # type: ignore[attr-defined]


@FAST
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".yaml", ".yml", ".toml", ".json"]))
def test_any_config_file_bytes_give_a_mapping_or_a_named_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, suffix: str
) -> None:
    path = tmp_path_factory.mktemp("cfg") / f"run{suffix}"
    path.write_bytes(data)
    try:
        mapping = read_config_file(path)
    except ConfigError as error:
        assert_one_named_line(error, str(path))
        return
    assert isinstance(mapping, dict) and suffix != ".json"


file_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**6), max_value=10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner),
    max_leaves=10,
)


@FAST
@given(st.dictionaries(keys, file_values, max_size=5))
def test_any_values_in_a_yaml_file_give_a_config_or_a_named_error(
    tmp_path_factory: pytest.TempPathFactory, content: dict[str, Any]
) -> None:
    path = tmp_path_factory.mktemp("cfg") / "run.yaml"
    path.write_text(yaml.safe_dump(content), encoding="utf-8")
    try:
        config = load_config(RUN, path, defaults=SECTIONS)
    except ConfigError as error:
        assert_one_named_line(error, str(path), "invalid RunConfig")
        return
    assert all(math.isfinite(n) for n in numbers_in(config))


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("trainer.iterations=" + "9" * 5000, "digits"),
        ("actor_lr=[" + "[" * 3000, "nested too deeply"),
        ("algorithm.actor_lr=.nan", "not a finite number"),
        ("trainer.time_budget_s=1e999", "not a finite number"),
        ("algorithm.critic_lr=&a [*a, *a]", "YAML anchor"),
    ],
)
def test_each_kind_of_unreadable_value_is_named(override: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(RUN, None, [override], defaults=SECTIONS)


def test_a_key_inside_a_section_set_to_a_plain_value_is_named() -> None:
    with pytest.raises(ConfigError, match="section 'trainer' was given a plain value"):
        load_config(RUN, None, ["trainer=3", "trainer.iterations=5"], defaults=SECTIONS)


def test_a_config_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_bytes(b"trainer:\n  iterations: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_config_file(path)


NON_FINITE = [
    "nan",
    "NaN",
    "-nan",
    "inf",
    "+inf",
    "-inf",
    "INF",
    "Infinity",
    "-Infinity",
    " inf ",
    "1e999",
    "-1e999",
    ".nan",
    ".inf",
    "-.inf",
    '"inf"',
    "'nan'",
]
"""Every way a command line or file can spell NaN or an infinity."""
NEEDS = {"offline_archer": {"data": ["episodes.jsonl"]}}
"""Algorithm fields without a default (what `archer train` gets from its options)."""


def float_fields(model: type[BaseModel]) -> list[str]:
    return [name for name, field in model.model_fields.items() if "float" in str(field.annotation)]


FLOAT_KEYS = [
    (name, f"algorithm.{field}")
    for name in ALGORITHMS
    if name != "offline_then_online"  # its sections are offline_archer's and archer's
    for field in float_fields(algorithm_classes(name)[1])
] + [("archer", f"trainer.{field}") for field in float_fields(TrainerConfig)]


def test_the_float_fields_under_test_include_every_sampling_temperature() -> None:
    keys = {key for _, key in FLOAT_KEYS}
    assert "algorithm.temperature" in keys and "trainer.time_budget_s" in keys
    with_temperature = {name for name, key in FLOAT_KEYS if key == "algorithm.temperature"}
    assert with_temperature == {"archer", "chai", "filtered_bc", "offline_archer"}


@FAST
@given(key=st.sampled_from(FLOAT_KEYS), spelling=st.sampled_from(NON_FINITE))
def test_no_float_field_takes_nan_or_infinity_however_it_is_spelt(
    key: tuple[str, str], spelling: str
) -> None:
    algorithm, dotted = key
    run = run_config_class(algorithm_classes(algorithm)[1])
    defaults = {"trainer": {}, "algorithm": NEEDS.get(algorithm, {})}
    with pytest.raises(ConfigError) as refused:
        load_config(run, None, [f"{dotted}={spelling}"], defaults=defaults)
    assert_one_named_line(refused.value, dotted, f"{dotted}=")
    assert "not a finite number" in str(refused.value)


@pytest.mark.parametrize("spelling", ["inf", "-Infinity", "nan", ".inf", ".nan", "'inf'"])
def test_a_config_file_temperature_of_nan_or_infinity_is_refused(
    tmp_path: Path, spelling: str
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(f"algorithm:\n  temperature: {spelling}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a finite number") as refused:
        load_config(RUN, path, defaults=SECTIONS)
    assert_one_named_line(refused.value, str(path))
    assert "temperature" in str(refused.value) or ".inf" in spelling or ".nan" in spelling


def test_finite_temperatures_are_held_as_given() -> None:
    for text, value in [("0", 0.0), ("0.7", 0.7), ("1e-3", 1e-3), ("100", 100.0)]:
        run = run_config_class(algorithm_classes("chai")[1])
        config = load_config(run, None, [f"algorithm.temperature={text}"], defaults=SECTIONS)
        assert config.algorithm.temperature == value  # type: ignore[attr-defined]
