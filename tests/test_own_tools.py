"""Your own tools as an environment, end to end: the public API, module:id, presets, loaders.

The domain is a tiny library-loans desk the project has never seen: a member
borrows and returns books. The environment is registered by a module written
to a temporary folder and trained through the ``archer`` command line.
"""

from __future__ import annotations

import json
import logging
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import pytest
from typer.testing import CliRunner

from archer_agents.cli.app import full_app

runner = CliRunner()

LIBRARY_MODULE = textwrap.dedent(
    '''
    """A library-loans desk: borrow and return books (a test's own environment)."""

    from langchain_core.tools import tool

    from archer_agents.environments import register_tool_env

    BOOKS = ["dune", "emma", "ulysses"]


    def new_state(task):
        return {"loans": [], "shelf": list(BOOKS)}


    def make_tools(state):
        @tool
        def borrow(title: str) -> str:
            """Borrow a book from the shelf by its title."""
            if title not in state["shelf"]:
                return f"Error: {title!r} is not on the shelf"
            state["shelf"].remove(title)
            state["loans"].append(title)
            return f"You borrowed {title}."

        @tool
        def done() -> str:
            """Finish the visit."""
            return "Goodbye."

        return [borrow, done]


    def reward(state, task, calls):
        return state["loans"] == [task.data["title"]]


    def expert(task, state):
        yield f'borrow(title="{task.data["title"]}")'
        yield "done()"


    TASKS = [
        {"task_id": t, "instruction": f"Borrow {t}, then finish.", "data": {"title": t}}
        for t in BOOKS
    ]

    register_tool_env(
        "library/Loans-v0",
        make_tools=make_tools,
        new_state=new_state,
        tasks={"train": TASKS[:2], "test": TASKS[2:]},
        reward=reward,
        expert=expert,
        final_tools=["done"],
        max_turns=4,
    )
    '''
)

ENV = "library_desk:library/Loans-v0"


@pytest.fixture
def library_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / "library_desk.py").write_text(LIBRARY_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "library_desk", raising=False)
    yield ENV
    gym.registry.pop("library/Loans-v0", None)


def run(*args: str):
    return runner.invoke(full_app(), list(args), catch_exceptions=False)


def test_the_public_api_builds_a_fresh_state_each_episode_and_scores_it(library_module) -> None:
    from archer_agents.training.rollout import make_env_factory

    env = make_env_factory(library_module)()
    observation, info = env.reset(seed=0, options={"split": "test"})
    assert info["task_id"] == "ulysses" and "Borrow ulysses" in observation
    assert "borrow" in observation  # the tools are shown with the task
    _, reward, terminated, _, info = env.step(
        '{"name": "borrow", "arguments": {"title": "ulysses"}}'
    )
    assert not terminated and not info["tool_error"]
    _, reward, terminated, _, info = env.step("done()")
    assert terminated and info["success"] and reward == 1.0
    env.reset(seed=1, options={"split": "test"})  # a fresh shelf: the book is back
    _, _, _, _, info = env.step('borrow("ulysses")')
    assert not info["tool_error"]
    _, _, _, _, info = env.step("lend the book please")  # the model's mistake: an observation
    assert info["invalid_action"] and "error" in info


def test_developer_mistakes_raise_at_once() -> None:
    from langchain_core.tools import tool

    from archer_agents.environments import make_tool_env, register_tool_env

    @tool
    def ping() -> str:
        """Ping."""
        return "pong"

    task = {"task_id": "t", "instruction": "Ping."}
    with pytest.raises(ValueError, match="final_tools"):
        make_tool_env(make_tools=lambda s: [ping], new_state=dict, tasks=[task],
                      reward=lambda s, t, c: True, final_tools=["submit"])  # fmt: skip
    with pytest.raises(ValueError, match="namespace"):
        register_tool_env("archer/Mine-v0", make_tools=lambda s: [ping], new_state=dict,
                          tasks=[task], reward=lambda s, t, c: True)  # fmt: skip
    env = make_tool_env(make_tools=lambda s: [ping], new_state=dict, tasks=[task],
                        reward=lambda s, t, c: "yes", max_turns=1)  # fmt: skip
    env.reset(seed=0)
    with pytest.raises(TypeError, match="reward function returned 'yes'"):
        env.step("ping()")
    with pytest.raises(ValueError, match="no expert"):
        env.make_scripted_agent("expert")


