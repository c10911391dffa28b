"""MiniWoB++ episodes restarted in their open page: the same instance as a fresh load.

A reset of the task whose page is open restarts the episode in it rather than
loading it again (`MiniWoBEnv._start`, `BrowserSession.restart_episode`). These tests
hold it to the promise that this changes nothing the agent can see: for a seed,
the instruction, the URL and the element tree with its ids are those of a
freshly loaded page, whatever the episode before it did; and where the page
cannot be restarted, it is loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

pytest.importorskip("miniwob")
pytest.importorskip("playwright")

from archer_agents.environments.miniwob.env import MiniWoBEnv
from archer_agents.environments.miniwob.tasks import SOLVERS, TASKS

pytestmark = pytest.mark.browser

SEED, OTHER = "17", "523"


@pytest.fixture(scope="module")
def env() -> Iterator[MiniWoBEnv]:
    environment = MiniWoBEnv(TASKS[0], action_timeout_s=10.0)
    yield environment
    environment.close()


def _display(env: MiniWoBEnv) -> list[str]:
    """MiniWoB's own display (last reward, average, episodes done, cover) and the focus."""
    return env.browser.evaluate(
        """() => [document.getElementById('reward-last').textContent,
                  document.getElementById('reward-avg').textContent,
                  document.getElementById('episode-id').textContent,
                  document.getElementById('sync-task-cover').style.display,
                  document.activeElement.tagName + '#' + document.activeElement.id]"""
    )


def _loaded(env: MiniWoBEnv, task: str, seed: str) -> tuple[str, str, list[str]]:
    """The episode of ``seed`` on a freshly loaded page: observation, instruction, display."""
    other = next(t for t in TASKS if t != task)
    env.use_task(other)
    env.reset(options={"task_id": OTHER})  # the open page is now another task's
    env.use_task(task)
    obs, _ = env.reset(options={"task_id": seed})
    assert env.last_reset == "load"
    return obs, env.instruction, _display(env)


def _play(env: MiniWoBEnv, kind: str, steps: int) -> None:
    """Up to ``steps`` actions of a scripted agent: the page is left as a model leaves it."""
    agent = env.make_scripted_agent(kind, seed=3)
    obs, info = env.reset(options={"task_id": OTHER})
    assert env.last_reset == "restart"
    agent.reset(obs, info)
    for _ in range(steps):
        obs, _, terminated, truncated, _ = env.step(agent.act(obs))
        if terminated or truncated:
            return


@pytest.mark.parametrize("task", TASKS)
def test_a_restarted_episode_is_the_freshly_loaded_one(env, task) -> None:
    fresh_obs, fresh_instruction, fresh_display = _loaded(env, task, SEED)
    fresh_tree = env.snapshot.tree()
    assert fresh_display[:4] == ["-", "-", "0", "none"]
    kinds = ("expert", "random") if task in SOLVERS else ("random",)
    for kind in kinds:  # an episode won (the page shows its reward), one left midway
        _play(env, kind, steps=4)
        obs, info = env.reset(options={"task_id": SEED})
        assert env.last_reset == "restart"
        assert env.instruction == fresh_instruction, (task, kind)
        assert env.snapshot.tree() == fresh_tree, (task, kind)
        assert obs == fresh_obs and info["blocked_requests"] == 0
        assert _display(env) == fresh_display, (task, kind)


@pytest.mark.parametrize("task", ["click-checkboxes", "enter-text"])
def test_the_scripted_solver_wins_restarted_episodes(env, task) -> None:
    env.use_task(task)
    env.reset(options={"task_id": "0"})
    for seed in ("100000", "100001", "100002", "100003"):
        agent = env.make_scripted_agent("expert")
        obs, info = env.reset(options={"split": "test", "task_id": seed})
        assert env.last_reset == "restart"
        agent.reset(obs, info)
        for _ in range(env.max_turns):
            obs, reward, terminated, truncated, info = env.step(agent.act(obs))
            if terminated or truncated:
                break
        assert reward == 1.0 and info["raw_reward"] > 0, (seed, env.instruction, info)
        last, _, done, *_ = _display(env)
        assert (last, done) == ("1.00", "1")  # the page counts from its restart, as from a load


def test_a_page_the_model_left_or_broke_is_loaded_again(env, caplog) -> None:
    fresh_obs, _, _ = _loaded(env, "click-checkboxes", SEED)
    origin = env.browser.origin
    env.step(f'goto("{origin}/miniwob/click-button.html")')  # another task's page
    obs, _ = env.reset(options={"task_id": SEED})
    assert env.last_reset == "load" and obs == fresh_obs
    env.browser.evaluate("() => { window.genProblem = undefined; }")  # no MiniWoB page now
    with caplog.at_level(logging.WARNING, logger="archer_agents.tools.browser.session"):
        obs, _ = env.reset(options={"task_id": SEED})
    assert env.last_reset == "load" and obs == fresh_obs
    assert any("restarting" in r.getMessage() for r in caplog.records), caplog.text
    # a fragment the last episode added to the URL is not kept
    env.browser.evaluate("() => { location.hash = 'x'; }")
    obs, _ = env.reset(options={"task_id": SEED})
    assert env.last_reset == "restart" and obs == fresh_obs
    assert env.snapshot.url == f"{origin}/miniwob/click-checkboxes.html"
    env.step("go_back()")  # the fragment's history entry is gone with the last episode
    assert "no previous page" in env._last_observation.splitlines()[-1]


def test_restart_in_page_can_be_turned_off() -> None:
    env = MiniWoBEnv("enter-text", restart_in_page=False)
    try:
        first, _ = env.reset(options={"task_id": SEED})
        again, _ = env.reset(options={"task_id": SEED})
        assert env.last_reset == "load" and again == first
    finally:
        env.close()
