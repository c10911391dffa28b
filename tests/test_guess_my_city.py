"""Guess My City: data, question parser, leak-free answers, episode rules, agents, tool."""

from __future__ import annotations

import json
import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from langchain_core.tools import BaseTool

import archer_agents.environments  # noqa: F401  (registers the ids)
from archer_agents.environments.base import UnknownTaskError
from archer_agents.environments.questions.guess_my_city import GuessMyCityEnv
from archer_agents.tools.guess_my_city.cities import DATA_PATH, CityDatabase
from archer_agents.tools.guess_my_city.oracle import (
    HIDDEN_COUNTRY,
    GuessMyCityOracle,
    answer_city_question,
    make_guess_my_city_tool,
)


@pytest.fixture(scope="module")
def oracle() -> GuessMyCityOracle:
    return GuessMyCityOracle.default()


@pytest.fixture(scope="module")
def raw() -> dict:
    return json.loads(DATA_PATH.read_text(encoding="utf-8"))


@pytest.fixture()
def env() -> GuessMyCityEnv:
    return GuessMyCityEnv()


def play(env: GuessMyCityEnv, agent, *, seed: int, task_id: str | None = None):
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


# -- data -------------------------------------------------------------------------
def test_data_size_and_coverage(raw: dict) -> None:
    cities = raw["cities"]
    assert len(cities) >= 100
    assert {c["continent"] for c in cities} == {c["name"] for c in raw["continents"]}
    assert {c["climate"] for c in cities} == {c["name"] for c in raw["climates"]}
    assert {c["population"] for c in cities} == {
        "under 1 million",
        "1 to 5 million",
        "over 5 million",
    }
    assert {c["coastal"] for c in cities} == {True, False}
    assert {c["capital"] for c in cities} == {True, False}
    names = [n.lower() for c in cities for n in [c["name"], *c["aliases"]]]
    assert len(names) == len(set(names))


def test_every_city_is_identifiable(oracle: GuessMyCityOracle) -> None:
    table = GuessMyCityEnv().answer_table
    assert len({tuple(column) for column in table.answers.T}) == len(oracle.secrets())


def test_splits_are_disjoint_and_fixed(oracle: GuessMyCityOracle, raw: dict) -> None:
    train, test = set(oracle.secrets("train")), set(oracle.secrets("test"))
    assert not train & test
    assert train | test == {c["name"] for c in raw["cities"]}
    assert len(test) == 32
    assert {"Berlin", "Lagos", "Los Angeles", "Rio de Janeiro", "Canberra"} <= test
    assert {"Paris", "Tokyo", "New York", "Cairo", "Sydney"} <= train
    for split in (train, test):
        assert {c["continent"] for c in raw["cities"] if c["name"] in split} == {
            c["name"] for c in raw["continents"]
        }


def test_loader_rejects_unknown_references(raw: dict) -> None:
    broken = json.loads(json.dumps(raw))
    broken["cities"][0]["country"] = "Atlantis"
    with pytest.raises(ValueError, match="unknown country"):
        CityDatabase.model_validate(broken)


@pytest.mark.parametrize(
    ("city", "question", "answer"),
    [
        ("Paris", "Is it a capital?", "Yes."),
        ("Sydney", "Is it a capital?", "No."),
        ("Canberra", "Is it a capital?", "Yes."),
        ("Chicago", "Is it on the coast?", "No."),
        ("Tokyo", "Is it on the coast?", "Yes."),
        ("Lima", "Is the climate dry?", "Yes."),
        ("Moscow", "Is the climate continental?", "Yes."),
        ("Reykjavik", "Is the climate subarctic?", "Yes."),
        ("Rome", "Is the climate Mediterranean?", "Yes."),
        ("Rome", "Is the climate temperate?", "Yes."),
        ("Buenos Aires", "Is it in the southern hemisphere?", "Yes."),
        ("Montreal", "What language do they speak?", "The main language is French."),
        ("Mumbai", "Do people speak Hindi there?", "Yes."),
        ("Mumbai", "Is the main language Hindi?", "No."),
    ],
)
def test_facts(city: str, question: str, answer: str) -> None:
    assert answer_city_question(question, city) == answer


