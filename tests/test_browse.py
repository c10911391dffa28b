"""`archer browse`: a task file run headlessly leaves the episode log, a screenshot per step
and a Playwright trace; task files are environments for rollout, eval and train too."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archer_agents.cli.app import full_app
from archer_agents.data.episode_log import read_episodes
from archer_agents.environments.browser_task import SITE_DIR, example_tasks

pytest.importorskip("playwright")
pytestmark = pytest.mark.browser

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def run(*args: str):
    return runner.invoke(full_app(), list(args), catch_exceptions=False)


def _trace_events(path: Path) -> list[dict]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert "trace.trace" in names and "trace.network" in names
        lines = archive.read("trace.trace").decode().splitlines()
        network = archive.read("trace.network").decode()
    assert "/form.html" in network  # the page loads are recorded
    return [json.loads(line) for line in lines if line.strip()]


def test_browse_with_the_scripted_solution_writes_log_screenshots_and_trace(tmp_path) -> None:
    out = tmp_path / "run"
    result = run("browse", "contact-form", "--out", str(out), "--episodes", "2")
    assert result.exit_code == 0, result.output
    assert "episode 0: success in 4 steps, 0 blocked requests" in result.output
    assert "episode 1: success in 4 steps" in result.output
    episodes, _ = read_episodes([out / "episodes.jsonl"])
    assert len(episodes) == 2 and all(e.success for e in episodes)
    episode = episodes[0]
    assert [t.action for t in episode.transitions][-1] == "click('12')"
    assert episode.env_id.endswith("contact-form.yaml")
    folder = out / "episode-0000"
    shots = sorted(folder.glob("step-*.png"))
    assert [p.name for p in shots] == [f"step-{n:03d}.png" for n in range(5)]
    assert all(p.read_bytes().startswith(PNG) for p in shots)
    assert shots[0].read_bytes() != shots[-1].read_bytes()  # the page changed
    events = _trace_events(folder / "trace.zip")
    assert events[0]["type"] == "context-options"
    calls = [e for e in events if e.get("type") == "before"]
    methods = [e.get("method") for e in calls]
    assert methods.count("fill") == 2 and "click" in methods and "goto" in methods
    # the second episode (in the same page, reused) has a trace of its own
    second = [e.get("method") for e in _trace_events(out / "episode-0001" / "trace.zip")]
    assert second.count("fill") == 2 and second.count("selectOption") == 1
    # a second run appends: a new episode folder, the log grows
    result = run("browse", "contact-form", "--out", str(out), "--policy", "random")
    assert result.exit_code == 0, result.output
    assert (out / "episode-0002" / "trace.zip").is_file()
    assert len(read_episodes([out / "episodes.jsonl"])[0]) == 3


def test_playwright_show_trace_is_available() -> None:
    playwright = shutil.which("playwright", path=str(Path(sys.executable).parent))
    if playwright is None:
        pytest.skip("the playwright command is not installed beside this Python")
    help_text = subprocess.run(
        [playwright, "show-trace", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "show trace viewer" in help_text


def test_browse_with_the_embedded_model_runs_to_the_step_limit(tiny_model_dir, tmp_path) -> None:
    out = tmp_path / "model-run"
    result = run(
        "browse", str(example_tasks()["find-contact"]), "--policy", str(tiny_model_dir),
        "--out", str(out), "--max-new-tokens", "8", "--env-arg", "max_steps=2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    episodes, _ = read_episodes([out / "episodes.jsonl"])
    (episode,) = episodes
    assert len(episode.transitions) == 2 and episode.transitions[-1].truncated
    assert all(t.action_token_ids for t in episode.transitions)  # sampled by the model
    assert len(list((out / "episode-0000").glob("step-*.png"))) == 3
    assert zipfile.is_zipfile(out / "episode-0000" / "trace.zip")


@pytest.mark.parametrize(
    "args, message",
    [
        (("browse", "no-such-task", "--out", "x"), "no task file 'no-such-task'"),
        (("browse", "contact-form", "--out", "x", "--episodes", "0"), "--episodes must be"),
        (
            ("browse", "contact-form", "--out", "x", "--policy", "http://127.0.0.1:9"),
            "needs --model",
        ),
    ],
)
def test_browse_user_errors_are_one_line(tmp_path, monkeypatch, args, message) -> None:
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "x").exists()


def test_a_task_without_solution_has_no_scripted_policy(tmp_path) -> None:
    task = tmp_path / "task.yaml"
    site = SITE_DIR
    task.write_text(
        f"instruction: x\nsite: {site}\nstart_url: /index.html\nsuccess: {{url_matches: form}}\n"
    )
    result = run("browse", str(task), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "has no solution" in result.output


def test_rollout_eval_and_train_take_a_task_file(tiny_model_dir, tmp_path) -> None:
    task = str(example_tasks()["find-contact"])
    log = tmp_path / "expert.jsonl"
    result = run("rollout", task, "--policy", "expert", "--episodes", "3", "--num-envs", "2",
                 "--out", str(log))  # fmt: skip
    assert result.exit_code == 0, result.output
    episodes, _ = read_episodes([log])
    assert len(episodes) == 3 and all(e.success for e in episodes)
    result = run("eval", task, "--policy", "expert", "--policy", "random", "--episodes", "2",
                 "--num-envs", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "expert" in result.output and "1.000 [1.000, 1.000]" in result.output
    out = tmp_path / "run"
    result = run("train", "--env", task, "--preset", "cpu-tiny", "--model", str(tiny_model_dir),
                 "--out", str(out), "--set", "max_new_tokens=4", "--threads", "1",
                 "--env-arg", "max_steps=2")  # fmt: skip
    assert result.exit_code == 0, result.output
    played, _ = read_episodes([out / "episodes.jsonl"])
    assert played and {e.env_id for e in played} == {task}
    assert (out / "policy").is_dir()
