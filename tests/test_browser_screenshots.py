"""Screenshots as an observation option of the browser environments (``screenshot=True``).

Each reset and step puts a PNG of the viewport in ``info["screenshot"]``; the
text observation is the one a text policy reads without the option. The PNG is
checked as a PNG (its signature and the size in its header), not trusted.
"""

from __future__ import annotations

import os
import signal
import struct

import pytest

pytest.importorskip("playwright")

from archer_agents.environments.browser_task import example_tasks

pytestmark = pytest.mark.browser

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header chunk; AssertionError if it is no PNG."""
    assert isinstance(data, bytes) and data[:8] == PNG_SIGNATURE, data[:16]
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_miniwob_screenshots_are_pngs_of_the_viewport_beside_the_same_text() -> None:
    pytest.importorskip("miniwob")
    from archer_agents.environments.miniwob.env import MiniWoBEnv

    env = MiniWoBEnv("click-checkboxes", viewport=(640, 480), screenshot=True)
    try:
        obs, info = env.reset(options={"task_id": "5"})
        assert png_size(info["screenshot"]) == (640, 480)
        box = env.snapshot.find("checkbox")[0].element_id
        after, _, _, _, step_info = env.step(f'click("{box}")')
        assert png_size(step_info["screenshot"]) == (640, 480)
        assert step_info["screenshot"] != info["screenshot"]  # the page after the click
        env.screenshot_in_info = False  # the text is the same with or without it
        plain, plain_info = env.reset(options={"task_id": "5"})
        assert plain == obs and "screenshot" not in plain_info
        _, _, _, _, plain_step = env.step(f'click("{box}")')
        assert "screenshot" not in plain_step and env._last_observation == after
    finally:
        env.close()


def test_task_file_screenshots_and_none_after_a_browser_failure() -> None:
    from archer_agents.environments.browser_task.env import BrowserTaskEnv

    env = BrowserTaskEnv(
        example_tasks()["contact-form"],
        viewport=(700, 500),
        screenshot=True,
        contexts_per_browser=1,  # its own Chromium, killed below
    )
    try:
        obs, info = env.reset()
        assert png_size(info["screenshot"]) == (700, 500)
        assert obs.startswith("Instruction: ") and "[" in obs
        box = env.snapshot.find("textbox", "Name")[0].element_id
        _, _, _, _, step_info = env.step(f'fill("{box}", "Ada")')
        assert png_size(step_info["screenshot"]) == (700, 500)
        _, _, _, _, bad = env.step("not a call")  # a mistake still shows the page
        assert bad["invalid_action"] and png_size(bad["screenshot"]) == (700, 500)
        assert env.browser.pid is not None
        os.kill(env.browser.pid, signal.SIGKILL)
        _, _, terminated, _, failed = env.step(f'fill("{box}", "Ada")')
        assert terminated and failed["failure_kind"] == "crashed"
        assert failed["screenshot"] is None  # no page to show
        _, info = env.reset()  # a fresh Chromium, and screenshots again
        assert png_size(info["screenshot"]) == (700, 500)
    finally:
        env.close()


def test_an_episode_log_keeps_a_screenshots_size_not_its_bytes(tmp_path) -> None:
    pytest.importorskip("miniwob")
    import gymnasium as gym

    from archer_agents.data.episode_log import EpisodeWriter, read_episodes
    from archer_agents.training.rollout import ScriptedActor, collect

    log = tmp_path / "episodes.jsonl"
    with EpisodeWriter(log) as writer:
        collect(
            lambda: gym.make("archer/miniwob.click-button-v0", screenshot=True),
            ScriptedActor("expert", seed=0),
            1,
            num_envs=1,
            writer=writer,
        )
    (episode,), _ = read_episodes(log)
    note = episode.transitions[0].info["screenshot"]
    assert note.startswith("<PNG, ") and note.endswith(" bytes>"), note
    assert int(note.split()[1]) > 1000  # the size of a real viewport's PNG
    assert log.stat().st_size < 20_000  # no escaped image in the log
