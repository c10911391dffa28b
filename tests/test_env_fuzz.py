"""Property tests: no utterance, however pathological, makes an environment raise.

An environment's ``step`` is total over strings: the model's mistakes (any
unicode, lone surrogates, NUL, deeply nested JSON or calls, huge numbers, the
parsers' own syntax in pieces) come back as an observation naming the problem,
with ``info["invalid_action"]`` or ``info["tool_error"]``, never as an
exception. Checked over every registered non-browser environment, a
`make_tool_env` environment in each tool format, and the parsers beneath them
(`bind_positional`, schema binding, `read_tool_calls`). Each property runs a
bounded number of examples on small environments, so the file stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.tools import tool

from archer_agents.environments import make_tool_env, registered_ids
from archer_agents.environments.tool_env import ToolCallingEnv, ToolTask, bind_arguments
from archer_agents.formats.chat_calls import read_tool_calls
from archer_agents.formats.tool_calls import (
    ActionParseError,
    ToolCall,
    bind_positional,
    parse_tool_call,
)
from archer_agents.formats.tool_formats import tool_format

sys.path.insert(0, str(Path(__file__).parent))  # the small kwargs of test_registry
from test_registry import small_kwargs

EXAMPLES = 100
"""Examples per environment and property: enough to hit every strategy branch, fast on 2 cores."""

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- environments -------------------------------------------------------------------------


@tool
def lookup(key: str, depth: int = 0) -> str:
    """Look a key up."""
    return f"value of {key} at {depth}"


@tool
def finish(answer: str) -> str:
    """Finish with an answer."""
    return f"Finished: {answer}"


def _user_env(tool_format: str) -> gym.Env:
    tasks = [{"task_id": str(i), "instruction": f"Find key {i}, then finish."} for i in range(4)]
    return make_tool_env(
        make_tools=lambda state: [lookup, finish],
        new_state=dict,
        tasks={"train": tasks[:2], "test": tasks[2:]},
        reward=lambda state, task, calls: any(c.name == "finish" for c in calls),
        final_tools=["finish"],
        max_turns=4,
        tool_format=tool_format,
    )


USER_ENVS = {f"make_tool_env:{fmt}": fmt for fmt in ("embedded", "hermes", "llama3_json")}
ENV_IDS = [i for i in registered_ids() if not i.endswith("Browser-v0")] + list(USER_ENVS)
_ENVS: dict[str, gym.Env] = {}


def env_for(env_id: str) -> gym.Env:
    """One environment per id for the whole module (building SupportSim is not free)."""
    if env_id not in _ENVS:
        if env_id in USER_ENVS:
            _ENVS[env_id] = _user_env(USER_ENVS[env_id])
        else:
            _ENVS[env_id] = gym.make(env_id, **small_kwargs(env_id))
    return _ENVS[env_id]


def teardown_module() -> None:
    for env in _ENVS.values():
        env.close()
    _ENVS.clear()


# -- strategies ---------------------------------------------------------------------------

ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
"""Every code point: control characters, NUL, lone surrogates (category Cs), private use."""

SYNTAX = [
    "<tool_call>",
    "</tool_call>",
    "<|python_tag|>",
    '{"name":',
    '"arguments":',
    '"parameters":',
    '"args":',
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    '"',
    "'",
    "\\",
    ",",
    ":",
    "=",
    "; ",
    "lookup(",
    "finish(",
    "respond(",
    "click(",
    "search[",
    "name(",
    "**",
    "1e999",
    "NaN",
    "-Infinity",
    "9" * 50,
    "\ud800",
    "\udfff",
    "\x00",
    "\n",
    "é",
    "💥",
]


def _deep_json(depth: int) -> str:
    return '{"a":' + "[" * depth + "]" * depth + "}"


def _deep_json_call(depth: int) -> str:
    value = "[" * depth + "1" + "]" * depth
    return '{"name": "lookup", "arguments": {"key": ' + value + "}}"


def _deep_calls(depth: int) -> str:
    return "lookup(" + "g(" * depth + ")" * depth + ")"


def _deep_unary(depth: int) -> str:
    return "lookup(" + "-" * depth + "1)"


def _deep_sum(depth: int) -> str:
    return "lookup(key=" + "1+" * depth + "1)"


def _deep_literal(depth: int) -> str:
    return "lookup(key=" + "[" * depth + "]" * depth + ")"


BUILDERS: dict[str, Callable[[int], str]] = {
    "json": _deep_json,
    "json_call": _deep_json_call,
    "calls": _deep_calls,
    "unary": _deep_unary,
    "sum": _deep_sum,
    "literal": _deep_literal,
}


def actions(limit: int) -> st.SearchStrategy[str]:
    """Utterances of at most ``limit`` characters, from noise to near-misses of a call."""
    deep = st.builds(
        lambda build, fraction: build(max(1, int(fraction * (limit - 30) / 2))),
        st.sampled_from(list(BUILDERS.values())),
        st.floats(0.0, 1.0),
    )
    numbers = st.sampled_from(
        [
            "lookup(key=" + "9" * (limit - 20) + ")",
            '{"name": "lookup", "arguments": {"key": "k", "depth": ' + "9" * (limit - 60) + "}}",
            "lookup(key='k', depth=1e999)",
            '{"name": "lookup", "arguments": {"key": "k", "depth": 1e999}}',
            '{"name": "lookup", "arguments": {"key": NaN, "depth": -Infinity}}',
            "lookup(key=1j, depth=0x" + "f" * 40 + ")",
        ]
    )
    pieces = st.lists(st.sampled_from(SYNTAX) | st.text(ANY_CHAR, max_size=8), max_size=40)
    texts = st.one_of(
        st.text(ANY_CHAR, max_size=limit),
        pieces.map("".join),
        deep,
        numbers,
    )
    return texts.map(lambda text: text[:limit])


def _check_step(env: gym.Env, action: str) -> bool:
    """Step once and check the contract; True when the episode ended."""
    observation, reward, terminated, truncated, info = env.step(action)
    assert isinstance(observation, str)
    assert env.observation_space.contains(observation), "observation outside the space"
    assert isinstance(reward, float | int)
    assert isinstance(terminated, bool) and isinstance(truncated, bool)
    if info.get("invalid_action") or info.get("tool_error"):
        assert isinstance(info.get("error"), str) and info["error"]
    return terminated or truncated


# -- properties ---------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ENV_IDS)
@FUZZ
@given(data=st.data())
def test_step_never_raises(env_id: str, data: st.DataObject) -> None:
    """A few pathological actions in a row: each is an observation; the episode goes on or ends."""
    env = env_for(env_id)
    limit = env.unwrapped.max_action_chars
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    env.reset(seed=seed)
    for action in data.draw(st.lists(actions(limit), min_size=1, max_size=3), label="actions"):
        if _check_step(env, action):
            env.reset(seed=seed)
    # The episode still works afterwards: a fresh reset gives an observation in the space.
    observation, _ = env.reset(seed=seed)
    assert env.observation_space.contains(observation)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_named_pathologies_are_invalid_actions(env_id: str) -> None:
    """The crashes this file was written for, each an invalid action with a message."""
    env = env_for(env_id)
    limit = env.unwrapped.max_action_chars
    cases = [
        _deep_json((limit - 10) // 2),
        _deep_json_call((limit - 60) // 2),
        _deep_calls((limit - 20) // 4),
        _deep_unary(limit - 20),
        _deep_sum((limit - 20) // 2),
        "\ud800",
        'lookup("\ud800")',
        "\x00" * limit,
    ]
    for action in cases:
        env.reset(seed=0)
        observation, _, _, _, info = env.step(action)
        assert env.observation_space.contains(observation)
        assert info["invalid_action"] or info["tool_error"], action[:40]
        assert info["error"]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_max_length_actions_to_the_horizon_stay_in_the_space(env_id: str) -> None:
    """A whole episode of maximal actions: the growing history stays within the space."""
    env = env_for(env_id)
    limit = env.unwrapped.max_action_chars
    env.reset(seed=0)
    action = ('lookup(key="' + "\ud800é" * limit)[:limit]
    for _ in range(200):
        if _check_step(env, action):
            break
    else:
        pytest.fail("no episode end after 200 steps")


# -- parsers and binding ------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(ANY_CHAR, max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(ANY_CHAR, max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)
NAMES = st.text(ANY_CHAR, max_size=8)


@settings(max_examples=100, deadline=None)
@given(
    name=NAMES,
    arguments=st.dictionaries(NAMES, JSON_VALUES, max_size=4),
    positional=st.lists(JSON_VALUES, max_size=4),
    parameters=st.lists(NAMES, max_size=4),
)
def test_bind_positional_binds_or_names_the_problem(
    name: str, arguments: dict, positional: list, parameters: list
) -> None:
    call = ToolCall(name, arguments, positional)
    try:
        bound = bind_positional(call, parameters)
    except ValueError as exc:
        assert str(exc) and name in str(exc)
        return
    assert len(positional) <= len(parameters)
    for key, value in arguments.items():  # keywords pass through; a clash would have raised
        assert bound[key] is value
    for parameter, value in zip(parameters, positional, strict=False):
        assert bound[parameter] is value
    assert call.arguments == arguments  # the call itself is left alone


@settings(max_examples=100, deadline=None)
@given(
    arguments=st.dictionaries(st.sampled_from(["key", "depth", "other"]) | NAMES, JSON_VALUES),
    positional=st.lists(JSON_VALUES, max_size=3),
)
def test_schema_binding_binds_or_raises_value_error(arguments: dict, positional: list) -> None:
    call = ToolCall("lookup", arguments, positional)
    try:
        bound = bind_arguments(lookup, call)
    except ValueError as exc:
        assert str(exc)
        return
    assert set(bound) <= {"key", "depth"}


SPEC_PARAMETERS = st.dictionaries(
    NAMES, st.fixed_dictionaries({"type": st.sampled_from(["string", "integer", "object"])})
)
TOOL_SPECS = st.lists(
    st.builds(
        lambda name, properties: {
            "name": name,
            "description": "a tool",
            "parameters": {"type": "object", "properties": properties},
        },
        st.sampled_from(["lookup", "finish"]) | NAMES,
        SPEC_PARAMETERS,
    ),
    max_size=3,
)


@settings(max_examples=100, deadline=None)
@given(
    text=actions(2_000),
    tools=TOOL_SPECS,
    tool_choice=st.sampled_from([None, "auto", "none", "any", "required", "lookup"]),
    family=st.sampled_from([None, "embedded", "hermes", "llama3_json"]),
)
def test_read_tool_calls_reads_any_text(
    text: str, tools: list, tool_choice: str | None, family: str | None
) -> None:
    fmt = None if family is None else tool_format(family)
    content, calls, invalid, error = read_tool_calls(text, tools, tool_choice, fmt)
    assert isinstance(content, str)
    assert not (calls and invalid)
    assert (error is None) == (not invalid)
    for call in calls:
        assert isinstance(call["name"], str) and isinstance(call["args"], dict)
    for bad in invalid:
        assert bad["error"] == error and bad["args"] == text


@settings(max_examples=100, deadline=None)
@given(text=actions(2_000))
def test_parse_tool_call_parses_or_raises_action_parse_error(text: str) -> None:
    try:
        call = parse_tool_call(text)
    except ActionParseError as exc:
        assert str(exc).startswith("Error:")
        return
    assert isinstance(call.name, str) and call.name


@settings(max_examples=100, deadline=None)
@given(text=actions(2_000), family=st.sampled_from(["embedded", "hermes", "llama3_json"]))
def test_tool_formats_parse_any_text(text: str, family: str) -> None:
    reply = tool_format(family).parse(text)
    assert isinstance(reply.content, str)
    assert reply.error is None or (reply.error.startswith("Error:") and not reply.calls)


def test_tool_env_with_direct_construction_reads_pathologies_in_every_format() -> None:
    """A plain `ToolCallingEnv` too (not only through `make_tool_env`)."""
    tasks = {
        "train": [ToolTask(task_id="a", instruction="go")],
        "test": [ToolTask(task_id="b", instruction="go")],
    }

    def reward(task: ToolTask, calls: Any) -> tuple[float, bool]:
        return 0.0, False

    for fmt in ("embedded", "hermes", "llama3_json"):
        env = ToolCallingEnv([lookup, finish], tasks, reward, tool_format=fmt)
        env.reset(seed=0)
        for action in ("<tool_call>" + _deep_json(990), "<|python_tag|>" + _deep_json(990)):
            observation, _, _, _, info = env.step(action)
            assert info["invalid_action"] and env.observation_space.contains(observation)