# -- parser -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("question", "paris", "tokyo"),
    [
        ("Is it in Europe?", "Yes.", "No."),
        ("is the city located in europe", "Yes.", "No."),
        ("Is it a European city?", "Yes.", "No."),
        ("Is it in Asia?", "No.", "Yes."),
        ("Is it in France?", "Yes.", "No."),
        ("Is it in Japan??", "No.", "Yes."),
        ("Is it a Japanese city?", "No.", "Yes."),
        ("Is your city in the USA?", "No.", "No."),
        ("Is it in France or Japan?", "Yes.", "Yes."),
        ("Is it in Africa or South America?", "No.", "No."),
        ("Is it the capital of France?", "Yes.", "No."),
        ("Is it the capital of Japan?", "No.", "Yes."),
        ("Is it the French capital?", "Yes.", "No."),
        ("Is it on the coast?", "No.", "Yes."),
        ("Is it by the sea?", "No.", "Yes."),
        ("Is it landlocked?", "Yes.", "No."),
        ("Is it a capital city?", "Yes.", "Yes."),
        ("Do people speak French there?", "Yes.", "No."),
        ("Is French spoken there?", "Yes.", "No."),
        ("Is it a Japanese-speaking city?", "No.", "Yes."),
        ("Is the main language Japanese?", "No.", "Yes."),
        ("Is the climate tropical?", "No.", "No."),
        ("Does it have a temperate climate?", "Yes.", "Yes."),
        ("Does it have more than 5 million people?", "Yes.", "Yes."),
        ("Does it have over a million inhabitants?", "Yes.", "Yes."),
        ("Is the population under 1,000,000?", "No.", "No."),
        ("Is it in the northern hemisphere?", "Yes.", "Yes."),
        ("What continent is it on?", "It is in Europe.", "It is in Asia."),
        ("Which continent is it in?", "It is in Europe.", "It is in Asia."),
        ("What country is it in?", "It is in France.", "It is in Japan."),
        (
            "What language do they speak?",
            "The main language is French.",
            "The main language is Japanese.",
        ),
        ("What's the climate like?", "The climate is temperate.", "The climate is temperate."),
        (
            "How many people live there?",
            "More than 5 million people live in its urban area.",
            "More than 5 million people live in its urban area.",
        ),
    ],
)
def test_questions(question: str, paris: str, tokyo: str) -> None:
    assert answer_city_question(question, "Paris") == paris
    assert answer_city_question(question, "Tokyo") == tokyo


@pytest.mark.parametrize(
    ("question", "guesses"),
    [
        ("Is it Paris?", ("Paris",)),
        ("Paris?", ("Paris",)),
        ("is it PARIS", ("Paris",)),
        ("Is it in Paris?", ("Paris",)),
        ("Is it the city of Paris?", ("Paris",)),
        ("Could it be Bombay?", ("Mumbai",)),
        ("Is it Bogotá?", ("Bogota",)),
        ("Is it São Paulo?", ("Sao Paulo",)),
        ("Is it Singapore?", ("Singapore",)),
        ("Is it Paris or London?", ("Paris", "London")),
        ("Is it Paris, London or Rome?", ("Paris", "London", "Rome")),
    ],
)
def test_guesses(oracle: GuessMyCityOracle, question: str, guesses: tuple[str, ...]) -> None:
    parsed = oracle.parse(question)
    assert (parsed.kind, parsed.guesses) == ("guess", guesses)


def test_only_a_single_right_name_wins(oracle: GuessMyCityOracle) -> None:
    assert oracle.judge("Is it Paris?", "Paris").solved
    assert not oracle.judge("Is it Paris or London?", "Paris").solved
    assert oracle.answer("Is it Paris or London?", "Paris") == "No."
    assert oracle.answer("Is it London?", "Paris") == "No."
    assert oracle.answer("Is it in Singapore?", "Singapore") == "Yes."
    assert not oracle.judge("Is it in Singapore?", "Singapore").solved


@pytest.mark.parametrize(
    "question",
    [
        "",
        "?",
        "blah blah",
        "What is it?",
        "Is it hot?",
        "Is it in Atlantis?",
        "Does it have more than 3 million people?",
        "Is it Gotham?",
    ],
)
def test_unknown_questions_are_invalid(question: str) -> None:
    assert answer_city_question(question, "Paris") == "Invalid question."


# -- answers never name the city ----------------------------------------------------
def test_no_answer_names_the_city(oracle: GuessMyCityOracle) -> None:
    questions = [*oracle.question_forms().values(), *oracle.canonical_questions()]
    assert len(questions) > 300
    for city in oracle.secrets():
        record = oracle.city(city)
        names = {record.name, *record.aliases, re.sub(r"\s+City$", "", record.name)}
        patterns = [re.compile(rf"\b{re.escape(name)}\b", re.IGNORECASE) for name in names]
        for question in questions:
            answer = oracle.answer(question, city)
            assert not any(p.search(answer) for p in patterns), (city, question, answer)


