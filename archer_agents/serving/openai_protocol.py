"""The OpenAI API subset the local server speaks: request bodies, errors, answers.

Answers follow vLLM's shape field for field (``token_ids``,
``prompt_token_ids``, ``token_id:<id>`` tokens, the error body), so a client
cannot tell the two servers apart on this subset; ``tests/test_vllm.py``
compares them. Unknown request fields are refused with 400 rather than
ignored, so a misspelt option never passes silently.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from transformers import PreTrainedTokenizerBase

from archer_agents.policies.protocol import SamplingParams
from archer_agents.policies.server_policy import TOKEN_ID_PREFIX

if TYPE_CHECKING:
    from archer_agents.serving.model_engine import SampledRow

MAX_LOGPROBS = 20
"""Most alternatives per position, as in vLLM's default and OpenAI's limit."""
MIN_TEMPERATURE = 0.01
"""Smallest temperature above 0 (greedy); vLLM raises smaller ones to this."""


class APIError(Exception):
    """A request the server refuses, answered with ``status`` and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


class SamplingRequest(BaseModel):
    """Fields shared by both endpoints; unknown fields are refused so typos surface."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str
    temperature: float = Field(1.0, ge=0.0, le=100.0)
    """0 samples greedily; otherwise at least `MIN_TEMPERATURE` (vLLM raises smaller ones to it)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=-1)
    """0 or -1 keeps every token (vLLM accepts both)."""
    n: int = Field(1, ge=1)
    seed: int | None = None
    stream: Literal[False] = False
    stop: str | list[str] | None = None
    """Only empty: utterances end with the model's eos token."""
    presence_penalty: float = Field(0.0, ge=0.0, le=0.0)
    frequency_penalty: float = Field(0.0, ge=0.0, le=0.0)
    user: str | None = None
    return_tokens_as_token_ids: bool = False
    """Write tokens as ``token_id:<id>`` in the logprobs (exact, unlike decoded strings)."""
    return_token_ids: bool = False
    """Add the prompt's and the completion's token ids to the answer (vLLM's fields)."""

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float) -> float:
        if 0.0 < value < MIN_TEMPERATURE:
            raise ValueError(
                f"must be 0 (greedy) or at least {MIN_TEMPERATURE}: smaller temperatures overflow"
            )
        return value

    def sampling(self, max_tokens: int) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=max_tokens,
            temperature=self.temperature,
            top_k=max(self.top_k, 0),
            top_p=self.top_p,
        )


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: Literal[False] = False


class _ContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    arguments: str
    """The arguments as a JSON object in a string, as OpenAI sends them."""


class ToolCallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionSpec


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: dict[str, str]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCallRequest] | None = None


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[ToolSpec] | None = None
    """Tools the model may call: rendered into the prompt as in training (`chat_tools`)."""
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)


class LoadAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lora_name: str = Field(min_length=1, max_length=200)
    lora_path: str = Field(min_length=1)


class UnloadAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lora_name: str = Field(min_length=1)


def describe(exc: ValidationError) -> str:
    """A validation error in one line: each wrong field and what is wrong with it."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "invalid request: " + "; ".join(parts)


def token_text(tokenizer: PreTrainedTokenizerBase, token_id: int, as_id: bool) -> str:
    if as_id:
        return f"{TOKEN_ID_PREFIX}{token_id}"
    return str(tokenizer.decode([token_id]))


def completion_response(
    req: CompletionRequest, rows: list[SampledRow], tokenizer: PreTrainedTokenizerBase
) -> dict[str, Any]:
    """A completions answer in vLLM's shape, one choice per row."""
    as_id = req.return_tokens_as_token_ids
    choices = []
    for index, row in enumerate(rows):
        gen = row.generation
        choice: dict[str, Any] = {
            "index": index,
            "text": gen.text,
            "logprobs": None,
            "finish_reason": "stop" if gen.finished else "length",
            "stop_reason": None,
        }
        if req.logprobs is not None:
            tokens = [token_text(tokenizer, i, as_id) for i in gen.token_ids]
            offsets, at = [], 0
            for token_id in gen.token_ids:
                offsets.append(at)
                at += len(tokenizer.decode([token_id], skip_special_tokens=True))
            top = None
            if req.logprobs > 0:
                top = [
                    {
                        **{token_text(tokenizer, i, as_id): lp for i, lp in alternatives},
                        tokens[t]: gen.logprobs[t],
                    }
                    for t, alternatives in enumerate(row.top or [])
                ]
            choice["logprobs"] = {
                "text_offset": offsets,
                "token_logprobs": list(gen.logprobs),
                "tokens": tokens,
                "top_logprobs": top,
            }
        if req.return_token_ids:
            choice["prompt_token_ids"] = list(gen.prompt_token_ids)
            choice["token_ids"] = list(gen.token_ids)
        choices.append(choice)
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": choices,
        "usage": usage(rows),
    }


def chat_response(
    req: ChatCompletionRequest,
    prompt: list[int],
    rows: list[SampledRow],
    tokenizer: PreTrainedTokenizerBase,
    reply: Callable[[str], tuple[dict[str, Any], bool]] | None = None,
) -> dict[str, Any]:
    """A chat completions answer in vLLM's shape, one choice per row.

    ``reply`` turns an utterance into the assistant message and says whether it
    is a tool call (finish reason ``tool_calls``); by default the text is the content.
    """
    as_id = req.return_tokens_as_token_ids

    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        token = token_text(tokenizer, token_id, as_id)
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    choices = []
    for index, row in enumerate(rows):
        gen = row.generation
        message, called = (
            reply(gen.text) if reply else ({"role": "assistant", "content": gen.text}, False)
        )
        choice: dict[str, Any] = {
            "index": index,
            "message": message,
            "logprobs": None,
            "finish_reason": "tool_calls" if called else "stop" if gen.finished else "length",
            "stop_reason": None,
        }
        if req.logprobs:
            content = []
            for t, (token_id, logprob) in enumerate(zip(gen.token_ids, gen.logprobs, strict=True)):
                alternatives = row.top[t] if row.top else []
                content.append(
                    {**entry(token_id, logprob), "top_logprobs": [entry(*a) for a in alternatives]}
                )
            choice["logprobs"] = {"content": content}
        if req.return_token_ids:
            choice["token_ids"] = list(gen.token_ids)
        choices.append(choice)
    answer: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": choices,
        "usage": usage(rows),
    }
    if req.return_token_ids:
        answer["prompt_token_ids"] = prompt
    return answer


def usage(rows: list[SampledRow]) -> dict[str, int]:
    prompt = sum(len(row.generation.prompt_token_ids) for row in rows)
    completion = sum(len(row.generation.token_ids) for row in rows)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
