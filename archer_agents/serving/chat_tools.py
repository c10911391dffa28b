"""Tool calling on the local server's chat endpoint, in the format the policy trained on.

A chat request that carries tools, or tool calls and tool results in its
history, is turned into LangChain messages and rendered by
`prompts.render_messages`, exactly as `ArcherChatModel` renders the same
conversation. So an OpenAI client (``ChatOpenAI(base_url=...).bind_tools(...)``)
talking to ``archer serve --backend local`` prompts the policy as training
did. The utterance is read by the chat model's own parser
(`archer_agents.formats.chat_calls.read_tool_calls`): a call becomes an OpenAI ``tool_calls`` entry
(finish reason ``tool_calls``); anything else is the message's content, and a
malformed call stays content, for the agent to see.

An assistant message sent back without the utterance it came from is rendered
in the canonical call form (`prompts.render_tool_call`), which is the form the
environments' scripted agents speak. vLLM renders chat requests with a Jinja
template and ignores tools; with vLLM, use `ArcherChatModel` over the server.
"""

from __future__ import annotations

import json
from typing import Any, cast

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from transformers import PreTrainedTokenizerBase

from archer_agents.formats.chat_calls import read_tool_calls
from archer_agents.formats.chat_prompt import message_text
from archer_agents.formats.prompts import render_messages, tool_spec
from archer_agents.formats.tool_formats import ToolFormat
from archer_agents.serving.openai_protocol import (
    APIError,
    ChatCompletionRequest,
    ChatMessage,
    check_json_value,
    parse_json,
)


def uses_tools(req: ChatCompletionRequest) -> bool:
    """Whether the request is a tool-calling conversation (tools, calls or results)."""
    return bool(req.tools) or any(m.tool_calls or m.role == "tool" for m in req.messages)


def _text(message: ChatMessage) -> str:
    content = message.content
    if isinstance(content, list):
        return message_text([part.model_dump() for part in content])
    return content or ""


def _arguments(message: ChatMessage, index: int) -> list[dict[str, Any]]:
    """The message's tool calls with their arguments parsed; malformed arguments are a 400.

    Arguments are parsed as strictly as the body (`parse_json`), so deep
    nesting, NaN, huge numbers and lone surrogates are refused here rather
    than failing the renderer or the tokenizer later.
    """
    calls = []
    for call in message.tool_calls or []:
        where = f"messages[{index}].tool_calls: the arguments of {call.function.name}"
        args = parse_json(call.function.arguments or "{}", where)
        try:
            check_json_value(args, where)
        except ValueError as exc:
            raise APIError(400, str(exc)) from None
        if not isinstance(args, dict):
            raise APIError(
                400,
                f"messages[{index}].tool_calls: the arguments of {call.function.name} must be a "
                "JSON object",
            )
        calls.append({"name": call.function.name, "args": args, "id": call.id})
    return calls


def to_langchain(messages: list[ChatMessage]) -> list[BaseMessage]:
    """OpenAI chat messages as LangChain messages (system and developer are both system)."""
    converted: list[BaseMessage] = []
    for index, message in enumerate(messages):
        text = _text(message)
        if message.role in ("system", "developer"):
            converted.append(SystemMessage(text))
        elif message.role == "user":
            converted.append(HumanMessage(text))
        elif message.role == "assistant":
            converted.append(AIMessage(text, tool_calls=_arguments(message, index)))
        else:
            converted.append(ToolMessage(text, tool_call_id=message.tool_call_id or ""))
    return converted


def tool_specs(req: ChatCompletionRequest) -> list[dict[str, Any]]:
    """The request's tools as `prompts.tool_spec` dicts."""
    return [tool_spec(tool.function.model_dump(exclude_none=True)) for tool in req.tools or []]


def tool_observation(req: ChatCompletionRequest) -> str:
    """The observation the conversation stands for, tools included (`render_messages`)."""
    return render_messages(to_langchain(req.messages), tool_specs(req))


def tool_choice(req: ChatCompletionRequest) -> str | None:
    """The request's tool_choice as `read_tool_calls` takes it."""
    choice = req.tool_choice
    if choice is None or isinstance(choice, str):
        return choice
    name = choice.function.get("name")
    if not name:
        raise APIError(400, 'tool_choice: name the function, e.g. {"function": {"name": "..."}}')
    return name


def template_prompt_text(
    req: ChatCompletionRequest, tokenizer: PreTrainedTokenizerBase, specs: list[dict[str, Any]]
) -> str:
    """The request rendered by the model's own tool-calling chat template, tools included.

    For a model that speaks a family's tool format (a Qwen or ChatML model with
    a Hermes template, Llama 3): the conversation goes to the template as OpenAI
    messages, each earlier call's arguments parsed (and checked) from JSON.
    """
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(req.messages):
        entry: dict[str, Any] = {"role": message.role, "content": _text(message)}
        if message.tool_calls:
            entry["tool_calls"] = [_template_call(call) for call in _arguments(message, index)]
        if message.tool_call_id:
            entry["tool_call_id"] = message.tool_call_id
        if message.name:
            entry["name"] = message.name
        messages.append(entry)
    tools = [{"type": "function", "function": spec} for spec in specs]
    try:
        text = tokenizer.apply_chat_template(
            messages, tools=cast(Any, tools), add_generation_prompt=True, tokenize=False
        )
    except Exception as error:  # Jinja raises whatever the template's author chose
        problem = f"the model's chat template cannot render this conversation: {error}"
        raise APIError(400, problem) from None
    return str(text)


def _template_call(call: dict[str, Any]) -> dict[str, Any]:
    """An earlier call as chat templates take it (arguments as an object)."""
    function = {"name": call["name"], "arguments": call["args"]}
    return {"id": call["id"], "type": "function", "function": function}


def reply_message(
    text: str,
    specs: list[dict[str, Any]],
    choice: str | None,
    tool_format: ToolFormat | None = None,
) -> tuple[dict[str, Any], bool]:
    """The assistant message for an utterance, and whether it is a tool call.

    ``specs`` and ``choice`` are the request's `tool_specs` and `tool_choice`;
    ``tool_format`` the model's family (None: the project's own forms).
    """
    content, calls, _, _ = read_tool_calls(text, specs, choice, tool_format)
    if not calls:
        return {"role": "assistant", "content": text}, False
    return {
        "role": "assistant",
        "content": content or None,
        "tool_calls": [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
            }
            for call in calls
        ],
    }, True
