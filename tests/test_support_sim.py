"""SupportSim as an environment: rewards, scripted agents, errors as observations, splits."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

import archer_agents.environments  # noqa: F401  (registers the environments)
from archer_agents.data.episode_log import read_episodes
from archer_agents.environments.base import TEXT_CHARSET, ScriptedAgent, UnknownTaskError, to_ascii
from archer_agents.environments.support.env import (
    CALL_FORMAT,
    SYSTEM_PROMPT,
    SupportSimEnv,
    serve_customer,
)
from archer_agents.environments.support.task_generator import TEMPLATES, generate_tasks
from archer_agents.environments.support.user import STOP, LLMUser, RuleBasedUser
from archer_agents.formats.prompts import render_messages
from archer_agents.langchain.agent import load_agent
from archer_agents.langchain.recorder import EpisodeRecorder
from archer_agents.policies.protocol import Generation, SamplingParams
from archer_agents.tools.support import SupportStore, build_support_tools, generate_database
from archer_agents.tools.support.models import Database
from archer_agents.tools.support.policy import POLICY
from archer_agents.tools.support.tools import TRANSFER

SMALL = {"size": "small", "n_train": 40, "n_test": 20}


@pytest.fixture(scope="module")
def env() -> SupportSimEnv:
    return SupportSimEnv(**SMALL)


def play(
    env: SupportSimEnv,
    agent: ScriptedAgent,
    task_id: str,
    split: str = "test",
    edit: Callable[[str], str | None] = lambda action: action,
) -> tuple[float, dict[str, Any], str]:
    """One episode; ``edit`` may rewrite an action or drop it (None)."""
    observation, info = env.reset(options={"split": split, "task_id": task_id})
    agent.reset(observation, info)
    total, done = 0.0, False
    while not done:
        action = edit(agent.act(observation))
        if action is None:
            continue
        observation, reward, terminated, truncated, info = env.step(action)
        total += reward
        done = terminated or truncated
    return total, info, observation


def first_task(env: SupportSimEnv, template: str, split: str = "test") -> str:
    return next(t.task_id for t in env.tasks_by_split[split] if t.template == template)


def call(name: str, **arguments: Any) -> str:
    return json.dumps({"name": name, "arguments": arguments})


# -- the observation --------------------------------------------------------------------
def test_made_through_gymnasium_with_policy_tools_and_opening() -> None:
    made = gym.make("archer/SupportSim-v0", size="small", n_train=10, n_test=10)
    observation, info = made.reset(seed=0)
    task = made.unwrapped.current_task  # type: ignore[attr-defined]
    opening = f"Hi! {task.goal.intents[0].request}"
    assert observation.startswith(f"{POLICY}\n{CALL_FORMAT}\nTask: {opening}\nTools:\n")
    assert "\n- cancel_pending_order(order_id: string" in observation
    assert observation.endswith(
        "- respond(message: string): Send a message to the user; "
        "the user's reply comes back as the next observation.\n"
    )
    assert info["split"] == "train"
    next_observation, *_ = made.step(call("respond", message="What is your email?"))
    assert next_observation.startswith(observation)
    assert next_observation.endswith(
        "Observation: User: "
        + (
            f"My email is {task.goal.email}.\n"
            if task.goal.knows_email
            else "Sorry, I don't remember my email address.\n"
        )
    )


def test_gymnasium_env_checker_passes(env: SupportSimEnv) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)


# -- scripted agents and the reward -------------------------------------------------------
def test_expert_wins_every_test_task(env: SupportSimEnv) -> None:
    expert = env.make_scripted_agent("expert", seed=0)
    for task_id in env.task_ids("test"):
        total, info, observation = play(env, expert, task_id)
        assert total == 1.0 and info["success"], (task_id, info, observation[-1500:])
        assert info["db_match"] and info["output_match"] and info["writes_confirmed"]
        assert info["tool_errors"] == 0 and info["invalid_actions"] == 0
        assert observation.rstrip().endswith(STOP)


@pytest.mark.slow
def test_expert_wins_every_test_task_at_default_size() -> None:
    big = SupportSimEnv()
    expert = big.make_scripted_agent("expert", seed=0)
    results = [play(big, expert, task_id)[1] for task_id in big.task_ids("test")]
    assert len(results) == 100 and all(info["success"] for info in results)


def test_random_play_loses_nearly_every_task(env: SupportSimEnv) -> None:
    wins = []
    for seed in range(3):
        agent = env.make_scripted_agent("random", seed=seed)
        wins += [play(env, agent, task_id)[1]["success"] for task_id in env.task_ids("test")]
    assert sum(wins) <= 0.05 * len(wins)


def test_weak_agent_is_between_random_and_expert(env: SupportSimEnv) -> None:
    wins = []
    confirmed = []
    for seed in range(2):
        agent = env.make_scripted_agent("weak", seed=seed)
        for task_id in env.task_ids("train"):
            info = play(env, agent, task_id, split="train")[1]
            wins.append(info["success"])
            confirmed.append(info["writes_confirmed"])
    assert 0.2 < sum(wins) / len(wins) < 0.9
    assert not all(confirmed)


def test_a_wrong_write_fails_the_database_check(env: SupportSimEnv) -> None:
    task_id = first_task(env, "cancel")
    gold = env.support_task(task_id).gold_actions[0].arguments["reason"]
    wrong = next(r for r in ("no longer needed", "ordered by mistake") if r != gold)

    def wrong_reason(action: str) -> str:
        return action.replace(f'"reason": "{gold}"', f'"reason": "{wrong}"')

    total, info, _ = play(env, env.make_scripted_agent("expert"), task_id, edit=wrong_reason)
    assert (total, info["db_match"], info["output_match"]) == (0.0, False, True)


def test_skipped_confirmation_is_reported(env: SupportSimEnv) -> None:
    task_id = first_task(env, "modify_address")

    def no_proposal(action: str) -> str | None:
        return None if "Do you confirm" in action else action

    _, info, _ = play(env, env.make_scripted_agent("expert"), task_id, edit=no_proposal)
    assert info["db_match"] and info["writes"] == 1 and not info["writes_confirmed"]


def test_required_output_counts_only_when_said_in_respond(env: SupportSimEnv) -> None:
    task = env.support_task(first_task(env, "info_product"))
    answer = task.required_outputs[0]
    env.reset(options={"split": "test", "task_id": task.task_id})
    env.step(call("get_product_details", product_id=answer))
    *_, terminated, _, info = env.step(call("transfer_to_human_agents", summary=f"It is {answer}"))
    assert terminated and info["db_match"] and not info["output_match"] and not info["success"]
    env.reset(options={"split": "test", "task_id": task.task_id})
    observation, reward, terminated, _, info = env.step(
        call("respond", message=f"It is ${answer}.")
    )
    assert terminated and reward == 1.0 and info["output_match"]
    assert observation.rstrip().endswith(STOP)


def test_database_is_fingerprinted_only_at_the_end(
    env: SupportSimEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Counter[str]()
    original = Database.fingerprint

    def counting(self: Database, reuse: Any = None) -> str:
        calls["fingerprint"] += 1
        return original(self, reuse)

    monkeypatch.setattr(Database, "fingerprint", counting)
    task_id = first_task(env, "return")
    expert = env.make_scripted_agent("expert")
    observation, info = env.reset(options={"split": "test", "task_id": task_id})
    expert.reset(observation, info)
    done = False
    while not done:
        observation, _, terminated, truncated, _ = env.step(expert.act(observation))
        done = terminated or truncated
        if not done:
            assert calls["fingerprint"] == 0
    assert 1 <= calls["fingerprint"] <= 2  # the episode's database, and the gold replay once


# -- mistakes become observations ---------------------------------------------------------
@pytest.mark.parametrize(
    "action, key, message",
    [
        ("hello there", "invalid_action", "not a tool call"),
        ('{"name": "fly", "arguments": {}}', "invalid_action", "unknown tool 'fly'"),
        ("get_order_details(order_id=5)", "tool_error", "invalid arguments for get_order_details"),
        ("get_order_details(oid='#W1')", "tool_error", "has no argument(s) oid"),
        ("respond()", "tool_error", "message"),
        (
            "modify_pending_order_items(order_id='#W1', item_ids=[], new_item_ids=[], "
            "payment_method_id='x')",
            "tool_error",
            "item_ids",
        ),
        ('cancel_pending_order("#W0000000", "no longer needed")', "tool_error", "order not found"),
        ("x" * 5000, "invalid_action", "characters long"),
    ],
)
def test_mistakes_are_named_in_the_observation(
    env: SupportSimEnv, action: str, key: str, message: str
) -> None:
    env.reset(options={"split": "test", "task_id": env.task_ids("test")[0]})
    observation, reward, terminated, truncated, info = env.step(action)
    assert info[key] and message in info["error"] and info["error"].startswith("Error")
    assert observation.endswith(f"Observation: {info['error']}\n")
    assert (reward, terminated, truncated) == (0.0, False, False)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(actions=st.lists(st.text(max_size=80), min_size=1, max_size=4))
def test_arbitrary_text_never_raises(env: SupportSimEnv, actions: list[str]) -> None:
    env.reset(seed=1)
    for action in actions:
        observation, *_ = env.step(action)
        assert env.observation_space.contains(observation)


def test_horizon_truncates_after_30_agent_turns(env: SupportSimEnv) -> None:
    env.reset(options={"split": "test", "task_id": first_task(env, "cancel")})
    for turn in range(1, 31):
        _, reward, terminated, truncated, info = env.step(call("list_all_product_types"))
        assert not terminated and truncated == (turn == 30)
    assert reward == 0.0 and not info["db_match"] and info["writes"] == 0


def test_transfer_to_a_human_ends_the_episode(env: SupportSimEnv) -> None:
    env.reset(options={"split": "test", "task_id": first_task(env, "refuse")})
    *_, terminated, truncated, info = env.step(call("transfer_to_human_agents", summary="help"))
    assert terminated and not truncated and info["success"] is False


def test_unknown_task_is_a_developer_error(env: SupportSimEnv) -> None:
    with pytest.raises(UnknownTaskError, match="not in the test split"):
        env.reset(options={"split": "test", "task_id": "nope"})


def test_llm_user_plugs_into_the_environment() -> None:
    replies = iter([AIMessage("Hello, I need help with an order."), AIMessage(f"Bye. {STOP}")])
    llm_env = SupportSimEnv(
        **SMALL, user_factory=lambda: LLMUser(GenericFakeChatModel(messages=replies))
    )
    observation, _ = llm_env.reset(seed=0)
    assert "\nTask: Hello, I need help with an order.\nTools:\n" in observation
    observation, _, terminated, _, info = llm_env.step(call("respond", message="How can I help?"))
    assert terminated and observation.endswith(f"User: Bye. {STOP}\n") and "db_match" in info


# -- deployed as a LangChain agent ---------------------------------------------------------
class SaysInTurn:
    """A `Policy` that says the given utterances in turn and keeps every prompt it saw."""

    version = "says-in-turn"

    def __init__(self, utterances: Sequence[str]) -> None:
        self.utterances = list(utterances)
        self.observations: list[str] = []

    def generate(
        self, observations: Sequence[str], sampling: SamplingParams | None = None
    ) -> list[Generation]:
        self.observations += observations
        return [Generation(self.utterances.pop(0), [1], [-0.5]) for _ in observations]

    def log_probs(self, observations: Any, action_token_ids: Any) -> Any:
        raise NotImplementedError("a scripted policy cannot score")


def test_a_support_agent_sees_exactly_what_support_sim_showed_in_training(
    tmp_path: Path,
) -> None:
    """The scripted expert's episodes, replayed through create_agent with the real tools."""
    env = SupportSimEnv(size="small", n_train=10, n_test=20)  # every template among the tests
    templates: dict[str, str] = {}
    for task in env.tasks_by_split["test"]:
        templates.setdefault(task.template, task.task_id)
    assert len(templates) >= 5
    for task_id in templates.values():
        expert = env.make_scripted_agent("expert", seed=0)
        observation, info = env.reset(options={"split": "test", "task_id": task_id})
        expert.reset(observation, info)
        shown, said, done = [], [], False
        while not done:
            shown.append(observation)
            said.append(expert.act(observation))
            observation, _, terminated, truncated, info = env.step(said[-1])
            done = terminated or truncated
        assert info["success"]

        store = SupportStore(env.db.fork())
        tools = build_support_tools(store)
        policy = SaysInTurn(said)
        log = tmp_path / f"{task_id}.jsonl"
        with EpisodeRecorder(log, wait_for_feedback=False) as recorder:
            agent = load_agent(policy, tools, system_prompt=SYSTEM_PROMPT, callbacks=[recorder])
            goal = env.support_task(task_id).goal
            messages = serve_customer(agent, RuleBasedUser(), goal)
        assert policy.observations == shown  # every prompt, character for character
        assert policy.utterances == []
        assert render_messages([SystemMessage(SYSTEM_PROMPT), *messages], tools) == observation
        assert store.db.fingerprint() == env.store.db.fingerprint()
        episodes, _ = read_episodes(log)
        assert [t.observation for e in episodes for t in e.transitions] == shown
        assert [t.action for e in episodes for t in e.transitions] == said


