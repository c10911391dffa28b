"""Browser task files: the file format's errors, the environment in real Chromium on the
shipped test site, the LangChain browser tools, and the command-line resolver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archer_agents.environments.browser_task import SITE_DIR, example_tasks
from archer_agents.environments.browser_task.taskfile import TaskFileError, read_task
from archer_agents.tools.browser.static import StaticServer


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _one_page_task(tmp_path: Path, html: str) -> Path:
    """A task file over a one-page site of ``html`` that never succeeds (20 steps)."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text(html)
    return _write(
        tmp_path,
        "page.yaml",
        "instruction: x\nsite: site\nstart_url: /index.html\n"
        "success: {text_present: never}\nmax_steps: 20\n",
    )


GOOD = {
    "instruction": "Open the form.",
    "start_url": "http://127.0.0.1:8000/index.html",
    "success": {"url_matches": "form"},
}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"success": {}}, "give exactly one of url_matches, text_present, selector, javascript"),
        (
            {"success": {"url_matches": "a", "text_present": "b"}},
            "(got url_matches, text_present)",
        ),
        ({"success": {"url_matches": "("}}, "url_matches is not a regular expression"),
        ({"success": {"text_present": "x", "state": "checked"}}, "state goes with selector"),
        ({"success": {"selector": "#a", "state": "shiny"}}, "success.state"),
        ({"start_url": "file:///etc/passwd"}, "start_url must be an http(s) URL"),
        ({"site": ".", "start_url": "http://127.0.0.1:1/a.html"}, "start_url is a path on it"),
        ({"allowed_origins": ["http://127.0.0.1:1/path"]}, "an origin looks like"),
        ({"max_steps": 0}, "max_steps"),
        ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
        ({"solution": [{"action": "click"}]}, "needs the element's role and/or name"),
        ({"site": "no-such-folder", "start_url": "/a.html"}, "is not a folder"),
    ],
)
def test_bad_task_files_are_one_line_errors(tmp_path: Path, change: dict, message: str) -> None:
    path = _write(tmp_path, "task.json", json.dumps({**GOOD, **change}))
    with pytest.raises(TaskFileError) as caught:
        read_task(path)
    text = str(caught.value)
    assert message in text and "\n" not in text and str(path) in text


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("task.yaml", "instruction: [unclosed", "is not valid yaml"),
        ("task.json", "{", "is not valid json"),
        ("task.yaml", "- a list", "must hold a mapping"),
        ("task.txt", "{}", "a task file ends in .yaml, .yml, .json"),
    ],
)
def test_unreadable_task_files(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(TaskFileError, match=message):
        read_task(_write(tmp_path, name, text))
    with pytest.raises(TaskFileError, match="cannot read task file"):
        read_task(tmp_path / "missing.yaml")


def test_examples_cover_every_success_check() -> None:
    examples = example_tasks()
    assert {"contact-form", "signup-flow", "find-contact", "copy-checkbox"} <= set(examples)
    kinds = set()
    for path in examples.values():
        task, base = read_task(path)
        assert task.solution and task.resolve_site(base).is_dir()
        kinds.add(task.success.kind)
    assert kinds == {"url_matches", "text_present", "selector", "javascript"}


def test_a_task_file_url_and_origins() -> None:
    task, _ = read_task(example_tasks()["contact-form"])
    assert task.url("http://127.0.0.1:5") == "http://127.0.0.1:5/form.html"
    assert task.origins("http://127.0.0.1:5") == ["http://127.0.0.1:5"]
    task = task.model_copy(update={"site": None, "start_url": "http://127.0.0.1:7/x"})
    assert task.origins() == ["http://127.0.0.1:7"]


# -- in Chromium ---------------------------------------------------------------------------------
browser = pytest.mark.browser


def _play(env, kind: str, seed: int = 0) -> tuple[float, dict, int]:
    agent = env.make_scripted_agent(kind, seed)
    obs, info = env.reset(seed=seed)
    agent.reset(obs, info)
    steps = 0
    while True:
        obs, reward, terminated, truncated, info = env.step(agent.act(obs))
        steps += 1
        if terminated or truncated:
            return reward, info, steps


@pytest.fixture(scope="module")
def make_env():
    pytest.importorskip("playwright")
    from archer_agents.environments.browser_task.env import BrowserTaskEnv

    made = []

    def make(task, **kwargs):
        env = BrowserTaskEnv(task, **kwargs)
        made.append(env)
        return env

    yield make
    for env in made:
        env.close()


@browser
@pytest.mark.parametrize("name", ["contact-form", "signup-flow", "find-contact", "copy-checkbox"])
def test_the_solution_of_each_example_succeeds(make_env, name: str) -> None:
    env = make_env(example_tasks()[name])
    reward, info, steps = _play(env, "expert")
    assert reward == 1.0 and info["success"] and steps == len(env.task.solution)
    assert info["blocked_requests"] == 0
    # the same page again from a fresh reset: the same observation (deterministic ids)
    first, _ = env.reset()
    again, _ = env.reset()
    assert first == again


@browser
def test_random_play_fails_the_form_and_is_truncated(make_env) -> None:
    env = make_env(example_tasks()["contact-form"])
    reward, info, steps = _play(env, "random", seed=3)
    assert reward == 0.0 and not info["success"] and steps == env.max_steps


@browser
def test_observation_tools_and_mistakes(make_env) -> None:
    from archer_agents.tools.browser.tools import TOOL_NAMES

    env = make_env(example_tasks()["contact-form"], max_steps=20)
    assert [spec["name"] for spec in env.tool_specs] == list(TOOL_NAMES)
    obs, info = env.reset()
    lines = obs.splitlines()
    assert lines[0] == f"Instruction: {env.task.instruction}"
    assert lines[1].startswith("URL: http://127.0.0.1:") and lines[1].endswith("/form.html")
    assert '[3] textbox "Name" value=""' in obs
    assert env.scripted_kinds == ("expert", "random")
    for action, message in [
        ('click("999")', "no element [999]"),
        ("fly()", "unknown action 'fly'"),
        ("scroll('up', 'down')", "dy"),
        ('goto("http://127.0.0.2:9/")', "outside the allowed origins"),
        ("not a call", "Error"),
    ]:
        obs, reward, terminated, truncated, info = env.step(action)
        assert info["invalid_action"] and message in obs.splitlines()[-1], (action, obs)
        assert reward == 0.0 and not terminated and not info["tool_error"]
    obs, *_, info = env.step('fill("3", "Grace")')
    assert 'textbox "Name" value="Grace"' in obs and not info["invalid_action"]
    obs, *_, info = env.step("read_text()")
    assert "Text: Contact us Name Email" in obs
    # the page's own check: submitting without a topic shows its error, and no success
    env.step('fill("5", "grace@example.org")')
    obs, reward, terminated, *_ = env.step('click("12")')
    assert "Please choose a topic." in obs and reward == 0.0 and not terminated


@browser
def test_a_broken_success_check_is_reported_not_a_browser_failure(make_env, tmp_path) -> None:
    site = SITE_DIR
    path = _write(
        tmp_path,
        "broken.yaml",
        f"instruction: x\nsite: {site}\nstart_url: /index.html\n"
        "success: {javascript: '() => undefinedThing.field'}\n",
    )
    env = make_env(path)
    env.reset()
    obs, reward, terminated, truncated, info = env.step("scroll(0, 10)")
    assert "undefinedThing" in info["check_error"] and reward == 0.0 and not terminated
    assert env.browser.restarts == 0 and "failure" not in info


@browser
def test_langchain_tools_drive_the_page(make_env) -> None:
    from langchain_core.tools import BaseTool

    env = make_env(example_tasks()["find-contact"])
    env.reset()
    tools = env.toolkit.by_name()
    assert all(isinstance(tool, BaseTool) for tool in tools.values())
    link = env.snapshot.find("link", "Contact form")[0].element_id
    text = tools["click"].invoke({"element_id": link})
    assert text.startswith("URL: ") and "/form.html" in text.splitlines()[0]
    assert env.toolkit.last.url.endswith("/form.html")
    text = tools["go_back"].invoke({})
    assert env.toolkit.last.url.endswith("/index.html") and "Contact form" in text


@browser
def test_the_command_line_resolver_takes_a_task_file(tmp_path) -> None:
    from archer_agents.cli.common import UserError, env_factory
    from archer_agents.environments.browser_task.env import BrowserTaskEnv

    env = env_factory(str(example_tasks()["find-contact"]), ["max_steps=2"])()
    try:
        assert isinstance(env.unwrapped, BrowserTaskEnv) and env.unwrapped.max_steps == 2
    finally:
        env.close()
    bad = _write(tmp_path, "bad.yml", "instruction: x\n")
    with pytest.raises(UserError, match="start_url: Field required"):
        env_factory(str(bad))
    with pytest.raises(UserError, match="no_such_option"):
        env_factory(str(example_tasks()["find-contact"]), ["no_such_option=1"])


def test_archer_envs_lists_the_task_file_environment(monkeypatch) -> None:
    from typer.testing import CliRunner

    from archer_agents.cli.app import full_app
    from archer_agents.cli.common import console

    monkeypatch.setattr(console, "_width", 200)  # one table row a line
    result = CliRunner().invoke(full_app(), ["envs"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "PATH.yaml | PATH.json" in line)
    assert "archer_agents.environments.browser_task.env:BrowserTaskEnv" in row
    text = " ".join(result.output.split())
    assert "archer/BrowserTask-v0 with --env-arg task=PATH" in text
    assert "miniwob.click-button-v0" in text  # alongside the registered ones
    assert "archer/miniwob.suite-v0" in text


@browser
def test_the_registered_id_with_a_task_argument_is_the_task_file(tmp_path) -> None:
    from archer_agents.cli.common import env_factory
    from archer_agents.environments.browser_task.env import BrowserTaskEnv
    from archer_agents.environments.registration import BROWSER_TASK_ID

    path = example_tasks()["find-contact"]
    env = env_factory(BROWSER_TASK_ID, [f"task={path}"])()  # what `archer envs` says
    try:
        assert isinstance(env.unwrapped, BrowserTaskEnv)
        assert env.unwrapped.task == read_task(path)[0]
    finally:
        env.close()


@browser
def test_the_next_episode_sees_nothing_of_the_last(make_env, tmp_path) -> None:
    env = make_env(example_tasks()["find-contact"])
    env.reset()
    first_page = env.browser.run_in_page(id)
    env.browser.evaluate(
        """() => { localStorage.setItem('k', 'v'); sessionStorage.setItem('k', 'v');
                   document.cookie = 'k=v'; window.name = 'kept'; }"""
    )
    link = env.snapshot.find("link", "Contact form")[0].element_id
    env.step(f'click("{link}")')
    obs, _ = env.reset()
    assert env.browser.run_in_page(id) == first_page  # the page was reused, cleared
    left = env.browser.evaluate(
        "() => [localStorage.getItem('k'), sessionStorage.getItem('k'), document.cookie,"
        " window.name]"
    )
    assert left == [None, None, "", ""]
    obs, *_, info = env.step("go_back()")  # the last episode's pages are not in the history
    assert "no previous page" in obs.splitlines()[-1] and info["invalid_action"]
    # an episode that loaded pages of two origins is followed by a fresh context
    with StaticServer(tmp_path) as other:
        env.browser._allowed.add(("http", "127.0.0.1", other.port))
        (tmp_path / "x.html").write_text("<p>other</p>")
        env.step(f'goto("{other.origin}/x.html")')
        env.reset()
        assert env.browser.run_in_page(id) != first_page


CLICK_PAGE = """<!doctype html><html><body>
<button id="under" onclick="document.title = 'under clicked'">Under</button>
<div id="veil" style="position: fixed; left: 0; top: 0; width: 600px; height: 120px;
     background: white">Veil <button onclick="veil.style.display = 'none'">Close</button></div>
<div style="margin-top: 200px">
<button disabled onclick="document.title = 'off clicked'">Off</button>
<label><input type="checkbox" id="box"> Tick me</label>
<div style="height: 3000px"></div>
<button onclick="document.title = 'far clicked'">Far</button>
</div></body></html>"""


@browser
def test_a_click_lands_where_a_user_s_would_or_says_why_not(make_env, tmp_path) -> None:
    task = _one_page_task(tmp_path, CLICK_PAGE)
    env = make_env(task)
    env.reset()

    def click(role: str, name: str) -> tuple[str, dict]:
        element = env.snapshot.find(role, name)[0].element_id
        obs, *_, info = env.step(f'click("{element}")')
        return obs.splitlines()[-1], info

    title = lambda: env.browser.evaluate("() => document.title")  # noqa: E731
    last, info = click("button", "Under")
    covering = {e.element_id for e in env.snapshot.elements if e.name in ("Veil", "Close")}
    assert info["invalid_action"] and title() == ""
    assert any(f"is covered by [{i}]" in last for i in covering), last  # ids the model can see
    last, info = click("button", "Off")
    assert "is disabled" in last and title() == ""
    click("label", "Tick me")  # a label's click goes to its checkbox
    assert env.snapshot.find("checkbox")[0].checked
    last, info = click("button", "Far")  # far below the fold: scrolled to, then clicked
    assert not info["invalid_action"] and title() == "far clicked"
    click("button", "Close")
    last, info = click("button", "Under")
    assert not info["invalid_action"] and title() == "under clicked"


FIELDS_PAGE = """<!doctype html><html><body>
<label><input type="checkbox"> Tick me</label>
<input aria-label="Name"> <input aria-label="Fixed" readonly value="x">
<select aria-label="Topic"><option>Billing</option><option value="s">Support</option></select>
<button onclick="document.title = 'sent ' + document.querySelector('select').value">Send</button>
<button disabled>Off</button>
</body></html>"""


@browser
def test_actions_are_not_bounded_by_the_wait_for_an_element(make_env, tmp_path) -> None:
    """A script in the page checks a click's, fill's or select's element at once; the
    forced action after it has the action's deadline. Bounded by ``element_timeout_s``
    instead, actions on a busy machine were reported as the model's mistakes ('Timeout
    1000ms exceeded'), which made the click-checkboxes (and login-user) solvers fail under
    load; a 1 ms element wait shows it on any machine."""
    task = _one_page_task(tmp_path, FIELDS_PAGE)
    env = make_env(task, element_timeout_s=0.001)
    env.reset()

    def act(call: str, role: str, name: str, *args: str) -> tuple[str, dict]:
        element = env.snapshot.find(role, name)[0].element_id
        quoted = "".join(f", {json.dumps(a)}" for a in args)
        obs, *_, info = env.step(f'{call}("{element}"{quoted})')
        return obs.splitlines()[-1], info

    for call, role, name, *args in [
        ("click", "label", "Tick me"),
        ("fill", "textbox", "Name", "Ada"),
        ("select_option", "combobox", "Topic", "Support"),
        ("click", "button", "Send"),
    ]:
        last, info = act(call, role, name, *args)
        assert not info["invalid_action"], (call, last)
    assert env.snapshot.find("checkbox")[0].checked
    assert env.snapshot.find("textbox", "Name")[0].value == "Ada"
    assert env.browser.evaluate("() => document.title") == "sent s"
    for call, role, name, *args, message in [  # mistakes are still told, at once
        ("click", "button", "Off", "is disabled"),
        ("fill", "textbox", "Fixed", "y", "is read-only"),
        ("select_option", "combobox", "Topic", "Sales", 'has no option "Sales"'),
        ("fill", "button", "Send", "y", "fill failed"),
    ]:
        last, info = act(call, role, name, *args)
        assert info["invalid_action"] and message in last, (call, last)
