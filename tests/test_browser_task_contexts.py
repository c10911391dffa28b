"""Several environments as contexts of one Chromium, in real Chromium: each keeps its own
page and counts; killing a Chromium mid-episode fails only the episodes it ran, with the
reason, while the others finish, and the next reset runs in a fresh Chromium."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence

import pytest

pytest.importorskip("playwright")

from archer_agents.environments.browser_task import example_tasks
from archer_agents.environments.browser_task.env import BrowserTaskEnv

pytestmark = pytest.mark.browser

OUTSIDE = "http://127.0.0.2:9"


def _envs(n: int, contexts_per_browser: int, task: str = "contact-form") -> list[BrowserTaskEnv]:
    return [
        BrowserTaskEnv(example_tasks()[task], contexts_per_browser=contexts_per_browser)
        for _ in range(n)
    ]


def _close(envs: Sequence[BrowserTaskEnv]) -> None:
    for env in envs:
        env.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_environments_are_contexts_of_one_chromium() -> None:
    envs = _envs(3, contexts_per_browser=3, task="find-contact")
    try:
        for env in envs:
            env.reset()
        pids = {env.browser.pid for env in envs}
        assert len(pids) == 1 and envs[0].browser.host.users == 3
        (pid,) = pids
        # separate pages and separate counts
        blocked = f"() => fetch('{OUTSIDE}/x').then(() => 'reached', () => 'blocked')"
        assert envs[0].browser.evaluate(blocked) == "blocked"
        assert [env.blocked_requests for env in envs] == [1, 0, 0]
        link = envs[1].snapshot.find("link", "Contact form")[0].element_id
        _, reward, terminated, _, info = envs[1].step(f'click("{link}")')
        assert reward == 1.0 and terminated
        assert envs[2].browser.snapshot().url.endswith("/index.html")
        # one leaves: the others go on in the same Chromium
        envs[0].close()
        obs, _ = envs[2].reset()
        assert envs[2].browser.pid == pid and "Contact form" in obs
    finally:
        _close(envs)
    assert not _alive(pid)  # the last one out closed Chromium


def _expert_round(envs, agents, observations, done, infos) -> None:
    for index, env in enumerate(envs):
        if done[index]:
            continue
        obs, _, terminated, truncated, info = env.step(agents[index].act(observations[index]))
        observations[index] = obs
        infos[index] = info
        done[index] = terminated or truncated


def test_killing_chromium_fails_only_the_episodes_it_ran() -> None:
    envs = _envs(4, contexts_per_browser=2)
    try:
        agents = [env.make_scripted_agent("expert") for env in envs]
        observations = []
        for env, agent in zip(envs, agents, strict=True):
            obs, info = env.reset()
            agent.reset(obs, info)
            observations.append(obs)
        pids = [env.browser.pid for env in envs]
        assert pids[0] == pids[1] and pids[2] == pids[3] and pids[0] != pids[2]
        done, infos = [False] * 4, [{}] * 4
        _expert_round(envs, agents, observations, done, infos)  # one step each
        assert not any(done)
        os.kill(pids[0], signal.SIGKILL)
        while not all(done):
            _expert_round(envs, agents, observations, done, infos)
        for index in (0, 1):  # the killed Chromium's episodes failed, saying why
            info = infos[index]
            assert info["failure_kind"] == "crashed" and info["success"] is False
            assert info["failure"] and "browser failed" in observations[index].splitlines()[-1]
        for index in (2, 3):  # the other Chromium's episodes finished, and won
            assert infos[index]["success"] is True and "failure" not in infos[index]
        assert envs[2].browser.pid == pids[2] and envs[2].browser.restarts == 0
        # the next episodes of the failed environments run in a fresh Chromium, and win
        for env, agent in zip(envs[:2], agents[:2], strict=True):
            obs, info = env.reset()
            agent.reset(obs, info)
            while True:
                obs, reward, terminated, truncated, info = env.step(agent.act(obs))
                if terminated or truncated:
                    break
            assert reward == 1.0 and info["success"]
        new_pid = envs[0].browser.pid
        assert new_pid == envs[1].browser.pid and new_pid != pids[0]
        assert not _alive(pids[0])
        assert envs[0].browser.restarts == 1
    finally:
        _close(envs)


def test_a_vectorised_rollout_survives_a_killed_chromium(tmp_path) -> None:
    from archer_agents.training.rollout import ScriptedActor, collect

    made: list[BrowserTaskEnv] = []

    def factory() -> BrowserTaskEnv:
        env = BrowserTaskEnv(example_tasks()["contact-form"], contexts_per_browser=2)
        made.append(env)
        return env

    class KillingActor(ScriptedActor):
        """The expert, which kills the first Chromium at its second turn."""

        turns = 0

        def act(self, slots, observations):
            self.turns += 1
            if self.turns == 2:
                os.kill(made[0].browser.pid, signal.SIGKILL)
            return super().act(slots, observations)

    result = collect(factory, KillingActor("expert"), 4, num_envs=4, seed=0)
    assert len(made) == 4 and len(result.episodes) == 4
    failed = [e for e in result.episodes if "failure" in e.transitions[-1].info]
    won = [e for e in result.episodes if e.success]
    assert len(failed) == 2 and len(won) == 2
    assert all(e.transitions[-1].info["failure_kind"] == "crashed" for e in failed)
