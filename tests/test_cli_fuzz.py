"""Property tests of the command line: any argument gets a named error, never a traceback.

Each property fills one or two slots of a real ``archer`` command line with
hostile values (any text, huge and negative numbers, NaN, JSON that nests or
overflows, random bytes for a log or export) and runs it with Typer's
``CliRunner``. Whatever the values, the command ends with exit code 0, 1 or 2
and, when it fails, one line saying what is wrong (``error: ...``, or Click's
usage message naming the option); no exception escapes. The command lines are
chosen to stop at validation or do a few scripted episodes, so no model is
ever loaded and the file runs in seconds. Float options (``--temperature``,
``--lr``, ``--archer-minutes``) refuse NaN and infinity, however spelt, as a
usage error naming the option, before the command does anything.
"""

from __future__ import annotations

import json
import math
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from archer_agents.cli.app import app

ENV = "archer/TwentyQuestionsMini-v0"
FAST = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

HOSTILE_NUMBERS = st.sampled_from(
    ["-1", "0", "nan", "inf", "-inf", "1e999", "9" * 40, "-" + "9" * 40, "", " ", "0x10", "1.5"]
)
numbers = st.one_of(
    HOSTILE_NUMBERS,
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(max_size=8),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
).map(lambda value: json.dumps(value))
env_arg_values = st.one_of(
    json_values,
    st.text(max_size=20),
    st.sampled_from(["NaN", "Infinity", "1e999", "[" * 3000, "9" * 5000, '"\\ud800"']),
)


def invoke(*argv: str) -> Result:
    return CliRunner().invoke(app, list(argv))


def assert_named(result: Result) -> None:
    """Exit 0, 1 or 2; no exception escaped; a failure says so in a line naming the problem."""
    escaped = result.exception
    if escaped is not None and not isinstance(escaped, SystemExit):
        raise AssertionError(f"uncaught {type(escaped).__name__}: {escaped}") from escaped
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        error_lines = [
            line for line in result.output.splitlines() if "error" in line.lower() or "│" in line
        ]
        assert error_lines, result.output


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-fuzz")


@FAST
@given(
    episodes=numbers,
    num_envs=numbers,
    seed=numbers,
    max_new_tokens=numbers,
    temperature=numbers,
)
def test_rollout_counts_and_numbers(
    out_dir: Path, episodes: str, num_envs: str, seed: str, max_new_tokens: str, temperature: str
) -> None:
    out = out_dir / "rollout.jsonl"
    result = invoke(
        "rollout", ENV, "--policy", "expert", "--out", str(out),
        "--episodes", episodes, "--num-envs", num_envs, "--seed", seed,
        "--max-new-tokens", max_new_tokens, "--temperature", temperature,
    )  # fmt: skip
    assert_named(result)
    if result.exit_code == 0:  # only a small, valid count can have run
        assert 1 <= int(episodes) <= 2**70
        assert 0 <= float(temperature) < math.inf  # never NaN, infinite or negative


# A valid count that plays no more than a few scripted episodes.
few = st.integers(min_value=1, max_value=3).map(str)


@FAST
@given(
    env_id=st.one_of(
        st.text(max_size=30),
        st.text(alphabet=string.ascii_letters + "/-_.", max_size=30),
        st.sampled_from(["nonexistent_zz:x-v0", "json:x-v0", ":", "archer/", "a" * 5000]),
    ),
    episodes=few,
)
def test_rollout_environment_ids(out_dir: Path, env_id: str, episodes: str) -> None:
    result = invoke(
        "rollout", env_id, "--policy", "expert", "--episodes", episodes,
        "--out", str(out_dir / "ids.jsonl"),
    )  # fmt: skip
    assert_named(result)
    assert result.exit_code == 2 or env_id.startswith("archer/")


@FAST
@given(
    key=st.one_of(
        st.sampled_from(["max_turns", "kb", "seed", "bogus", "", "1x", "a b"]),
        st.text(max_size=10),
    ),
    value=env_arg_values,
)
def test_rollout_env_args(out_dir: Path, key: str, value: str) -> None:
    result = invoke(
        "rollout", ENV, "--policy", "expert", "--episodes", "1",
        "--out", str(out_dir / "args.jsonl"), "--env-arg", f"{key}={value}",
    )  # fmt: skip
    assert_named(result)
    if value in ("NaN", "Infinity", "1e999"):
        assert result.exit_code == 2  # never a non-finite constructor argument


override_keys = st.one_of(
    st.sampled_from([
        "iterations", "trainer.iterations", "trainer.eval_every", "trainer.time_budget_s",
        "actor_lr", "algorithm.gamma", "algorithm.critic_lr", "trainer", "algorithm", "seed",
        "trainer.", ".", "x.y", "eval_split", "",
    ]),
    st.text(max_size=12),
)  # fmt: skip
override_values = st.one_of(
    HOSTILE_NUMBERS,
    st.text(max_size=20),
    st.sampled_from(["[" * 3000, "&a [*a]", ".nan", "2020-01-01", "{a: 1}", "~", "'"]),
)