def test_a_country_named_like_its_city_is_hidden(oracle: GuessMyCityOracle) -> None:
    hidden = {c for c in oracle.secrets() if oracle.country_hidden(oracle.city(c))}
    assert hidden == {
        "Singapore",
        "Kuwait City",
        "Tunis",
        "Mexico City",
        "Panama City",
        "Guatemala City",
    }
    assert oracle.answer("What country is it in?", "Tunis") == HIDDEN_COUNTRY
    assert oracle.answer("Is it in Tunisia?", "Tunis") == "Yes."


# -- the environment --------------------------------------------------------------
def test_registered_and_passes_the_env_checker() -> None:
    env = gym.make("archer/GuessMyCity-v0")
    assert isinstance(env.unwrapped, GuessMyCityEnv)
    check_env(env.unwrapped, skip_render_check=True)


def test_an_episode(env: GuessMyCityEnv) -> None:
    obs, info = env.reset(seed=0, options={"task_id": "Lagos", "split": "test"})
    assert obs == "Questions:\n" and info["task_id"] == "Lagos"
    obs, reward, terminated, truncated, info = env.step("What continent is it on?")
    assert obs == "Questions:\nWhat continent is it on? It is in Africa.\n"
    assert (reward, terminated, truncated) == (-1.0, False, False)
    _, reward, terminated, _, info = env.step("Is it Lagos or Cairo?")
    assert (reward, terminated, info["answer"]) == (-1.0, False, "No.")
    _, reward, _, _, info = env.step("Where is the treasure?")
    assert info["invalid_action"] is True and reward == -1.0
    obs, reward, terminated, truncated, info = env.step("Is it Lagos?")
    assert (reward, terminated, truncated, info["success"]) == (0.0, True, False, True)
    assert obs.endswith("\nIs it Lagos? Yes.\n")
    assert obs.count("\n") == 5


def test_truncation_after_twenty_turns(env: GuessMyCityEnv) -> None:
    env.reset(seed=0, options={"task_id": "Lagos", "split": "test"})
    for _ in range(19):
        assert env.step("Is it Paris?")[3] is False
    _, reward, terminated, truncated, info = env.step("Is it Paris?")
    assert (reward, terminated, truncated, info["success"]) == (-1.0, False, True, False)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step("Is it Lagos?")


def test_seeding_and_tasks(env: GuessMyCityEnv) -> None:
    drawn = [env.reset(seed=s, options={"split": "test"})[1]["task_id"] for s in range(20)]
    assert drawn == [env.reset(seed=s, options={"split": "test"})[1]["task_id"] for s in range(20)]
    assert set(drawn) <= set(env.task_ids("test")) and len(set(drawn)) > 8
    with pytest.raises(UnknownTaskError):
        env.reset(options={"split": "test", "task_id": "Paris"})


def test_tool_answers_like_the_environment(env: GuessMyCityEnv) -> None:
    tool = make_guess_my_city_tool("Tokyo")
    assert isinstance(tool, BaseTool) and set(tool.args) == {"question"}
    env.reset(options={"task_id": "Tokyo"})
    for question in ["What language do they speak?", "Is it in Asia?", "Is it Osaka?", "Hmm?"]:
        assert tool.invoke({"question": question}) == env.step(question)[4]["answer"]
    assert tool.invoke({"question": "Is it Tokyo?"}) == "Yes."
    with pytest.raises(ValueError, match="unknown secret city"):
        make_guess_my_city_tool("Gotham")


# -- scripted agents --------------------------------------------------------------
def test_expert_wins_every_test_task(env: GuessMyCityEnv) -> None:
    expert = env.make_scripted_agent("expert", seed=0)
    for task_id in env.task_ids("test"):
        total, info, actions = play(env, expert, seed=0, task_id=task_id)
        assert info["success"], (task_id, actions)
        assert total >= -5


def test_expert_beats_weak_beats_random(env: GuessMyCityEnv) -> None:
    means = {}
    for kind in ("expert", "weak", "random"):
        agent = env.make_scripted_agent(kind, seed=2)
        means[kind] = np.mean([play(env, agent, seed=s)[0] for s in range(60)])
    assert means["expert"] > means["weak"] + 3 > means["random"] + 6


def test_weak_agent_asks_yes_no_questions_only(
    env: GuessMyCityEnv, oracle: GuessMyCityOracle
) -> None:
    allowed = set(oracle.weak_questions()) | {oracle.guess_question(c) for c in oracle.secrets()}
    agent = env.make_scripted_agent("weak", seed=0)
    for seed in range(10):
        assert set(play(env, agent, seed=seed)[2]) <= allowed
