"""vLLM on this CPU serving a real instruct model with a LoRA adapter and its tool parser.

SmolLM2-135M-Instruct (`archer init-model --base smollm2-135m-instruct`: a ChatML
template with Hermes tool calls) gets a LoRA adapter taught, in its own template,
to answer a weather question with a ``<tool_call>`` and to answer the tool's
result in words. vLLM serves the base model with that adapter and
``--tool-call-parser hermes`` (chosen from the template), so:

- a stock ``ChatOpenAI(model=<adapter>).bind_tools([...])`` receives OpenAI
  ``tool_calls``, and ``create_agent`` runs the tool the model called;
- the log-probabilities vLLM returns for the adapter's sampled tokens equal
  transformers' within 1e-3 (float32), prompts sent as chat-template ids.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from langchain_core.tools import tool

from archer_agents.formats.conversation import ChatTemplate
from archer_agents.formats.prompts import tool_spec
from archer_agents.formats.tool_calls import ToolCall
from archer_agents.formats.tool_formats import HERMES
from archer_agents.policies.local_policy import LocalPolicy, LoraSettings
from archer_agents.policies.protocol import SamplingParams
from archer_agents.policies.server_policy import ServerPolicy
from archer_agents.serving.vllm_server import (
    VLLMNotInstalled,
    VLLMServer,
    VLLMSettings,
    find_vllm_python,
)

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-3
ADAPTER = "smol-weather"
QUESTION = "What is the weather in Paris?"
ANSWER = "It is sunny in Paris."


@tool
def get_weather(city: str) -> str:
    """Today's weather in a city."""
    return f"Sunny in {city}."


def conversations(template: ChatTemplate) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, reply ids): the call for the question, the answer for the tool's result."""
    call = HERMES.render([ToolCall("get_weather", {"city": "Paris"})])
    asked = [{"role": "user", "content": QUESTION}]
    answered = [
        *asked,
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
        {"role": "tool", "name": "get_weather", "content": "Sunny in Paris."},
    ]
    return [
        (template.prompt_ids(asked), template.reply_ids(call)),
        (template.prompt_ids(answered), template.reply_ids(ANSWER)),
    ]


@pytest.fixture(scope="module")
def taught_adapter(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on SmolLM2 that calls get_weather, then answers the result."""
    torch.manual_seed(0)
    policy = LocalPolicy.from_pretrained(
        smollm2_dir, lora=LoraSettings(r=16, alpha=32, dropout=0.0), seed=0
    )
    template = ChatTemplate(policy.tokenizer, [tool_spec(get_weather)])
    pairs = conversations(template)
    optimizer = torch.optim.Adam(policy.trainable_parameters(), lr=2e-3)
    for _ in range(60):
        loss = -torch.cat(policy.log_probs([tuple(p) for p, _ in pairs], [r for _, r in pairs]))
        loss = loss.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    greedy = SamplingParams(temperature=0.0, max_new_tokens=48)
    said = policy.generate([tuple(p) for p, _ in pairs], greedy)
    assert [g.token_ids for g in said] == [r for _, r in pairs]  # taught, before serving
    return policy.save(tmp_path_factory.mktemp("adapter") / ADAPTER)


@pytest.fixture(scope="module")
def vllm(smollm2_dir: Path, taught_adapter: Path, tmp_path_factory: pytest.TempPathFactory):
    explicit = os.environ.get("ARCHER_VLLM_PYTHON") or REPO / ".venv-vllm" / "bin" / "python"
    try:
        python = find_vllm_python(explicit)
    except VLLMNotInstalled as exc:
        pytest.fail(f"vLLM's environment is missing: {exc}")
    settings = VLLMSettings(
        served_model_name="smollm2",
        port=0,
        dtype="float32",
        max_model_len=2048,
        lora_modules={ADAPTER: str(taught_adapter)},
    )
    log = tmp_path_factory.mktemp("vllm-tools-log") / "vllm.log"
    server = VLLMServer(smollm2_dir, settings, python=python, log_path=log)
    assert "--tool-call-parser" in server.command() and "hermes" in server.command()
    server.start(timeout=900)
    yield server
    server.close()


def chat_openai(server: VLLMServer):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=f"{server.url}/v1", model=ADAPTER, api_key="unused", temperature=0, max_tokens=64
    )


def test_bind_tools_receives_openai_tool_calls_from_the_adapter(vllm) -> None:
    answer = chat_openai(vllm).bind_tools([get_weather]).invoke(QUESTION)
    assert [(c["name"], c["args"]) for c in answer.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]


def test_create_agent_runs_the_tool_and_gets_the_answer(vllm) -> None:
    from langchain.agents import create_agent

    agent = create_agent(chat_openai(vllm), [get_weather])
    result = agent.invoke({"messages": [("user", QUESTION)]}, {"recursion_limit": 6})
    kinds = [m.type for m in result["messages"]]
    assert kinds[:3] == ["human", "ai", "tool"]
    assert result["messages"][1].tool_calls[0]["name"] == "get_weather"
    assert result["messages"][2].content == "Sunny in Paris."
    assert "sunny" in str(result["messages"][-1].content).lower()


def test_logprobs_of_the_adapters_samples_equal_transformers(
    vllm, smollm2_dir: Path, taught_adapter: Path
) -> None:
    local = LocalPolicy.from_pretrained(taught_adapter)
    template = ChatTemplate(local.tokenizer, [tool_spec(get_weather)])
    prompts = [tuple(p) for p, _ in conversations(template)] * 3
    with ServerPolicy(vllm.url, ADAPTER, smollm2_dir, batch_size=3) as policy:
        generations = policy.generate(prompts, SamplingParams(max_new_tokens=24, temperature=1.0))
    with torch.no_grad():
        expected = local.log_probs(prompts, [g.token_ids for g in generations])
    for prompt, generation, scores in zip(prompts, generations, expected, strict=True):
        assert generation.prompt_token_ids == list(prompt)  # sent as ids, not re-tokenised
        gap = max(abs(a - b) for a, b in zip(generation.logprobs, scores.tolist(), strict=True))
        assert gap < TOLERANCE
