"""The OpenAI API subset the local server speaks: request bodies, errors, answers.

Answers follow vLLM's shape field for field (``token_ids``,
``prompt_token_ids``, ``token_id:<id>`` tokens, the error body), so a client
cannot tell the two servers apart on this subset; ``tests/test_vllm.py``
compares them. Unknown request fields are refused with 400 rather than
ignored, so a misspelt option never passes silently.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import from_json
from transformers import PreTrainedTokenizerBase

from archer_agents.policies.protocol import SamplingParams
from archer_agents.policies.server_policy import TOKEN_ID_PREFIX

if TYPE_CHECKING:
    from archer_agents.serving.model_engine import SampledRow

MAX_LOGPROBS = 20
"""Most alternatives per position, as in vLLM's default and OpenAI's limit."""
MIN_TEMPERATURE = 0.01
"""Smallest temperature above 0 (greedy); vLLM raises smaller ones to this."""
MAX_COUNT = 2**31 - 1
"""Largest count a request may name (``max_tokens``, ``n``, ``top_k``): what vLLM's int32 takes.
Server limits (context, ``max_n``) refuse most smaller values too, with their own message."""
SEED_RANGE = (-(2**63), 2**64 - 1)
"""Seeds torch's generator accepts (a 64-bit integer, signed or not); others overflowed (500)."""
MAX_NAME = 256
"""Longest model, tool or id name; names are short and end up in prompts and answers."""
MAX_JSON_DEPTH = 64
"""Deepest nesting of a tool schema or tool-call arguments (the body's own parser stops at 200)."""


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

    model: str = Field(max_length=MAX_NAME)
    temperature: float = Field(1.0, ge=0.0, le=100.0)
    """0 samples greedily; otherwise at least `MIN_TEMPERATURE` (vLLM raises smaller ones to it)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=-1, le=MAX_COUNT)
    """0 or -1 keeps every token (vLLM accepts both)."""
    n: int = Field(1, ge=1, le=MAX_COUNT)
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
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
    max_tokens: int = Field(16, ge=1, le=MAX_COUNT)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: Literal[False] = False


class _ContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME)
    arguments: str
    """The arguments as a JSON object in a string, as OpenAI sends them (`chat_tools` reads it)."""


class ToolCallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(max_length=MAX_NAME)
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    """A JSON schema of an object: ``properties`` maps names to schemas, ``required`` names."""
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Refuse the schemas the prompt renderer cannot read (it would fail with a 500)."""
        check_json_value(value, "parameters")
        properties = value.get("properties", {})
        if not isinstance(properties, dict):
            raise ValueError("properties must be an object mapping argument names to schemas")
        for name, schema in properties.items():
            if not isinstance(schema, dict):
                raise ValueError(f"properties.{name} must be a JSON schema object")
        required = value.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise ValueError("required must be a list of argument names")
        return value


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
    name: str | None = Field(None, max_length=MAX_NAME)
    tool_call_id: str | None = Field(None, max_length=MAX_NAME)
    tool_calls: list[ToolCallRequest] | None = None


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[ToolSpec] | None = None
    """Tools the model may call: rendered into the prompt as in training (`chat_tools`)."""
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_COUNT)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_COUNT)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)


class LoadAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lora_name: str = Field(min_length=1, max_length=MAX_NAME)
    lora_path: str = Field(min_length=1, max_length=4096, pattern=r"^[^\x00]*$")
    """A directory on the server's machine (no NUL byte: no path holds one)."""


class UnloadAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lora_name: str = Field(min_length=1, max_length=MAX_NAME)


_Request = TypeVar("_Request", bound=BaseModel)


def parse_json(text: str | bytes, what: str = "body") -> Any:
    """Strict JSON (RFC 8259) as Python values, or a 400 that says what is wrong and where.

    NaN, Infinity, lone surrogates, numbers too large and nesting deeper than
    the parser's limit (200) are refused here: none has a meaning in a
    request, and each made a later step fail with a 500.
    """
    try:
        value = from_json(text, allow_inf_nan=False)
    except ValueError as exc:
        raise APIError(
            400,
            f"{what}: not JSON, or not strict JSON (NaN, Infinity, lone surrogates and nesting "
            f"over 200 levels are refused): {exc}",
        ) from None
    return value


def check_json_value(value: Any, what: str, depth: int = 0) -> None:
    """Refuse non-finite numbers (JSON's 1e999 reads as infinity) and nesting over `MAX_JSON_DEPTH`.

    Raises ValueError, which pydantic validators turn into a 400's message.
    """
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} holds a number out of range ({value})")
    if isinstance(value, dict):
        for item in value.values():
            check_json_value(item, what, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_json_value(item, what, depth + 1)


def parse_request(body: bytes, model: type[_Request]) -> _Request:
    """A request body as ``model``; any malformed body is an `APIError` 400 with the reason."""
    value = parse_json(body)
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise APIError(400, describe(exc)) from None


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