def test_a_failed_respond_ends_the_run_and_the_agent_goes_on_from_the_error(
    env: SupportSimEnv,
) -> None:
    said = ["respond()", call("respond", message="Hello!"), call(TRANSFER, summary="help")]
    policy = SaysInTurn(said)
    store = SupportStore(env.db.fork())
    agent = load_agent(policy, build_support_tools(store), system_prompt=SYSTEM_PROMPT)
    goal = env.support_task(env.task_ids("test")[0]).goal
    messages = serve_customer(agent, RuleBasedUser(), goal)
    assert policy.utterances == [] and len(policy.observations) == 3
    assert "Action: respond()\nObservation: Error" in policy.observations[1]
    assert policy.observations[2].startswith(policy.observations[1])
    assert "\nObservation: User: " in policy.observations[2]
    assert isinstance(messages[-1], ToolMessage) and messages[-1].name == TRANSFER


def test_a_tool_message_that_ended_the_turn_is_not_shown_before_the_user_reply() -> None:
    call = {"name": "respond", "args": {"message": "Your email?"}, "id": "c"}
    sent = ToolMessage("Your email?", tool_call_id="c", name="respond")
    reply = HumanMessage("It is a@b.c.")
    text = render_messages([HumanMessage("Hi."), AIMessage("", tool_calls=[call]), sent, reply])
    assert text.endswith(
        'Action: {"arguments": {"message": "Your email?"}, "name": "respond"}\n'
        "Observation: User: It is a@b.c.\n"
    )
    # Before the reply arrives, the tool message is the latest observation.
    ended = render_messages([HumanMessage("Hi."), AIMessage("", tool_calls=[call]), sent])
    assert ended.endswith("Observation: Your email?\n")


