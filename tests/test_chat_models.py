"""Tiny models of real chat families, and the tool-calling templates they carry.

The templates are rendered through ``tokenizer.apply_chat_template`` exactly as
a server renders a request, and compared with the text each family's tool
parser reads (vLLM's ``hermes`` and ``llama3_json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from archer_agents.formats.chat_templates import (
    CHATML_TOOLS,
    LLAMA3_JSON_TOOLS,
    SMOLLM2_CHATML_TOOLS,
    has_tool_support,
)
from archer_agents.policies.chat_models import init_chat_model, train_chat_tokenizer
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import SamplingParams

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ],
    },
    {"role": "tool", "name": "get_weather", "content": "22 C"},
    {
        "role": "assistant",
        "content": "",
        # An OpenAI request sends the arguments as a JSON string: rendered the same way.
        "tool_calls": [
            {
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
            }
        ],
    },
    {"role": "tool", "name": "get_weather", "content": "25 C"},
    {"role": "assistant", "content": "Paris 22 C, Rome 25 C."},
    {"role": "user", "content": "Thanks"},
]


def render(tokenizer, messages, tools=None) -> str:
    return tokenizer.apply_chat_template(
        messages, tools=tools, add_generation_prompt=True, tokenize=False
    )


def test_the_qwen2_model_has_the_families_special_tokens(qwen2_chat_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(qwen2_chat_dir)
    for token in ("<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>", "<|endoftext|>"):
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1, token
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None
    assert AutoModelForCausalLM.from_pretrained(qwen2_chat_dir).config.model_type == "qwen2"
    text = 'Is it a bird? {"name": "x"}\n'
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_the_qwen2_template_renders_tools_calls_and_responses_in_hermes_form(
    qwen2_chat_dir: Path,
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(qwen2_chat_dir)
    text = render(tokenizer, CONVERSATION, tools=[WEATHER_TOOL])
    system = text.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    assert "<tools>\n" + json.dumps(WEATHER_TOOL) + "\n</tools>" in system
    paris = '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
    rome = '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call><|im_end|>\n'
    assert paris in text and rome in text
    assert "<|im_start|>user\n<tool_response>\n22 C\n</tool_response><|im_end|>\n" in text
    assert text.endswith("<|im_start|>user\nThanks<|im_end|>\n<|im_start|>assistant\n")
    # Without tools and a system message: plain ChatML with the family's default system turn.
    plain = render(tokenizer, [{"role": "user", "content": "Hi"}])
    assert plain == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
        "assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_consecutive_tool_results_share_one_user_turn() -> None:
    tokenizer = train_chat_tokenizer("qwen2", vocab_size=300)
    calls = [
        {"function": {"name": "get_weather", "arguments": {"city": city}}} for city in ("A", "B")
    ]
    text = render(
        tokenizer,
        [
            {"role": "user", "content": "Two cities"},
            {"role": "assistant", "content": "Checking.", "tool_calls": calls},
            {"role": "tool", "content": "1 C"},
            {"role": "tool", "content": "2 C"},
        ],
    )
    assert (
        '<|im_start|>assistant\nChecking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "A"}}\n</tool_call>'
        '\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "B"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n1 C\n</tool_response>\n<tool_response>\n2 C\n</tool_response><|im_end|>\n"
    ) in text


def test_the_llama3_model_has_the_families_special_tokens(llama3_chat_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(llama3_chat_dir)
    for token in (
        "<|begin_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
        "<|eom_id|>",
        "<|python_tag|>",
    ):
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1, token
    assert tokenizer.bos_token == "<|begin_of_text|>" and tokenizer.eos_token == "<|eot_id|>"
    assert tokenizer("Hi")["input_ids"][0] == tokenizer.bos_token_id  # as Llama 3's tokenizer
    assert AutoModelForCausalLM.from_pretrained(llama3_chat_dir).config.model_type == "llama"


def test_the_llama3_template_renders_tools_calls_and_ipython_results(
    llama3_chat_dir: Path,
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(llama3_chat_dir)
    text = render(tokenizer, CONVERSATION, tools=[WEATHER_TOOL])
    assert text.startswith(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n"
    )
    assert "Be brief.<|eot_id|>" in text
    first_user = text.split("<|start_header_id|>user<|end_header_id|>\n\n")[1]
    assert json.dumps(WEATHER_TOOL, indent=4) in first_user
    assert first_user.split("<|eot_id|>")[0].endswith("Weather in Paris and Rome?")
    for city in ("Paris", "Rome"):
        call = f'{{"name": "get_weather", "parameters": {{"city": "{city}"}}}}<|eot_id|>'
        assert "<|start_header_id|>assistant<|end_header_id|>\n\n" + call in text
    assert '<|start_header_id|>ipython<|end_header_id|>\n\n{"output": "22 C"}<|eot_id|>' in text
    assert text.endswith("Thanks<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    # The tools may go into the system turn instead (the template's own switch).
    in_system = tokenizer.apply_chat_template(
        CONVERSATION[:2], tools=[WEATHER_TOOL], tokenize=False, tools_in_user_message=False
    )
    assert json.dumps(WEATHER_TOOL, indent=4) in in_system.split("<|eot_id|>")[0]
    plain = render(tokenizer, [{"role": "user", "content": "Hi"}])
    assert "Environment: ipython" not in plain and "Given the following functions" not in plain


@pytest.mark.parametrize("family", ["qwen2", "llama3"])
def test_tiny_chat_models_load_as_local_policies_and_generate(
    family: str, request: pytest.FixtureRequest
) -> None:
    path = request.getfixturevalue(f"{family}_chat_dir")
    policy = LocalPolicy.from_pretrained(path, seed=0)
    tokenizer = policy.tokenizer
    assert policy.eos_id == tokenizer.convert_tokens_to_ids(
        "<|im_end|>" if family == "qwen2" else "<|eot_id|>"
    )
    prompt = render(tokenizer, CONVERSATION[:2], tools=[WEATHER_TOOL])
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    [generation] = policy.generate_ids([ids], SamplingParams(max_new_tokens=8))
    assert generation.prompt_token_ids == ids
    assert 1 <= len(generation.token_ids) <= 8 and len(generation.logprobs) == len(
        generation.token_ids
    )
    [scored] = policy.log_probs(["Weather in Paris?"], [generation.token_ids])
    assert scored.shape == (len(generation.token_ids),)


def test_tiny_chat_models_are_deterministic_and_refuse_unknown_families(tmp_path: Path) -> None:
    first = init_chat_model(tmp_path / "a", "qwen2", seed=1)
    second = init_chat_model(tmp_path / "b", "qwen2", seed=1)
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="unknown chat family 'mistral'"):
        init_chat_model(tmp_path / "c", "mistral")
    with pytest.raises(FileExistsError):
        init_chat_model(first, "qwen2")


def test_templates_say_whether_they_render_tools() -> None:
    for template in (CHATML_TOOLS, SMOLLM2_CHATML_TOOLS, LLAMA3_JSON_TOOLS):
        assert has_tool_support(template)
    assert not has_tool_support(None)
    assert not has_tool_support("{% for m in messages %}{{ m.content }}{% endfor %}")


@pytest.mark.parametrize(
    ("family", "header", "eos"),
    [
        ("qwen2", "<|im_start|>assistant\n", "<|im_end|>"),
        ("llama3", "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
    ],
)
def test_the_family_tool_parser_reads_the_calls_the_template_renders(
    family: str, header: str, eos: str, request: pytest.FixtureRequest
) -> None:
    from archer_agents.formats.tool_calls import ToolCall
    from archer_agents.formats.tool_formats import family_for

    tokenizer = AutoTokenizer.from_pretrained(request.getfixturevalue(f"{family}_chat_dir"))
    text = render(tokenizer, CONVERSATION[:3], tools=[WEATHER_TOOL])
    # The assistant turn after the last user message, as the model would have generated it.
    reply = text.split(header)[-2].split(eos)[0]
    tool_format = family_for(tokenizer)
    expected = ToolCall(name="get_weather", arguments={"city": "Paris"})
    assert tool_format.parse(reply).calls == [expected]
    assert tool_format.render([expected]) == reply
