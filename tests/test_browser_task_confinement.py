"""A task file's browser reaches its allowed origins only: navigation by the model or the
page, file: URLs, and requests made by the page's scripts (fetch, XHR, images, forms) to
any other origin are blocked and counted, in real Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("playwright")

from archer_agents.environments.browser_task.env import BrowserTaskEnv
from archer_agents.tools.browser.static import StaticServer

pytestmark = pytest.mark.browser

OUTSIDE = "http://127.0.0.2:9"
"""Another origin (a loopback address no server listens on; never reached either way)."""

PAGE = f"""<!doctype html><html><body>
<h1>Confined</h1>
<img id="away" src="{OUTSIDE}/pixel.png" alt="pixel">
<a id="out" href="{OUTSIDE}/elsewhere.html">Elsewhere</a>
<a id="file" href="file:///etc/passwd">Passwords</a>
<form action="{OUTSIDE}/collect" method="get"><input name="q" aria-label="Query">
<button type="submit">Send away</button></form>
</body></html>"""


@pytest.fixture(scope="module")
def other_site(tmp_path_factory):
    """A second local origin, allowed by one task file and not by the other."""
    root = tmp_path_factory.mktemp("other")
    (root / "data.txt").write_text("from the other origin")
    with StaticServer(root) as server:
        yield server.origin


def _task(tmp_path: Path, allowed: list[str]) -> Path:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "index.html").write_text(PAGE)
    path = tmp_path / "task.yaml"
    origins = "".join(f"\n  - {origin}" for origin in allowed)
    path.write_text(
        "instruction: Stay here.\nsite: site\nstart_url: /index.html\n"
        f"allowed_origins:{origins or ' []'}\n"
        "success: {text_present: never shown}\nmax_steps: 30\n"
    )
    return path


@pytest.fixture
def env(tmp_path, other_site):
    environment = BrowserTaskEnv(_task(tmp_path, [other_site]))
    yield environment
    environment.close()


def _fetch(env: BrowserTaskEnv, script: str) -> str:
    return env.browser.evaluate(script)


def test_the_page_image_to_another_origin_is_blocked_at_reset(env) -> None:
    obs, info = env.reset()
    assert info["blocked_requests"] == 1
    assert env.browser.blocked_urls == [f"{OUTSIDE}/pixel.png"]


def test_model_navigation_off_the_origins_is_blocked(env) -> None:
    env.reset()
    start = env.snapshot.url
    for action, blocked in [
        (f'goto("{OUTSIDE}/")', 2),
        ('goto("file:///etc/passwd")', 3),
        ('goto("http://user:pw@127.0.0.1:1/")', 4),
    ]:
        obs, *_, info = env.step(action)
        assert "outside the allowed origins" in obs and info["blocked_requests"] == blocked
        assert env.snapshot.url == start
    link = env.snapshot.find("link", "Elsewhere")[0].element_id
    obs, *_, info = env.step(f'click("{link}")')  # a link: the navigation request is blocked
    assert info["blocked_requests"] == 5 and not env.snapshot.url.startswith(OUTSIDE)
    assert "ERR_BLOCKED_BY_CLIENT" in obs  # Chromium's error page says why
    obs, *_, info = env.step("go_back()")
    assert env.snapshot.url == start and not info["invalid_action"]
    link = env.snapshot.find("link", "Passwords")[0].element_id
    obs, *_, info = env.step(f'click("{link}")')  # a file: link leads nowhere
    assert env.snapshot.url == start and "root:" not in env.browser.read_text().text
    assert "file:///etc/passwd" in env.browser.blocked_urls
    before = info["blocked_requests"]
    box = env.snapshot.find("textbox", "Query")[0].element_id
    env.step(f'fill("{box}", "secret")')
    env.step('press("Enter")')  # a form sent off the origins
    # The submission's request leaves the page after the key press returns; each
    # evaluate lets the page run and the blocking handler see it. The bound only
    # guards against a hang: no timing is asserted.
    for _ in range(200):
        if env.blocked_requests > before:
            break
        env.browser.evaluate("() => new Promise((done) => setTimeout(done, 10))")
    assert env.blocked_requests == before + 1
    assert env.browser.blocked_urls[-1] == f"{OUTSIDE}/collect?q=secret"


def test_script_requests_to_other_origins_are_blocked_and_counted(env, other_site) -> None:
    env.reset()
    assert env.browser.blocked_requests == 1  # the image
    fetch = f"() => fetch('{OUTSIDE}/x').then(() => 'reached', () => 'blocked')"
    assert _fetch(env, fetch) == "blocked"
    xhr = f"""() => new Promise((resolve) => {{
        const request = new XMLHttpRequest();
        request.open('GET', '{OUTSIDE}/y');
        request.onload = () => resolve('reached');
        request.onerror = () => resolve('blocked');
        request.send();
    }})"""
    assert _fetch(env, xhr) == "blocked"
    image = f"""() => new Promise((resolve) => {{
        const img = new Image();
        img.onload = () => resolve('reached');
        img.onerror = () => resolve('blocked');
        img.src = '{OUTSIDE}/z.png';
    }})"""
    assert _fetch(env, image) == "blocked"
    keepalive = f"""() => fetch('{OUTSIDE}/keep', {{method: 'POST', body: 'x', keepalive: true}})
        .then(() => 'reached', () => 'blocked')"""
    assert _fetch(env, keepalive) == "blocked"
    socket = f"""() => new Promise((resolve) => {{
        const ws = new WebSocket('{OUTSIDE.replace("http", "ws")}/socket');
        ws.onopen = () => resolve('open');
        ws.onclose = () => resolve('closed');
    }})"""
    assert _fetch(env, socket) == "closed"
    # requests the page fires and forgets: a beacon, a prefetch and a frame
    _fetch(env, f"() => navigator.sendBeacon('{OUTSIDE}/beacon', 'data')")
    _fetch(
        env,
        f"""() => {{
        const link = document.createElement('link');
        link.rel = 'prefetch';
        link.href = '{OUTSIDE}/prefetch';
        document.head.appendChild(link);
        const frame = document.createElement('iframe');
        frame.src = '{OUTSIDE}/frame.html';
        document.body.appendChild(frame);
    }}""",
    )
    paths = ("/x", "/y", "/z.png", "/keep", "/socket", "/beacon", "/prefetch", "/frame.html")
    for _ in range(200):  # they are routed after the script returns; wait until all are seen
        if env.browser.blocked_requests >= 1 + len(paths):
            break
        env.browser.evaluate("() => new Promise((resolve) => setTimeout(resolve, 20))")
    assert env.browser.blocked_requests == 1 + len(paths)
    blocked = " ".join(env.browser.blocked_urls)
    for path in paths:
        assert path in blocked, path
    # an allowed second origin is reached (it is in the task's allowed_origins)
    reached = f"() => fetch('{other_site}/data.txt', {{mode: 'no-cors'}}).then(() => 'reached')"
    assert _fetch(env, reached) == "reached"
    assert env.browser.blocked_requests == 1 + len(paths)
    obs, *_, info = env.step(f'goto("{other_site}/data.txt")')
    assert "from the other origin" in obs and not info["invalid_action"]
    # the page's own jump to a file: URL does not leave the origin
    env.browser.evaluate("() => { location.href = 'file:///etc/passwd'; }")
    assert env.browser.snapshot().url.startswith("http://127.0.0.1:")


def test_an_origin_not_listed_is_blocked(tmp_path, other_site) -> None:
    env = BrowserTaskEnv(_task(tmp_path, []))
    try:
        env.reset()
        assert env.browser.origins == [env.server.origin]
        fetch = f"""() => fetch('{other_site}/data.txt', {{mode: 'no-cors'}})
            .then(() => 'reached', () => 'blocked')"""
        assert _fetch(env, fetch) == "blocked"
        assert f"{other_site}/data.txt" in env.browser.blocked_urls
        # a new episode starts the count afresh
        _, info = env.reset()
        assert info["blocked_requests"] == 1
    finally:
        env.close()