@FAST
@given(
    overrides=st.lists(
        st.one_of(
            st.tuples(override_keys, override_values).map(lambda kv: f"{kv[0]}={kv[1]}"),
            st.text(max_size=15),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_train_set_overrides(out_dir: Path, overrides: list[str]) -> None:
    """Without --model, a valid config stops at "--model is required": always exit 2."""
    argv = ["train", "--env", ENV, "--out", str(out_dir / "run")]
    for override in overrides:
        argv += ["--set", override]
    result = invoke(*argv)
    assert_named(result)
    assert result.exit_code == 2


@FAST
@given(data=st.binary(max_size=300), strict=st.booleans(), steps=numbers)
def test_bc_on_any_log_bytes(out_dir: Path, data: bytes, strict: bool, steps: str) -> None:
    log = out_dir / "any.jsonl"
    log.write_bytes(data)
    result = invoke(
        "bc", str(log), "--model", str(out_dir / "no-model"), "--out", str(out_dir / "bc"),
        "--steps", steps, "--strict" if strict else "--lenient",
    )  # fmt: skip
    assert_named(result)
    assert result.exit_code == 2  # nothing here can be cloned: no model


@FAST
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.lists(json_values, max_size=4).map(lambda lines: "\n".join(lines).encode()),
    ),
    strict=st.booleans(),
)
def test_import_langsmith_on_any_export_bytes(out_dir: Path, data: bytes, strict: bool) -> None:
    export = out_dir / "export.jsonl"
    export.write_bytes(data)
    out = out_dir / "imported.jsonl"
    out.unlink(missing_ok=True)
    result = invoke(
        "import-langsmith", str(export), "--out", str(out), "--strict" if strict else "--lenient"
    )
    assert_named(result)
    if strict and result.exit_code == 2:
        assert not out.exists()  # --strict writes nothing when a line is bad


def test_every_log_reading_command_offers_the_same_lenient_option() -> None:
    """bc, train and import-langsmith read logs: each takes --lenient/--strict."""
    for command in ("bc", "train", "import-langsmith"):
        text = invoke(command, "--help").output
        assert "--lenient" in text and "--strict" in text, command


NON_FINITE = ["nan", "NaN", "-nan", "inf", "+inf", "-inf", "Infinity", "-Infinity", "1e999"]
"""What Click's float type reads as NaN or an infinity."""
GUARD = "not-a-number"
"""Given to an integer option after the float under test: if the float were taken, the command
would still stop (naming the other option) instead of running."""
FLOAT_OPTIONS = {
    "rollout --temperature": ["rollout", ENV, "--policy", "expert", "--temperature"],
    "eval --temperature": ["eval", ENV, "--policy", "expert", "--temperature"],
    "browse --temperature": ["browse", "login", "--out", "browse-out", "--temperature"],
    "bc --lr": ["bc", "log.jsonl", "--model", "m", "--out", "o", "--lr"],
    "quickstart --archer-minutes": ["quickstart", "--archer-minutes"],
}
GUARDS = {"bc": "--steps", "quickstart": "--bc-steps"}


@FAST
@given(option=st.sampled_from(sorted(FLOAT_OPTIONS)), spelling=st.sampled_from(NON_FINITE))
def test_nan_and_infinity_in_a_float_option_are_a_usage_error(option: str, spelling: str) -> None:
    command, name = option.split()
    argv = [*FLOAT_OPTIONS[option], spelling, GUARDS.get(command, "--episodes"), GUARD]
    result = invoke(*argv)
    assert_named(result)
    assert result.exit_code == 2
    text = " ".join(result.output.replace("│", " ").split())  # the error box, unwrapped
    assert f"Invalid value for '{name}': {float(spelling)} is not a finite number" in text


@FAST
@given(
    command=st.sampled_from(["rollout", "eval", "browse"]),
    value=st.floats(max_value=-1e-300, allow_infinity=False),
)
def test_a_negative_temperature_is_a_usage_error(command: str, value: float) -> None:
    argv = [*FLOAT_OPTIONS[f"{command} --temperature"], repr(value), "--episodes", GUARD]
    result = invoke(*argv)
    assert result.exit_code == 2
    text = " ".join(result.output.replace("│", " ").split())
    assert "Invalid value for '--temperature'" in text and "is below 0 (0 is greedy)" in text


def test_a_finite_temperature_is_taken(out_dir: Path) -> None:
    out = out_dir / "temperature.jsonl"
    for value in ("0", "0.7", "1e-3"):
        result = invoke(
            "rollout", ENV, "--policy", "expert", "--out", str(out), "--episodes", "1",
            "--num-envs", "1", "--temperature", value,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
