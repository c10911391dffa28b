"""Twenty Questions: knowledge base, question parser, episode rules, scripted agents, tool."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from langchain_core.tools import BaseTool

import archer_agents.environments  # noqa: F401  (registers the ids)
from archer_agents.environments.base import UnknownTaskError
from archer_agents.environments.questions.game import expected_turns_table
from archer_agents.environments.questions.twenty_questions import (
    TwentyQuestionsEnv,
    TwentyQuestionsMiniEnv,
)
from archer_agents.tools.twenty_questions import (
    DATA_PATH,
    MINI_PATH,
    KnowledgeBase,
    TwentyQuestionsOracle,
    answer_question,
    load_knowledge_base,
    load_mini_knowledge_base,
    make_twenty_questions_tool,
)


@pytest.fixture(scope="module")
def oracle() -> TwentyQuestionsOracle:
    return TwentyQuestionsOracle.default()


@pytest.fixture(scope="module")
def raw() -> dict:
    return json.loads(DATA_PATH.read_text(encoding="utf-8"))


@pytest.fixture()
def env() -> TwentyQuestionsEnv:
    return TwentyQuestionsEnv()


def play(env: TwentyQuestionsEnv, agent, *, seed: int, task_id: str | None = None):
    options = {"split": "test"} if task_id is None else {"split": "test", "task_id": task_id}
    obs, info = env.reset(seed=seed, options=options)
    agent.reset(obs, info)
    total, actions = 0.0, []
    while True:
        action = agent.act(obs)
        actions.append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        if terminated or truncated:
            return total, info, actions


# -- knowledge base -------------------------------------------------------------
def test_knowledge_base_size_and_completeness(raw: dict) -> None:
    properties = [p["name"] for p in raw["properties"]]
    objects = raw["objects"]
    assert len(objects) >= 130
    assert len({o["category"] for o in objects}) >= 14
    assert len(properties) >= 24
    assert len(set(properties)) == len(properties)
    for obj in objects:
        assert not set(obj["yes"]) & set(obj["no"]), obj["name"]
        assert sorted(obj["yes"] + obj["no"]) == sorted(properties), obj["name"]


def test_names_and_aliases_are_unique(raw: dict) -> None:
    names = [n.lower() for o in raw["objects"] for n in [o["name"], *o["aliases"]]]
    assert len(names) == len(set(names))


def test_every_property_splits_the_objects(oracle: TwentyQuestionsOracle) -> None:
    secrets = oracle.secrets()
    for prop in oracle.property_names():
        having = sum(oracle.has_property(s, prop) for s in secrets)
        assert 0 < having < len(secrets), prop


def test_every_object_is_identifiable_by_properties(oracle: TwentyQuestionsOracle) -> None:
    signatures = {
        frozenset(p for p in oracle.property_names() if oracle.has_property(s, p))
        for s in oracle.secrets()
    }
    assert len(signatures) == len(oracle.secrets())


def test_splits_are_disjoint_fixed_and_cover_every_category(
    oracle: TwentyQuestionsOracle, raw: dict
) -> None:
    train, test = set(oracle.secrets("train")), set(oracle.secrets("test"))
    assert not train & test
    assert train | test == {o["name"] for o in raw["objects"]}
    assert len(test) == 50 and len(train) == 140
    assert {"cat", "banana", "bus", "pants", "castle"} <= test
    assert {"dog", "apple", "car", "shirt", "house"} <= train
    categories = {o["category"] for o in raw["objects"]}
    for split in (train, test):
        assert {o["category"] for o in raw["objects"] if o["name"] in split} == categories
    assert list(TwentyQuestionsEnv().task_ids("test")) == list(oracle.secrets("test"))


@pytest.mark.parametrize(
    ("secret", "prop", "expected"),
    [
        ("dog", "mammal", True),
        ("whale", "mammal", True),
        ("whale", "fish", False),
        ("shark", "fish", True),
        ("bat", "flies", True),
        ("penguin", "flies", False),
        ("penguin", "wings", True),
        ("spider", "insect", False),
        ("frog", "reptile", False),
        ("rabbit", "rodent", False),
        ("car", "engine", True),
        ("bicycle", "engine", False),
        ("refrigerator", "electric", True),
        ("lemon", "citrus", True),
        ("trumpet", "brass", True),
        ("saxophone", "brass", False),
        ("piano", "strings", True),
        ("tree", "alive", True),
        ("apple", "alive", False),
    ],
)
def test_facts(oracle: TwentyQuestionsOracle, secret: str, prop: str, expected: bool) -> None:
    assert oracle.has_property(secret, prop) is expected


def test_loader_rejects_incomplete_objects(raw: dict) -> None:
    broken = json.loads(json.dumps(raw))
    broken["objects"][0]["no"].pop()
    with pytest.raises(ValueError, match="must list every property"):
        KnowledgeBase.model_validate(broken)


def test_oracle_rejects_a_name_that_reads_as_a_property(raw: dict) -> None:
    broken = json.loads(json.dumps(raw))
    broken["objects"][0]["aliases"].append("mammal")
    with pytest.raises(ValueError, match="would read as the property question"):
        TwentyQuestionsOracle(KnowledgeBase.model_validate(broken))


# -- parser -----------------------------------------------------------------------
def test_every_phrasing_maps_to_its_property(oracle: TwentyQuestionsOracle) -> None:
    for prop in load_knowledge_base().properties:
        for phrasing in (prop.question, *prop.paraphrases):
            parsed = oracle.parse(phrasing)
            assert (parsed.kind, parsed.property) == ("property", prop.name), phrasing


def test_every_name_and_alias_is_a_guess(oracle: TwentyQuestionsOracle) -> None:
    for obj in load_knowledge_base().objects:
        assert oracle.parse(oracle.guess_question(obj.name)).guesses == (obj.name,)
        for alias in obj.aliases:
            assert oracle.parse(f"Is it a {alias}?").guesses == (obj.name,), alias


@pytest.mark.parametrize(
    ("question", "prop"),
    [
        ("Is it alive?", "alive"),
        ("IS IT ALIVE???", "alive"),
        ("  is it alive  ", "alive"),
        ("Is the object a living thing?", "alive"),
        ("Is your object alive, or not?", "alive"),
        ("OK, is it alive?", "alive"),
        ("Could it be an animal?", "animal"),
        ("Is it some kind of animal?", "animal"),
        ("Does it walk on 4 legs?", "four_legs"),
        ("Is it a four-legged animal?", "four_legs"),
        ("Can you eat it?", "food"),
        ("Is it edible?", "food"),
        ("Is it bigger than a human?", "big"),
        ("Does it use electricity?", "electric"),
        ("Is it a type of cat?", "feline"),
        ("Is it made out of wood?", "wood"),
    ],
)
def test_paraphrases(oracle: TwentyQuestionsOracle, question: str, prop: str) -> None:
    parsed = oracle.parse(question)
    assert (parsed.kind, parsed.property) == ("property", prop)


@pytest.mark.parametrize(
    ("question", "guesses"),
    [
        ("Is it a dog?", ("dog",)),
        ("Is it dog?", ("dog",)),
        ("is it a DOG", ("dog",)),
        ("Dog?", ("dog",)),
        ("It's a dog!", ("dog",)),
        ("Is the object a dog?", ("dog",)),
        ("My guess is: a dog.", ("dog",)),
        ("Is it a puppy?", ("dog",)),
        ("Is it a T-shirt?", ("shirt",)),
        ("Is it a hot air balloon?", ("hot air balloon",)),
        ("Is it a dog or a cat?", ("dog", "cat")),
        ("Is it either a dog or a cat?", ("dog", "cat")),
        ("Is it a dog, a cat, or a lion?", ("dog", "cat", "lion")),
        ("dog/cat", ("dog", "cat")),
        ("Is it a dog or a puppy?", ("dog",)),
    ],
)
def test_guesses(oracle: TwentyQuestionsOracle, question: str, guesses: tuple[str, ...]) -> None:
    parsed = oracle.parse(question)
    assert (parsed.kind, parsed.guesses) == ("guess", guesses)


@pytest.mark.parametrize(
    "question",
    ["", "   ", "?!", "asdf qwerty", "Is it a dragon?", "Is it bigger than a dog?", "Tell me."],
)
def test_gibberish_is_invalid(question: str) -> None:
    assert answer_question(question, "dog") == "Invalid question."


def test_answers() -> None:
    assert answer_question("Is it an animal?", "dog") == "Yes."
    assert answer_question("Is it an animal?", "car") == "No."
    assert answer_question("Is it a dog?", "dog") == "Yes."
    assert answer_question("Is it a cat?", "dog") == "No."
    assert answer_question("Is it a dog or a cat?", "dog") == "No."
    with pytest.raises(ValueError, match="unknown secret object"):
        answer_question("Is it an animal?", "unicorn")


# -- the environment --------------------------------------------------------------
def test_registered_and_passes_the_env_checker() -> None:
    env = gym.make("archer/TwentyQuestions-v0")
    assert isinstance(env.unwrapped, TwentyQuestionsEnv)
    check_env(env.unwrapped, skip_render_check=True)


def test_observation_format_is_the_papers(env: TwentyQuestionsEnv) -> None:
    obs, info = env.reset(seed=0, options={"task_id": "dog"})
    assert obs == "Questions:\n"
    assert info["task_id"] == "dog"
    obs, *_ = env.step("Is it an animal?")
    assert obs == "Questions:\nIs it an animal? Yes.\n"
    obs, *_ = env.step("  Is it\na   vehicle? \n")
    assert obs == "Questions:\nIs it an animal? Yes.\nIs it a vehicle? No.\n"
    obs, *_ = env.step("blah")
    assert obs.endswith("\nblah Invalid question.\n")


def test_rewards_and_termination(env: TwentyQuestionsEnv) -> None:
    env.reset(seed=0, options={"task_id": "dog"})
    _, reward, terminated, truncated, info = env.step("Is it a mammal?")
    assert (reward, terminated, truncated) == (-1.0, False, False)
    assert info["answer"] == "Yes." and info["invalid_action"] is False and "success" not in info
    _, reward, terminated, _, info = env.step("Is it a dog or a cat?")
    assert (reward, terminated, info["answer"]) == (-1.0, False, "No.")
    _, reward, terminated, _, info = env.step("Is it a cat?")
    assert (reward, terminated) == (-1.0, False)
    _, reward, terminated, truncated, info = env.step("Is it a dog?")
    assert (reward, terminated, truncated, info["success"]) == (0.0, True, False, True)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step("Is it a dog?")


def test_invalid_and_over_long_actions(env: TwentyQuestionsEnv) -> None:
    env.reset(seed=0, options={"task_id": "dog"})
    _, reward, _, _, info = env.step("What is it?")
    assert reward == -1.0 and info["invalid_action"] is True
    assert info["error"] == "Invalid question."
    obs, reward, _, _, info = env.step("Is it a dog? " * 100)
    assert reward == -1.0 and info["invalid_action"] is True
    assert "limit is 300" in info["error"]
    assert obs.endswith("... Invalid question.\n")
    assert len(obs.splitlines()[-1]) < 330


def test_truncation_after_twenty_turns(env: TwentyQuestionsEnv) -> None:
    env.reset(seed=0, options={"task_id": "dog"})
    for turn in range(1, 20):
        _, reward, terminated, truncated, info = env.step("Is it a car?")
        assert (reward, terminated, truncated) == (-1.0, False, False), turn
    obs, reward, terminated, truncated, info = env.step("Is it a car?")
    assert (reward, terminated, truncated, info["success"]) == (-1.0, False, True, False)
    assert obs.count("\n") == 21


def test_a_correct_guess_on_the_last_turn_wins(env: TwentyQuestionsEnv) -> None:
    env.reset(seed=0, options={"task_id": "dog"})
    for _ in range(19):
        env.step("Is it a car?")
    _, reward, terminated, truncated, info = env.step("Is it a dog?")
    assert (reward, terminated, truncated, info["success"]) == (0.0, True, False, True)


def test_seeding_and_task_choice(env: TwentyQuestionsEnv) -> None:
    drawn = [env.reset(seed=s, options={"split": "test"})[1]["task_id"] for s in range(30)]
    again = [env.reset(seed=s, options={"split": "test"})[1]["task_id"] for s in range(30)]
    assert drawn == again
    assert len(set(drawn)) > 10
    assert set(drawn) <= set(env.task_ids("test"))
    with pytest.raises(UnknownTaskError):
        env.reset(options={"split": "test", "task_id": "dog"})
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"secret": "dog"})


# -- the LangChain tool -----------------------------------------------------------
def test_tool_answers_like_the_environment(env: TwentyQuestionsEnv) -> None:
    tool = make_twenty_questions_tool("penguin")
    assert isinstance(tool, BaseTool)
    assert set(tool.args) == {"question"}
    env.reset(options={"task_id": "penguin", "split": "train"})
    for question in ["Can it fly?", "Does it have wings?", "Is it a dog or a penguin?", "huh"]:
        _, _, _, _, info = env.step(question)
        assert tool.invoke({"question": question}) == info["answer"]
    assert tool.invoke({"question": "Is it a penguin?"}) == "Yes."
    with pytest.raises(ValueError, match="unknown secret object"):
        make_twenty_questions_tool("unicorn")


# -- scripted agents --------------------------------------------------------------
def test_expected_turns_table() -> None:
    table = expected_turns_table(8)
    assert table[1] == 1.0
    assert table[2] == 1.5
    assert table[3] == 2.0
    assert table[4] == 2.5
    assert np.all(np.diff(table[1:]) > 0)


def test_expert_wins_every_test_task(env: TwentyQuestionsEnv) -> None:
    expert = env.make_scripted_agent("expert", seed=0)
    for task_id in env.task_ids("test"):
        total, info, actions = play(env, expert, seed=0, task_id=task_id)
        assert info["success"], (task_id, actions)
        assert total >= -12
        assert all(not a.startswith("Is it") or "?" in a for a in actions)


def test_scripted_agents_are_seeded(env: TwentyQuestionsEnv) -> None:
    for kind in ("expert", "weak", "random"):
        first = play(env, env.make_scripted_agent(kind, seed=3), seed=5)[2]
        second = play(env, env.make_scripted_agent(kind, seed=3), seed=5)[2]
        assert first == second, kind


def test_expert_beats_weak_beats_random(env: TwentyQuestionsEnv) -> None:
    means = {}
    for kind in ("expert", "weak", "random"):
        agent = env.make_scripted_agent(kind, seed=1)
        means[kind] = np.mean([play(env, agent, seed=s)[0] for s in range(60)])
    assert means["expert"] > means["weak"] + 2 > means["random"] + 4


def test_weak_agent_asks_only_canonical_questions(
    env: TwentyQuestionsEnv, oracle: TwentyQuestionsOracle
) -> None:
    canonical = set(oracle.canonical_questions())
    guesses = {oracle.guess_question(s) for s in oracle.secrets()}
    agent = env.make_scripted_agent("weak", seed=0)
    for seed in range(10):
        for action in play(env, agent, seed=seed)[2]:
            assert action in canonical | guesses
    with pytest.raises(ValueError, match="unknown scripted agent"):
        env.make_scripted_agent("oracle")


# -- the mini game ------------------------------------------------------------------------


def test_mini_game_is_a_subset_with_every_object_identifiable(
    oracle: TwentyQuestionsOracle,
) -> None:
    mini = TwentyQuestionsOracle.mini()
    assert len(mini.secrets()) == 52 and len(mini.property_names()) == 12
    # Shared splits: every object is a task of both.
    assert mini.secrets("test") == mini.secrets("train") == tuple(mini.secrets())
    assert set(mini.secrets()) <= set(oracle.secrets())
    for secret in mini.secrets():  # objects keep their facts
        for prop in mini.property_names():
            assert mini.has_property(secret, prop) == oracle.has_property(secret, prop)
    test_every_object_is_identifiable_by_properties(mini)
    test_every_property_splits_the_objects(mini)
    # Questions about properties and objects outside the subset are not questions here.
    assert oracle.answer("Is it made of wood?", "piano") == "Yes."
    assert mini.answer("Is it made of wood?", "piano") == "Invalid question."
    assert mini.answer("Is it a dog?", "cat") == "Invalid question."
    assert mini.answer("Is it alive?", "cat") == "Yes."


def test_mini_subset_file_names_only_what_the_knowledge_base_has(tmp_path) -> None:
    subset = json.loads(MINI_PATH.read_text(encoding="utf-8"))
    subset["objects"].append("unicorn")
    path = tmp_path / "mini.json"
    path.write_text(json.dumps(subset), encoding="utf-8")
    with pytest.raises(ValueError, match="unicorn"):
        load_mini_knowledge_base(path)


def test_mini_game_is_registered_and_the_expert_wins_it() -> None:
    env = gym.make("archer/TwentyQuestionsMini-v0")
    assert isinstance(env.unwrapped, TwentyQuestionsMiniEnv)
    base = env.unwrapped
    assert list(base.task_ids("test")) == list(TwentyQuestionsOracle.mini().secrets("test"))
    test_expert_wins_every_test_task(base)
    means = {
        kind: np.mean(
            [play(base, base.make_scripted_agent(kind, seed=1), seed=s)[0] for s in range(60)]
        )
        for kind in ("expert", "weak", "random")
    }
    assert means["expert"] > means["weak"] + 0.5 > means["random"] + 5
