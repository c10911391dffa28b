"""A model with its own tool-calling template, served locally, answers stock LangChain clients
with OpenAI ``tool_calls``.

The tiny Qwen2 model (Hermes template) is first taught one call by a few
gradient steps on its own template's rendering; then a stock
``ChatOpenAI(...).bind_tools([...])`` and ``create_agent`` talk to
``archer serve``'s local backend, which renders the request with the model's
template and reads the reply in its family's format.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from langchain_core.tools import tool
from serving_helpers import start_local_server
from transformers import AutoModelForCausalLM, AutoTokenizer

from archer_agents.formats.prompts import tool_spec
from archer_agents.formats.tool_calls import ToolCall
from archer_agents.formats.tool_formats import HERMES

QUESTION = "What is the weather in Paris?"


@tool
def get_weather(city: str) -> str:
    """Today's weather in a city."""
    return f"Sunny in {city}."


@pytest.fixture(scope="module")
def taught_qwen2(qwen2_chat_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen2 model, trained to answer QUESTION with a hermes call to get_weather."""
    folder = tmp_path_factory.mktemp("taught") / "model"
    shutil.copytree(qwen2_chat_dir, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    tools = [{"type": "function", "function": tool_spec(get_weather)}]
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], tools=tools, add_generation_prompt=True,
        tokenize=False,
    )  # fmt: skip
    reply = HERMES.render([ToolCall("get_weather", {"city": "Paris"})])
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    reply_ids = [*tokenizer(reply, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    ids = torch.tensor([prompt_ids + reply_ids])
    labels = ids.clone()
    labels[0, : len(prompt_ids)] = -100  # learn the reply only
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert float(loss) < 0.05
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def server(taught_qwen2: Path):
    server = start_local_server(taught_qwen2)
    yield server
    server.stop()


def chat_openai(server):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=f"{server.url}/v1", model="tiny", api_key="unused", temperature=0, max_tokens=48
    )


def test_bind_tools_gets_openai_tool_calls(server) -> None:
    answer = chat_openai(server).bind_tools([get_weather]).invoke(QUESTION)
    assert [(c["name"], c["args"]) for c in answer.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]


def test_create_agent_runs_the_tool_the_model_called(server) -> None:
    from langchain.agents import create_agent

    agent = create_agent(chat_openai(server), [get_weather])
    result = agent.invoke({"messages": [("user", QUESTION)]}, {"recursion_limit": 4})
    tool_messages = [m for m in result["messages"] if m.type == "tool"]
    assert tool_messages and tool_messages[0].content == "Sunny in Paris."


def test_the_raw_reply_is_read_in_the_models_family(server) -> None:
    import httpx

    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": QUESTION}],
        "tools": [{"type": "function", "function": tool_spec(get_weather)}],
        "temperature": 0,
        "max_tokens": 48,
    }
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60).json()
    choice = response["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}


def test_archer_chat_model_speaks_the_models_own_template(taught_qwen2: Path) -> None:
    """In process, a chat-template policy gets its template's ids and its calls are read as
    Hermes; the recorder-facing metadata carries exactly those prompt ids."""
    from archer_agents.formats.conversation import ChatTemplate
    from archer_agents.langchain.chat_model import ArcherChatModel
    from archer_agents.policies.local_policy import LocalPolicy
    from archer_agents.policies.protocol import SamplingParams

    policy = LocalPolicy.from_pretrained(taught_qwen2)
    model = ArcherChatModel(
        policy=policy, sampling=SamplingParams(temperature=0, max_new_tokens=48)
    )
    answer = model.bind_tools([get_weather]).invoke(QUESTION)
    assert [(c["name"], c["args"]) for c in answer.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    template = ChatTemplate(policy.tokenizer, [tool_spec(get_weather)])
    expected = template.prompt_ids([{"role": "user", "content": QUESTION}])
    assert answer.response_metadata["prompt_token_ids"] == expected
