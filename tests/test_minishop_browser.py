"""MiniShop in real headless Chromium: parity with the text backend, confinement, crashes."""

from __future__ import annotations

import os
import re
import signal
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import gymnasium as gym
import pytest

from archer_agents.environments.minishop.browser import MiniShopBrowserEnv
from archer_agents.environments.minishop.env import MiniShopEnv
from archer_agents.tools.shop.pages import parse_observation

pytestmark = pytest.mark.browser

_URL_LINE = re.compile(r"^URL: http://127\.0\.0\.1:\d+", re.MULTILINE)


def _same_port(observation: str) -> str:
    return _URL_LINE.sub("URL: http://127.0.0.1:PORT", observation)


@pytest.fixture(scope="module")
def browser_env() -> Iterator[MiniShopBrowserEnv]:
    env = gym.make("archer/MiniShopBrowser-v0", catalog="small", action_timeout_s=5.0)
    yield env.unwrapped
    env.close()


@pytest.fixture(scope="module")
def text_env() -> MiniShopEnv:
    return MiniShopEnv(catalog="small")


def _assert_parity(text_env, browser_env, task_id: str, next_action: Callable[[str], str | None]):
    """Play the same actions in both backends; every observation and reward must agree."""
    options = {"split": "test", "task_id": task_id}
    text_obs, _ = text_env.reset(options=options)
    browser_obs, _ = browser_env.reset(options=options)
    assert _same_port(browser_obs) == _same_port(text_obs)
    played = []
    while (action := next_action(text_obs)) is not None:
        played.append(action)
        text_obs, t_reward, t_term, t_trunc, t_info = text_env.step(action)
        browser_obs, b_reward, b_term, b_trunc, b_info = browser_env.step(action)
        assert _same_port(browser_obs) == _same_port(text_obs), played
        assert (b_reward, b_term, b_trunc) == (t_reward, t_term, t_trunc), played
        assert b_info["invalid_action"] == t_info["invalid_action"], played
        assert "failure" not in b_info
        if t_term or t_trunc:
            assert b_info["success"] == t_info["success"]
            assert b_info.get("purchase") == t_info.get("purchase")
            break
    return text_obs, played


def test_expert_episodes_are_identical_in_both_backends(text_env, browser_env):
    for task_id in text_env.task_ids("test")[:3]:
        expert = _expert_for(text_env, task_id)
        final, played = _assert_parity(text_env, browser_env, task_id, expert)
        assert "Thank you for your order" in final and len(played) >= 4


def test_mistakes_history_and_encoding_are_identical_in_both_backends(text_env, browser_env):
    def first_result(obs: str) -> str:
        links = [e for e in parse_observation(obs).find("link") if e.name != "Next >"]
        return f'click("{links[0].element_id}")'

    def odd_select(obs: str) -> str:
        box = parse_observation(obs).find("combobox")[0]
        return f'select_option("{box.element_id}", "{box.options[-1].text.upper()}")'

    script: list[str | Callable[[str], str]] = [
        "go_back()",  # nothing to go back to
        'click("b99")',  # unknown id
        'fill("b2", "x")',  # wrong kind
        'click("t1")',  # wrong kind
        "search[shirt",  # malformed
        'fill("t1", "navy\'s ~*é\\tcotton")',  # form encoding of odd characters
        'click("b2")',
        "search[cotton]",
        "search[cotton]",  # same URL again: a new history entry in both
        "click[Next >]",
        first_result,
        odd_select,  # chosen, then lost when the page is reloaded by going back
        'fill("t1", "typed but not sent")',
        "go_back()",
        "go_back()",
        first_result,
        'select_option("s3", "plaid")',  # no such option
        "click[Buy Now]",
    ]
    steps = iter(script)

    def next_action(obs: str) -> str | None:
        item = next(steps, None)
        return item(obs) if callable(item) else item

    text_env.max_turns = browser_env.max_turns = 25  # the script is longer than the horizon
    try:
        task_id = text_env.task_ids("test")[4]
        final, played = _assert_parity(text_env, browser_env, task_id, next_action)
    finally:
        text_env.max_turns = browser_env.max_turns = 15
    assert len(played) == len(script)
    assert "Thank you for your order" in final


