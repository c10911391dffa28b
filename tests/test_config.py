"""Config loading: files (YAML, TOML), key=value overrides, sections, and the errors users see."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field, create_model

from archer_agents.training.algorithms.archer import ArcherConfig
from archer_agents.training.config import (
    ConfigError,
    dump_config,
    load_config,
    parse_override,
    parse_value,
)
from archer_agents.training.trainer import TrainerConfig

RunConfig = create_model(
    "RunConfig",
    __config__=ConfigDict(extra="forbid"),
    trainer=(TrainerConfig, Field(default_factory=TrainerConfig)),
    algorithm=(ArcherConfig, Field(default_factory=ArcherConfig)),
)


class Shared(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0


class TwoSeeds(BaseModel):
    model_config = ConfigDict(extra="forbid")
    first: Shared = Field(default_factory=Shared)
    second: Shared = Field(default_factory=Shared)


def test_values_are_read_as_yaml_scalars() -> None:
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("1e-4") == pytest.approx(1e-4)
    assert parse_value("0.5") == 0.5
    assert parse_value("true") is True
    assert parse_value("null") is None
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("hashing") == "hashing"
    assert parse_override("actor_lr = 2e-3") == ("actor_lr", pytest.approx(2e-3))
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("actor_lr")


def test_defaults_then_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "archer.yaml"
    path.write_text("actor_lr: 1.0e-3\ncritic_steps: 7\nadvantage_clip: 2\n")
    config = load_config(ArcherConfig, path, ["critic_steps=9", "min_visits=50"])
    assert config.actor_lr == pytest.approx(1e-3)
    assert config.critic_steps == 9  # the override wins over the file
    assert config.min_visits == 50
    assert config.advantage_clip == 2.0
    assert config.gamma == ArcherConfig().gamma  # untouched default


def test_toml_file_with_sections_and_bare_keys(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[trainer]\niterations = 4\n\n[algorithm]\nencoder = "hashing"\n')
    run = load_config(
        RunConfig, path, ["actor_steps=1", "trainer.seed=3", "episodes_per_iteration=8"]
    )
    assert run.trainer.iterations == 4 and run.trainer.seed == 3
    assert run.trainer.episodes_per_iteration == 8  # bare key: only the trainer has it
    assert run.algorithm.actor_steps == 1
    assert run.algorithm.encoder == "hashing"


def test_unknown_key_suggests_the_closest_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'actor_rl'.*did you mean 'actor_lr'"):
        load_config(ArcherConfig, None, ["actor_rl=1e-3"])
    path = tmp_path / "bad.yaml"
    path.write_text("trainer:\n  iteratons: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*did you mean 'trainer.iterations'"):
        load_config(RunConfig, path)
    with pytest.raises(ConfigError, match=r"did you mean 'algorithm.min_visits'"):
        load_config(RunConfig, None, ["min_visit=3"])


def test_ambiguous_bare_key_names_the_sections() -> None:
    with pytest.raises(ConfigError, match=r"first.seed, second.seed"):
        load_config(TwoSeeds, None, ["seed=1"])
    assert load_config(TwoSeeds, None, ["second.seed=1"]).second.seed == 1
    run = load_config(RunConfig, None, ["trainer.seed=5", "algorithm.seed=6"])
    assert (run.trainer.seed, run.algorithm.seed) == (5, 6)


def test_bad_values_name_the_key_the_source_and_the_rule(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"actor_lr \(got -1\) from override 'actor_lr=-1'.*greater than 0"
    ):
        load_config(ArcherConfig, None, ["actor_lr=-1"])
    with pytest.raises(ConfigError, match=r"critic_steps.*valid integer"):
        load_config(ArcherConfig, None, ["critic_steps=many"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_config(ArcherConfig, None, ["gamma.x=1"])


def test_cross_field_validation_says_what_to_change() -> None:
    with pytest.raises(ConfigError, match="normalize_advantages needs at least two"):
        load_config(ArcherConfig, None, ["normalize_advantages=true", "actor_batch_size=1"])


def test_bad_files_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(ArcherConfig, tmp_path / "missing.yaml")
    json_file = tmp_path / "config.json"
    json_file.write_text("{}")
    with pytest.raises(ConfigError, match=r"\.yaml, \.yml or \.toml"):
        load_config(ArcherConfig, json_file)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(ArcherConfig, listing)
    broken = tmp_path / "broken.toml"
    broken.write_text("actor_lr = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(ArcherConfig, broken)


def test_defaults_are_applied_before_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("algorithm:\n  critic_steps: 3\n")
    run = load_config(
        RunConfig, path, defaults={"algorithm": {"critic_steps": 10, "actor_steps": 2}}
    )
    assert run.algorithm.critic_steps == 3
    assert run.algorithm.actor_steps == 2


def test_a_dumped_config_loads_back_equal(tmp_path: Path) -> None:
    config = ArcherConfig(actor_lr=3e-4, min_visits=20, advantage_clip=1.5)
    path = dump_config(config, tmp_path / "used.yaml")
    assert load_config(ArcherConfig, path) == config