# -- tasks and splits -----------------------------------------------------------------------
def test_splits_are_fixed_for_a_seed_and_users_disjoint(env: SupportSimEnv) -> None:
    again = SupportSimEnv(**SMALL)
    assert again.tasks_by_split == env.tasks_by_split
    other = SupportSimEnv(seed=1, **SMALL)
    assert other.tasks_by_split != env.tasks_by_split
    train = {t.goal.user_id for t in env.tasks_by_split["train"]}
    test = {t.goal.user_id for t in env.tasks_by_split["test"]}
    assert train and test and not train & test


def test_default_task_set() -> None:
    db = generate_database(seed=0)
    tasks = generate_tasks(db, seed=0)
    assert (len(tasks["train"]), len(tasks["test"])) == (300, 100)
    for split, count in (("train", 30), ("test", 10)):
        assert Counter(t.template for t in tasks[split]) == dict.fromkeys(TEMPLATES, count)
    train = {t.goal.user_id for t in tasks["train"]}
    assert not train & {t.goal.user_id for t in tasks["test"]}
    for task in tasks["train"] + tasks["test"]:
        assert task.gold_actions or task.required_outputs, task.task_id
        own = set(db.users[task.goal.user_id].orders)
        for intent in task.goal.intents:
            if intent.order_id is not None and intent.kind != "refuse":
                assert intent.order_id in own
    goals = Counter((t.goal.knows_email, t.goal.knows_order_ids) for t in tasks["test"])
    assert len(goals) == 4


def test_gold_actions_change_the_database(env: SupportSimEnv) -> None:
    base = env.db.fingerprint()
    for task in env.tasks_by_split["test"]:
        assert (env.gold_fingerprint(task) != base) == bool(task.gold_actions)


@given(st.text())
def test_to_ascii_maps_exactly_the_characters_outside_the_text_charset(text: str) -> None:
    expected = "".join(ch if ch in TEXT_CHARSET else "?" for ch in text)
    assert to_ascii(text) == expected
