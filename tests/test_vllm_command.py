"""How vLLM is started (no vLLM needed): its command line, environment and missing-install errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archer_agents.formats.chat_prompt import CHAT_TEMPLATE
from archer_agents.serving.vllm_server import (
    SETUP_COMMAND,
    VLLMNotInstalled,
    VLLMSettings,
    find_vllm_python,
    needs_chat_template,
    vllm_command,
    vllm_environment,
)


def test_the_command_enables_lora_processed_logprobs_and_keeps_the_key_off_it() -> None:
    settings = VLLMSettings(
        served_model_name="tiny",
        port=8100,
        api_key="s3cret",
        dtype="float32",
        max_model_len=4096,
        lora_modules={"archer-v0001": "/adapters/v0001"},
        extra_args=("--seed", "0"),
    )
    command = vllm_command("/models/tiny", settings, "/venv/bin/python", CHAT_TEMPLATE)
    assert command[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]

    def option(name: str) -> str:
        return command[command.index(name) + 1]

    assert option("--model") == "/models/tiny"
    assert option("--host") == "127.0.0.1" and option("--port") == "8100"
    assert option("--logprobs-mode") == "processed_logprobs"
    assert option("--dtype") == "float32" and option("--max-model-len") == "4096"
    assert option("--served-model-name") == "tiny"
    assert option("--lora-modules") == "archer-v0001=/adapters/v0001"
    assert option("--chat-template") == CHAT_TEMPLATE
    assert "--enable-lora" in command and command[-2:] == ["--seed", "0"]
    assert "s3cret" not in " ".join(command)

    env = vllm_environment(settings, base={"PATH": "/bin"})
    assert env["VLLM_API_KEY"] == "s3cret"
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert (
        vllm_environment(settings, base={"VLLM_CPU_KVCACHE_SPACE": "8"})["VLLM_CPU_KVCACHE_SPACE"]
        == "8"
    )


def test_a_missing_vllm_environment_names_the_command_that_builds_it(tmp_path: Path) -> None:
    with pytest.raises(VLLMNotInstalled, match="setup_vllm_env.sh"):
        find_vllm_python(tmp_path / "nothing" / "python")
    # A Python without vLLM (this one) is refused the same way.
    with pytest.raises(VLLMNotInstalled, match="cannot import vllm.*setup_vllm_env.sh"):
        find_vllm_python(sys.executable)
    assert "setup_vllm_env.sh" in SETUP_COMMAND


def test_a_chat_template_is_passed_only_to_models_without_one(tmp_path, tiny_model_dir) -> None:
    assert needs_chat_template(tiny_model_dir)
    with_template = tmp_path / "chatty"
    with_template.mkdir()
    (with_template / "tokenizer_config.json").write_text('{"chat_template": "{{ x }}"}')
    assert not needs_chat_template(with_template)
    assert not needs_chat_template("org/hub-model")


def test_serve_reports_a_missing_vllm_and_a_bad_backend_in_one_line(tiny_model_dir) -> None:
    import archer_agents.cli.serve  # noqa: F401  (registers `serve` on the app)
    from archer_agents.cli.app import app

    runner = CliRunner()
    missing = runner.invoke(
        app,
        ["serve", str(tiny_model_dir), "--backend", "vllm", "--vllm-python", "/no/python"],
        env={"COLUMNS": "300"},
    )
    assert missing.exit_code == 2 and "setup_vllm_env.sh" in missing.output
    bogus = runner.invoke(app, ["serve", str(tiny_model_dir), "--backend", "tgi"])
    assert bogus.exit_code == 2 and "local or vllm" in bogus.output
    bad_lora = runner.invoke(app, ["serve", str(tiny_model_dir), "--lora", "nameonly"])
    assert bad_lora.exit_code == 2 and "NAME=PATH" in bad_lora.output


def test_the_tool_parser_follows_the_models_template(
    tiny_model_dir, qwen2_chat_dir, llama3_chat_dir
) -> None:
    def parser(model, **changes) -> str | None:
        command = vllm_command(model, VLLMSettings(**changes), "/venv/bin/python")
        if "--tool-call-parser" not in command:
            assert "--enable-auto-tool-choice" not in command
            return None
        assert "--enable-auto-tool-choice" in command
        return command[command.index("--tool-call-parser") + 1]

    assert parser(qwen2_chat_dir) == "hermes"  # <tool_call> tags
    assert parser(llama3_chat_dir) == "llama3_json"
    assert parser(tiny_model_dir) is None  # the embedded model: no template, no tool calls
    assert parser("org/hub-model") is None  # not a folder here: name it yourself
    assert parser("org/hub-model", tool_call_parser="mistral") == "mistral"
    assert parser(qwen2_chat_dir, tool_call_parser=None) is None
