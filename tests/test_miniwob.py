"""MiniWoB++ in real headless Chromium: every selected task resets and steps, the scripted
solvers win on their seeds, and the page cannot leave its origin."""

from __future__ import annotations

import re
from collections.abc import Iterator

import gymnasium as gym
import pytest

pytest.importorskip("miniwob")
pytest.importorskip("playwright")

from archer_agents.environments.miniwob.env import MiniWoBEnv, parse_action
from archer_agents.environments.miniwob.tasks import SOLVERS, TASKS, TEST_SEEDS
from archer_agents.environments.registration import MINIWOB_TASKS, miniwob_ids

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def env() -> Iterator[MiniWoBEnv]:
    environment = gym.make("archer/miniwob.click-button-v0", action_timeout_s=5.0).unwrapped
    yield environment
    environment.close()


def _play(env: MiniWoBEnv, kind: str, task_id: str, seed: int = 0) -> tuple[float, dict]:
    agent = env.make_scripted_agent(kind, seed)
    obs, info = env.reset(options={"split": "test", "task_id": task_id})
    agent.reset(obs, info)
    reward, info = 0.0, {}
    for _ in range(env.max_turns):
        obs, reward, terminated, truncated, info = env.step(agent.act(obs))
        if terminated or truncated:
            break
    return reward, info


def test_registration_is_lazy_and_matches_the_task_list():
    assert TASKS is MINIWOB_TASKS and len(set(TASKS)) == len(TASKS)
    for env_id in miniwob_ids():
        spec = gym.spec(env_id)
        assert isinstance(spec.entry_point, str) and spec.kwargs["task"] in TASKS


@pytest.mark.parametrize("task", TASKS)
def test_each_task_resets_and_steps(env, task):
    env.use_task(task)
    obs, info = env.reset(options={"split": "train", "task_id": "3"})
    assert obs.startswith("Instruction: ") and env.instruction
    assert re.search(r"^\[\d+\] ", obs, re.MULTILINE), obs
    first = obs
    again, _ = env.reset(options={"split": "train", "task_id": "3"})
    assert again == first  # a seed fixes the instance
    element = env.snapshot.elements[0]
    obs, reward, terminated, truncated, info = env.step(f'click("{element.element_id}")')
    assert reward in (0.0, 1.0) and not info["tool_error"]
    assert env.chat_messages()[-2] == {
        "role": "assistant",
        "content": f'click("{element.element_id}")',
    }


@pytest.mark.parametrize("task", sorted(SOLVERS))
def test_scripted_solvers_win(env, task):
    env.use_task(task)
    for seed in list(TEST_SEEDS)[:3]:
        reward, info = _play(env, "expert", str(seed))
        assert reward == 1.0 and info["success"], (task, seed, env.instruction, info)
        assert info["raw_reward"] > 0


def test_random_agent_plays(env):
    env.use_task("click-checkboxes")
    reward, info = _play(env, "random", "100005", seed=1)
    assert reward in (0.0, 1.0) and "success" in info


def test_mistakes_are_observations(env):
    env.use_task("enter-text")
    env.reset(options={"split": "train", "task_id": "1"})
    button = env.snapshot.find("button")[0].element_id
    for action, message in [
        ('click("9999")', "no element [9999]"),
        (f'fill("{button}", "x")', "fill failed"),
        ('press("NoSuchKey")', "press failed"),
        ("jump()", "unknown action"),
        ("not a call", "Error"),
        ("go_back()", "no previous page"),
    ]:
        obs, reward, terminated, truncated, info = env.step(action)
        assert info["invalid_action"] and message in obs.splitlines()[-1], (action, obs)
        assert not terminated and not info["tool_error"]


def test_other_actions_work(env):
    env.use_task("enter-text")
    env.reset(options={"split": "train", "task_id": "2"})
    box = env.snapshot.find("textbox")[0].element_id
    obs, *_, info = env.step(f'fill("{box}", "typed")')
    assert 'value="typed"' in obs and not info["invalid_action"]
    obs, *_, info = env.step(f'read_text("{box}")')
    assert not info["invalid_action"]
    obs, *_, info = env.step("scroll(0, 100)")
    assert not info["invalid_action"]
    obs, *_, info = env.step('press("Tab")')
    assert not info["invalid_action"]
    assert parse_action('select_option("3", value="x")').text == "x"


def test_confinement(env):
    env.use_task("click-button")
    env.reset(options={"split": "train", "task_id": "4"})
    assert env.blocked_requests == 0
    obs, *_, info = env.step('goto("http://example.invalid/")')
    assert "outside the allowed origins" in obs and info["blocked_requests"] == 1
    obs, *_, info = env.step('goto("file:///etc/passwd")')
    assert "outside the allowed origins" in obs and info["blocked_requests"] == 2
    origin = env.browser.origin
    obs, *_, info = env.step(f'goto("{origin}/miniwob/click-link.html")')  # allowed origin
    assert not info["invalid_action"] and "click-link" in env.snapshot.url

    def fetch_away(page):
        return page.evaluate(
            "() => fetch('http://127.0.0.2:9/x').then(() => 'reached', () => 'blocked')"
        )

    assert env.browser.run_in_page(fetch_away) == "blocked"
    assert env.blocked_requests == 3
    assert "127.0.0.2" in " ".join(env.browser.blocked_urls)
    xhr_and_image = """() => Promise.all([
        new Promise((resolve) => {
            const request = new XMLHttpRequest();
            request.open('GET', 'http://127.0.0.2:9/xhr');
            request.onload = () => resolve('reached');
            request.onerror = () => resolve('blocked');
            request.send();
        }),
        new Promise((resolve) => {
            const img = new Image();
            img.onload = () => resolve('reached');
            img.onerror = () => resolve('blocked');
            img.src = 'http://127.0.0.2:9/pixel.png';
        }),
    ])"""
    assert env.browser.evaluate(xhr_and_image) == ["blocked", "blocked"]
    assert env.blocked_requests == 5
    blocked = env.browser.blocked_urls
    assert "http://127.0.0.2:9/xhr" in blocked and "http://127.0.0.2:9/pixel.png" in blocked
    # the page's own navigation to a file: URL does not leave the origin
    env.browser.run_in_page(
        lambda page: page.evaluate("() => { location.href = 'file:///etc/passwd'; }")
    )
    assert env.browser.snapshot().url.startswith(origin)


def test_the_embedded_template_renders_the_page_as_observed(env, tiny_policy):
    """An embedded model plays a browser task in its chat template (the ``page`` layout):
    each turn's prompt is the text path's, the latest page only."""
    from archer_agents.formats.conversation import ChatTemplate
    from archer_agents.training.chat_rollout import template_of

    env.use_task("click-checkboxes")
    template = ChatTemplate(
        tiny_policy.tokenizer,
        env.tool_specs,
        chat_template=template_of(tiny_policy.tokenizer),
        template_kwargs=env.chat_template_kwargs,
    )
    agent = env.make_scripted_agent("expert", 0)
    obs, info = env.reset(options={"split": "test", "task_id": str(next(iter(TEST_SEEDS)))})
    agent.reset(obs, info)
    for _ in range(3):
        assert template.prompt_ids(env.chat_messages()) == tiny_policy.prompt_ids(obs)
        obs, _, terminated, truncated, _ = env.step(agent.act(obs))
        if terminated or truncated:
            break
    assert len(env.chat_messages()) >= 3 and not template.prefix_preserving