def _png_colours(data: bytes, limit: int = 160) -> set[tuple[int, ...]]:
    """Distinct pixel colours in the first ``limit`` rows of an 8-bit RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour_type in (2, 6) and header[12] == 0
    channels = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    previous = bytearray(stride)
    colours: set[tuple[int, ...]] = set()
    for row in range(min(height, limit)):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                best = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + best) & 0xFF
        colours.update(tuple(line[i : i + channels]) for i in range(0, stride, channels * 4))
        previous = line
    return colours


def test_screenshot_of_an_item_page_is_not_blank(browser_env):
    obs, _ = browser_env.reset(options={"split": "test", "task_id": "test-0000"})
    product = browser_env.catalog.by_asin[browser_env.goal.target_asin]
    browser_env.step(f"search[{product.title}]")
    obs, *_ = browser_env.step(f"click[{product.title}]")
    assert f"heading '{product.title}'" in obs
    png = browser_env.screenshot()
    colours = _png_colours(png)
    assert len(colours) >= 8, colours


class _Counter(BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Counter.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_requests_to_other_origins_are_blocked_and_counted(browser_env):
    other = ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    elsewhere = f"http://127.0.0.1:{other.server_address[1]}"
    _Counter.hits = []
    try:
        browser_env.reset(options={"split": "test", "task_id": "test-0001"})
        assert browser_env.blocked_requests == 0

        def from_the_page(page):
            fetch = page.evaluate(
                "url => fetch(url).then(() => 'reached', () => 'blocked')", elsewhere + "/data"
            )
            image = page.evaluate(
                """url => new Promise(done => { const img = new Image();
                   img.onload = () => done('reached'); img.onerror = () => done('blocked');
                   img.src = url; })""",
                elsewhere + "/pixel.png",
            )
            made_up = page.evaluate(
                "url => fetch(url).then(() => 'reached', () => 'blocked')",
                "http://minishop-test.invalid/x",
            )
            return fetch, image, made_up

        assert browser_env.run_in_page(from_the_page) == ("blocked", "blocked", "blocked")
        obs, _, _, _, info = browser_env.step("search[cotton]")
        assert info["blocked_requests"] == browser_env.blocked_requests == 3
        assert "minishop-test.invalid" in " ".join(browser_env.browser.blocked_urls)

        def navigate_away(page):
            try:
                page.goto(elsewhere + "/page")
            except Exception as exc:  # Playwright reports the aborted navigation
                return str(exc)
            return "navigated"

        assert "ERR_BLOCKED_BY_CLIENT" in browser_env.run_in_page(navigate_away)
        assert browser_env.blocked_requests == 4
        assert _Counter.hits == []  # nothing ever reached the other server
    finally:
        other.shutdown()
        other.server_close()


def test_downloads_and_file_urls_are_refused(browser_env):
    browser_env.reset(options={"split": "test", "task_id": "test-0002"})

    def download(page):
        with page.expect_download() as pending:
            page.evaluate(
                """() => { const a = document.createElement('a'); a.href = '/';
                   a.download = 'page.html'; document.body.appendChild(a); a.click(); }"""
            )
        return pending.value.failure()

    assert browser_env.run_in_page(download)  # a failure reason: the download was cancelled

    def open_file(page):
        page.evaluate("() => { location.href = 'file:///etc/hostname'; }")
        page.wait_for_timeout(300)
        return page.url

    assert browser_env.run_in_page(open_file) == browser_env.origin + "/"


def test_each_episode_gets_a_fresh_context(browser_env):
    browser_env.reset(options={"split": "test", "task_id": "test-0003"})
    browser_env.step("search[cotton]")
    first = browser_env.run_in_page(lambda page: page.context.cookies())
    obs, _ = browser_env.reset(options={"split": "test", "task_id": "test-0003"})
    second = browser_env.run_in_page(lambda page: page.context.cookies())
    assert len(first) == len(second) == 1 and first[0]["value"] != second[0]["value"]
    obs, _, _, _, info = browser_env.step("go_back()")  # no history from the last episode
    assert "no previous page" in info["error"]
    size = browser_env.run_in_page(
        lambda page: page.evaluate(
            "() => [innerWidth, innerHeight, navigator.language, "
            "Intl.DateTimeFormat().resolvedOptions().timeZone]"
        )
    )
    assert size == [1280, 720, "en-US", "UTC"]


def test_a_killed_browser_fails_the_episode_and_is_restarted(browser_env, text_env):
    browser_env.reset(options={"split": "test", "task_id": "test-0005"})
    browser_env.step("search[cotton]")
    old_pid, restarts = browser_env.browser_pid, browser_env.browser_restarts
    os.kill(old_pid, signal.SIGKILL)
    obs, reward, terminated, truncated, info = browser_env.step("search[wool]")
    assert (reward, terminated, truncated) == (0.0, True, False)
    assert info["success"] is False and info["failure_kind"] == "crashed"
    assert "browser failed" in obs.splitlines()[-1]
    assert browser_env.browser_restarts == restarts + 1 and browser_env.browser_pid != old_pid
    # the next episode runs in the new browser, to a purchase
    final, _ = _assert_parity(
        text_env, browser_env, "test-0005", _expert_for(text_env, "test-0005")
    )
    assert "Thank you for your order" in final


def test_a_hung_browser_times_out_and_is_restarted(browser_env):
    browser = browser_env.browser
    saved = browser.action_timeout_s
    browser.action_timeout_s = 1.5
    try:
        browser_env.reset(options={"split": "test", "task_id": "test-0006"})
        hung_pid, restarts = browser_env.browser_pid, browser_env.browser_restarts
        os.kill(hung_pid, signal.SIGSTOP)
        obs, reward, terminated, _, info = browser_env.step("search[cotton]")
        # the action's deadline was the way out (not a crash), and a new browser took over
        assert (reward, terminated, info["failure_kind"]) == (0.0, True, "hung")
        assert browser_env.browser_restarts == restarts + 1
        assert browser_env.browser_pid != hung_pid
        with pytest.raises(ProcessLookupError):
            os.kill(hung_pid, 0)  # the stopped browser was killed and reaped
    finally:
        browser.action_timeout_s = saved
    obs, _ = browser_env.reset(options={"split": "test", "task_id": "test-0006"})
    assert "[t1] textbox 'Search'" in obs


def _expert_for(text_env: MiniShopEnv, task_id: str) -> Callable[[str], str]:
    expert = text_env.make_scripted_agent("expert")
    primed = False

    def act(obs: str) -> str:
        nonlocal primed
        if not primed:
            expert.reset(obs, {"task_id": task_id})
            primed = True
        return expert.act(obs)

    return act