def test_own_tools_roll_out_clone_and_train_through_the_cli(
    library_module: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "expert.jsonl"
    result = run("rollout", library_module, "--policy", "expert", "--episodes", "4",
                 "--num-envs", "2", "--out", str(log))  # fmt: skip
    assert result.exit_code == 0, result.output
    episodes = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(episodes) == 4 and all(e["success"] for e in episodes)
    assert {e["env_id"] for e in episodes} == {library_module}

    out = tmp_path / "run"
    result = run("train", "--env", library_module, "--preset", "cpu-tiny",
                 "--model", str(tiny_model_dir), "--out", str(out),
                 "--set", "max_new_tokens=4", "--threads", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 iterations, 8 episodes" in result.output
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["env_id"] == library_module
    assert run_info["trainer"]["iterations"] == 2
    assert (out / "policy").is_dir() and (out / "checkpoints").is_dir()
    played = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert played and {e["env_id"] for e in played} == {library_module}

    # The run directory is a policy to the CLI and to load_agent alike (one loader).
    result = run("eval", library_module, "--policy", str(out), "--episodes", "2")
    assert result.exit_code == 0, result.output
    from archer_agents.langchain.agent import load_policy

    assert load_policy(str(out)).version == "run"


def test_module_form_errors_are_one_clear_line(library_module: str) -> None:
    result = runner.invoke(full_app(), ["rollout", "no_such_module_xyz:a/B-v0", "--episodes", "1"])
    assert result.exit_code == 2
    assert "cannot import module 'no_such_module_xyz'" in result.output
    assert "PYTHONPATH" in " ".join(result.output.split())
    result = runner.invoke(full_app(), ["rollout", "library_desk:library/Nope-v0"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "did not register 'library/Nope-v0'" in text and "TwentyQuestions" in text
    result = runner.invoke(full_app(), ["eval", "archer/Nope-v0", "--policy", "random"])
    assert result.exit_code == 2 and "module:" in result.output.replace("\n", "")


def test_init_model_trains_its_tokenizer_on_a_user_environment_and_text(
    library_module: str, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    notes = tmp_path / "notes.txt"
    notes.write_text("zyxwv quokka appears only here\n" * 200)
    out = tmp_path / "model"
    result = run("init-model", str(out), "--size", "test", "--vocab-size", "1024",
                 "--env", library_module, "--text", str(notes))  # fmt: skip
    assert result.exit_code == 0, result.output
    vocab = AutoTokenizer.from_pretrained(str(out)).get_vocab()
    words = {token.lstrip("Ġ▁") for token in vocab}
    assert "borrow" in words and "quokka" in words
    assert "ulysses" in words or any("ulysses" in w for w in words)


def test_presets_are_listed_and_the_quickstart_uses_cpu_small() -> None:
    from archer_agents.cli.quickstart import ARCHER_PRESET
    from archer_agents.training.presets import PRESETS, presets_markdown

    assert PRESETS["cpu-small"].defaults() == ARCHER_PRESET
    result = run("train", "--list-presets")
    assert result.exit_code == 0
    for name in ("cpu-tiny", "cpu-small", "gpu-small", "paper"):
        assert name in result.output
    table = presets_markdown()
    assert "`algorithm.critic_steps` | `1` | `3` | `20` | `50` |" in table
    docs = Path(__file__).parents[1] / "docs" / "reference" / "presets.md"
    assert table in docs.read_text(), "regenerate docs/reference/presets.md (see its top)"


def test_paper_preset_is_the_public_codes_defaults() -> None:
    from archer_agents.cli.train import load_run_config
    from archer_agents.training.presets import PRESETS

    trainer, algorithm = load_run_config("archer", None, [])
    paper_trainer, paper = load_run_config("archer", None, [], PRESETS["paper"].defaults())
    assert paper == algorithm and paper_trainer == trainer


def test_a_run_that_cannot_move_the_actor_says_so(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="archer_agents.training.presets"):
        result = run("train", "--env", "archer/TwentyQuestionsMini-v0", "--preset", "cpu-tiny",
                     "--model", str(tiny_model_dir), "--out", str(tmp_path / "run"),
                     "--set", "warmup_iterations=5", "--set", "max_new_tokens=4",
                     "--set", "trainer.iterations=1")  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "cannot move the actor: warmup_iterations=5 >= iterations=1" in text
    assert any("cannot move the actor" in r.getMessage() for r in caplog.records)
    result = run("train", "--preset", "nope")
    assert result.exit_code == 2 and "unknown preset 'nope'" in result.output
    result = run("train", "--preset", "cpu-tiny", "--algo", "ppo")
    assert result.exit_code == 2 and "settings for --algo archer" in result.output


def test_offline_training_without_env_plays_nothing(tiny_model_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "expert.jsonl"
    env = "archer/TwentyQuestionsMini-v0"
    assert run("rollout", env, "--episodes", "4", "--out", str(log)).exit_code == 0
    args = ["train", "--offline", "--episodes", str(log), "--model", str(tiny_model_dir),
            "--set", "trainer.iterations=1", "--set", "trainer.tensorboard=false",
            "--set", "critic_batch_size=4", "--set", "actor_batch_size=4",
            "--set", "max_new_tokens=4"]  # fmt: skip
    result = run(*args, "--out", str(tmp_path / "blind"))
    assert result.exit_code == 0, result.output
    records = [
        json.loads(x) for x in (tmp_path / "blind" / "metrics.jsonl").read_text().split("\n") if x
    ]
    assert records and not any(k.startswith("eval/") for r in records for k in r)
    assert "TwentyQuestions" not in (tmp_path / "blind" / "run.json").read_text()

    result = run(
        *args, "--env", env, "--set", "trainer.eval_episodes=2", "--out", str(tmp_path / "seen")
    )
    assert result.exit_code == 0, result.output
    records = [
        json.loads(x) for x in (tmp_path / "seen" / "metrics.jsonl").read_text().split("\n") if x
    ]
    assert any("eval/return_mean" in r for r in records)


KB = {
    "description": "Kitchen things.",
    "properties": [
        {"name": "metal", "question": "Is it made of metal?", "description": "Mostly metal."},
    ],
    "objects": [
        {"name": "spoon", "category": "utensil", "split": "train", "yes": ["metal"], "no": []},
        {"name": "ladle", "category": "utensil", "split": "train", "yes": ["metal"], "no": []},
        {"name": "cup", "category": "tableware", "split": "test", "yes": [], "no": ["metal"]},
    ],
}


def test_twenty_questions_plays_a_users_knowledge_base(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import archer_agents.environments  # noqa: F401

    path = tmp_path / "kitchen.json"
    path.write_text(json.dumps(KB))
    with caplog.at_level(logging.WARNING):
        env = gym.make("archer/TwentyQuestions-v0", kb=str(path))
    assert any("spoon, ladle" in r.getMessage() for r in caplog.records)
    assert list(env.unwrapped.task_ids("train")) == ["spoon", "ladle"]
    env.reset(seed=0, options={"split": "test"})
    _, _, terminated, _, info = env.step("Is it a cup?")
    assert terminated and info["success"]

    log = tmp_path / "kb.jsonl"
    result = run("rollout", "archer/TwentyQuestions-v0", "--env-arg", f"kb={path}",
                 "--episodes", "3", "--out", str(log))  # fmt: skip
    assert result.exit_code == 0, result.output
    tasks = {json.loads(line)["task_id"] for line in log.read_text().splitlines()}
    assert tasks <= {"spoon", "ladle"}
    result = run("eval", "archer/TwentyQuestions-v0", "--policy", "expert", "--episodes", "2",
                 "--env-arg", f"kb={tmp_path / 'missing.json'}")  # fmt: skip
    assert result.exit_code == 2 and "no knowledge base at" in result.output


def test_one_loader_for_model_adapter_and_run_folders(tiny_model_dir: Path, tmp_path: Path) -> None:
    from archer_agents.policies.loading import load_policy, resolve_policy_path

    assert resolve_policy_path(tiny_model_dir) == tiny_model_dir
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="without a saved policy yet"):
        resolve_policy_path(run_dir)
    load_policy(tiny_model_dir).save(run_dir / "policy")
    assert resolve_policy_path(run_dir) == run_dir / "policy"
    assert load_policy(run_dir).version == "run"
    with pytest.raises(FileNotFoundError, match="no policy at"):
        load_policy(str(tmp_path / "nothing"))
