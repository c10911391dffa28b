"""The `archer` command: user errors are one line, the commands do their job."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archer_agents.cli.app import full_app
from archer_agents.data.episode_log import read_episodes

runner = CliRunner()
TQ = "archer/TwentyQuestions-v0"


def run(*args: str, input: str | None = None):
    return runner.invoke(full_app(), list(args), input=input, catch_exceptions=False)


def test_envs_lists_every_registered_id() -> None:
    result = run("envs")
    assert result.exit_code == 0
    names = ("TwentyQuestions", "GuessMyCity", "SupportSim", "MiniShop-v0", "MiniShopBrowser")
    for name in (*names, "miniwob.click-button-v0", "miniwob.login-user-v0"):
        assert name in result.output


def test_rollout_writes_a_log_and_prints_a_summary(tmp_path: Path) -> None:
    log = tmp_path / "expert.jsonl"
    result = run(
        "rollout", TQ, "--policy", "expert", "--episodes", "6", "--out", str(log), "--num-envs", "3"
    )
    assert result.exit_code == 0, result.output
    assert "success" in result.output and "episodes appended" in result.output
    episodes, _ = read_episodes(log)
    assert len(episodes) == 6 and all(e.success for e in episodes)


def test_eval_compares_policies_on_the_test_split() -> None:
    result = run("eval", TQ, "--policy", "expert", "--policy", "random", "--episodes", "8")
    assert result.exit_code == 0, result.output
    assert "expert" in result.output and "random" in result.output and "test split" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (("rollout", "archer/Nope-v0", "--episodes", "1"), "unknown environment 'archer/Nope-v0'"),
        (("rollout", TQ, "--policy", "no/such/dir"), "neither a scripted agent"),
        (("bc", "missing.jsonl", "--model", "m", "--out", "o"), "missing.jsonl does not exist"),
        (("play", TQ, "--task-id", "unicorn-xyz"), "not in the train split"),
        (("quickstart", "--teacher", "oracle"), "--teacher must be"),
        (("quickstart", "--merge-within", "page"), "--merge-within must be one of"),
        (("quickstart", "--processes", "0"), "--processes must be at least 1"),
        (("train", "--offline", "--offline-then-online"), "exclude each other"),
        (("train", "--episodes", "log.jsonl"), "add --offline or --offline-then-online"),
        (("train", "--offline", "--episodes", "nowhere.jsonl"), "not found: nowhere.jsonl"),
        (("train", "--offline", "--algo", "ppo"), "--algo ppo contradicts --offline"),
    ],
)
def test_user_errors_are_one_clear_line(
    args: tuple[str, ...], message: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2


def test_bad_option_value_is_rejected_by_the_parser() -> None:
    result = run("rollout", TQ, "--episodes", "many")
    assert result.exit_code == 2 and "Invalid value for '--episodes'" in result.output


def test_a_person_can_play_twenty_questions() -> None:
    result = run(
        "play",
        TQ,
        "--split",
        "test",
        "--seed",
        "1",
        input="Is it an animal?\nblah blah\nquit\n",
    )
    assert result.exit_code == 0, result.output
    assert "Questions:" in result.output
    assert "Is it an animal? Yes." in result.output or "Is it an animal? No." in result.output
    assert "Invalid question." in result.output


def test_init_model_builds_a_reloadable_model(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "model"
    result = run("init-model", str(out), "--size", "test", "--vocab-size", "400")
    assert result.exit_code == 0, result.output
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == "llama"
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    text = "Questions:\nIs it an animal? Yes.\n"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    again = run("init-model", str(out), "--size", "test")
    assert again.exit_code == 2 and "--overwrite" in again.output
    wrong = run("init-model", str(out), "--merge-within", "sentence", "--overwrite")
    assert wrong.exit_code == 2 and "--merge-within must be one of" in wrong.output
    assert AutoTokenizer.from_pretrained(out).encode(text) == tokenizer.encode(text)  # untouched
    lines = run("init-model", str(out), "--size", "test", "--merge-within", "line", "--overwrite")
    assert lines.exit_code == 0, lines.output
    line_tokenizer = AutoTokenizer.from_pretrained(out)

    def spanning_words(vocab: dict[str, int]) -> list[str]:  # "Ġ" is a space
        return [token for token in vocab if re.search(r"[A-Za-z]Ġ", token)]

    assert spanning_words(line_tokenizer.get_vocab())
    assert not spanning_words(tokenizer.get_vocab())
    assert line_tokenizer.decode(line_tokenizer.encode(text)) == text


@pytest.mark.parametrize(
    "env_id, actions, expected",
    [
        ("archer/MiniShop-v0", ["search[cotton t-shirt]", 'click("zz99")'], ["results", "Error"]),
        (
            "archer/SupportSim-v0",
            [
                'respond(message="Hello! Could you give me your email address?")',
                "find_user_id_by_email()",
            ],
            ["User:", "Error: invalid arguments for find_user_id_by_email"],
        ),
        ("archer/GuessMyCity-v0", ["Is it in Europe?"], ["Is it in Europe?"]),
    ],
)
def test_a_person_can_play_every_text_environment(
    env_id: str, actions: list[str], expected: list[str]
) -> None:
    result = run("play", env_id, "--split", "test", input="\n".join([*actions, "quit"]) + "\n")
    assert result.exit_code == 0, result.output
    for fragment in expected:
        assert fragment in result.output, (fragment, result.output[-2000:])


def test_every_command_is_registered() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in (
        "envs",
        "init-model",
        "play",
        "rollout",
        "eval",
        "bc",
        "train",
        "quickstart",
        "serve",
        "deploy",
        "import-langsmith",
    ):
        assert f" {command} " in result.output, command


def test_bc_passes_packing_warm_up_and_seed_to_the_cloning_it_runs(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch

    from archer_agents.policies.local_policy import LocalPolicy
    from archer_agents.training.algorithms.bc import BCConfig, behaviour_clone

    log = tmp_path / "expert.jsonl"
    result = run("rollout", TQ, "--policy", "expert", "--episodes", "4", "--out", str(log))
    assert result.exit_code == 0, result.output
    out = tmp_path / "cloned"
    result = run(
        "bc", str(log), "--model", str(tiny_model_dir), "--out", str(out), "--steps", "3",
        "--batch-size", "8", "--lr", "1e-2", "--packed", "--warmup-steps", "0", "--seed", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output

    by_hand = LocalPolicy.from_pretrained(tiny_model_dir)
    config = BCConfig(
        steps=3, batch_size=8, learning_rate=1e-2, packed=True, warmup_steps=0, seed=1
    )
    behaviour_clone(by_hand, read_episodes(log)[0], config)
    saved = LocalPolicy.from_pretrained(out).model.state_dict()
    start = LocalPolicy.from_pretrained(tiny_model_dir).model.state_dict()
    for name, value in by_hand.model.state_dict().items():
        assert torch.allclose(saved[name], value, atol=1e-6), name
    assert any(not torch.equal(saved[n], start[n]) for n in start)
