"""The generic tool-calling environment: parsing, validation and error observations."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.tools import tool

from archer_agents.environments.base import TEXT_CHARSET
from archer_agents.environments.tool_env import CallRecord, ToolCallingEnv, ToolTask
from archer_agents.formats.tool_calls import ActionParseError, parse_tool_call


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def divide(a: float, b: float) -> float:
    """Divide a by b."""
    return a / b


@tool
def submit(answer: str) -> str:
    """Submit the final answer."""
    return f"Submitted {answer}."


def exact_answer(task: ToolTask, calls: Sequence[CallRecord]) -> tuple[float, bool]:
    submitted = [c.arguments.get("answer") for c in calls if c.name == "submit" and not c.error]
    success = bool(submitted) and submitted[-1] == task.data["answer"]
    return (1.0 if success else 0.0), success


def make_env(max_turns: int = 5) -> ToolCallingEnv:
    tasks = {
        "train": [ToolTask(task_id="t1", instruction="What is 2 + 3?", data={"answer": "5"})],
        "test": [ToolTask(task_id="t2", instruction="What is 7 + 8?", data={"answer": "15"})],
    }
    return ToolCallingEnv(
        [add, divide, submit], tasks, exact_answer, final_tools=["submit"], max_turns=max_turns
    )


@pytest.mark.parametrize(
    "text, name, arguments, positional",
    [
        ('{"name": "add", "arguments": {"a": 1, "b": 2}}', "add", {"a": 1, "b": 2}, []),
        ('{"name": "add", "args": {"a": 1}}', "add", {"a": 1}, []),
        ('{"name": "add", "arguments": "{\\"a\\": 4}"}', "add", {"a": 4}, []),
        (
            'Sure! {"name": "submit", "arguments": {"answer": "x"}} done',
            "submit",
            {"answer": "x"},
            [],
        ),
        ("add(a=1, b=2)", "add", {"a": 1, "b": 2}, []),
        ("add(1, b=2)", "add", {"b": 2}, [1]),
        ('submit("it is {braces}")', "submit", {}, ["it is {braces}"]),
        ("  divide(a=-1.5, b=2e3)  ", "divide", {"a": -1.5, "b": 2000.0}, []),
    ],
)
def test_both_call_forms_parse(text: str, name: str, arguments: dict, positional: list) -> None:
    call = parse_tool_call(text)
    assert (call.name, call.arguments, call.positional) == (name, arguments, positional)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty action"),
        ("hello there", "not a tool call"),
        ("add(a=1", "never closed"),
        ("os.system('rm -rf /')", "plain name"),
        ("add(a=__import__('os'))", "not a literal"),
        ("add(**{'a': 1})", "kwargs"),
        ('{"name": 3}', '"name" string'),
        ('{"name": "add", "arguments": [1, 2]}', "must be an object"),
        ('{"name": "add", "arguments": {"a": 1}', "could not parse the JSON"),
    ],
)
def test_unparsable_actions_raise_a_message_for_the_model(text: str, message: str) -> None:
    with pytest.raises(ActionParseError, match=message):
        parse_tool_call(text)


def test_a_solved_task_ends_with_reward_and_success() -> None:
    env = make_env()
    observation, info = env.reset(seed=0, options={"split": "test"})
    assert info == {"task_id": "t2", "split": "test"}
    assert "What is 7 + 8?" in observation and "- add(a: integer, b: integer)" in observation
    observation, reward, terminated, truncated, info = env.step("add(7, 8)")
    assert observation.endswith("Action: add(7, 8)\nObservation: 15\n")
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert info["invalid_action"] is False and info["tool_error"] is False
    _, reward, terminated, truncated, info = env.step('submit(answer="15")')
    assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)


@pytest.mark.parametrize(
    "action, key, fragment",
    [
        ("what is it", "invalid_action", "not a tool call"),
        ("multiply(a=1, b=2)", "invalid_action", "unknown tool 'multiply'"),
        ("add(a='x', b=2)", "tool_error", "invalid arguments for add: a:"),
        ("add(a=1)", "tool_error", "invalid arguments for add: b: Field required"),
        ("add(a=1, b=2, c=3)", "tool_error", "has no argument(s) c"),
        ("add(1, 2, 3)", "tool_error", "takes at most 2 argument(s)"),
        ("add(1, a=2)", "tool_error", "got argument 'a' twice"),
        ("divide(a=1, b=0)", "tool_error", "divide failed: ZeroDivisionError"),
        ("add(a=1, b=2)" + " " * 3000, "invalid_action", "characters long; the limit is 2000"),
    ],
)
def test_model_mistakes_become_named_error_observations(
    action: str, key: str, fragment: str
) -> None:
    env = make_env()
    env.reset(seed=0)
    observation, reward, terminated, truncated, info = env.step(action)
    assert info[key] is True
    assert fragment in info["error"] and fragment in observation
    assert reward == pytest.approx(env.error_penalty)
    assert not terminated and not truncated


def test_time_limit_truncates_with_final_reward() -> None:
    env = make_env(max_turns=2)
    env.reset(seed=0)
    env.step("add(1, 2)")
    _, reward, terminated, truncated, info = env.step("add(1, 2)")
    assert (terminated, truncated, info["success"], reward) == (False, True, False, 0.0)


def test_a_failed_final_call_does_not_end_the_episode() -> None:
    env = make_env()
    env.reset(seed=0)
    _, _, terminated, _, info = env.step("submit()")
    assert not terminated and info["tool_error"]


def test_reset_options_are_checked() -> None:
    env = make_env()
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        env.reset(options={"split": "dev"})
    with pytest.raises(KeyError, match="task 'nope' is not in the train split"):
        env.reset(options={"task_id": "nope"})
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"taskid": "t1"})


def test_developer_errors_raise_at_construction() -> None:
    with pytest.raises(ValueError, match="final_tools"):
        ToolCallingEnv([add], {"train": [], "test": []}, exact_answer, final_tools=["submit"])
    with pytest.raises(ValueError, match="at least one 'train' task"):
        ToolCallingEnv([add], {"train": [], "test": []}, exact_answer)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=sorted(TEXT_CHARSET), max_size=200))
def test_no_utterance_crashes_a_step(action: str) -> None:
    env = make_env()
    env.reset(seed=0)
    observation, reward, terminated, truncated, info = env.step(action)
    assert isinstance(observation, str) and isinstance(reward, float)
    assert env.observation_space.contains(observation)
