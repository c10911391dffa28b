"""`ArcherChatModel`: a trained policy as a LangChain chat model.

A call renders the conversation (and the bound tools) the way the policy was
trained, and asks the `Policy` (a `LocalPolicy` or a server policy, anything
with ``generate``) for one utterance:

- a policy whose tokenizer has a chat template (a real instruct model) gets the
  model's own template over the conversation as prompt ids
  (`archer_agents.formats.conversation.ChatTemplate`), and its reply is read in
  its family's tool-call format (Hermes ``<tool_call>`` tags, Llama 3 JSON), as
  the environments and vLLM read it;
- any other policy (the embedded models) gets the project's text format,
  `prompts.render_messages`, and its reply is read by the environments' own
  parser (`archer_agents.formats.tool_calls`).

A tool call becomes ``AIMessage.tool_calls`` (with a fresh id), anything else is
the message's text. So the model works in `langchain.agents.create_agent` and any
LangGraph graph that expects a tool-calling chat model.

What training needs travels with the message: ``response_metadata`` (and the
generation's ``generation_info``) hold the utterance as said, its sampled token
ids and per-token log-probabilities, the prompt ids and the policy version;
`EpisodeRecorder` keeps them so that logs of a deployed agent train it
token-faithfully. ``usage_metadata`` counts the tokens processed.

With a critic and ``num_candidates=k > 1`` the model samples k utterances and
answers with the one the critic values most (min over its two Q heads), the
ranking CHAI acts with (`archer_agents.critic.ranking.candidate_values`); pass
the target critic to act as CHAI does.

Streaming: the policy produces whole utterances (the critic must see a whole
candidate before one is chosen), so `stream` yields the chosen utterance in
chunks once it is sampled; the chunks add up to the message `invoke` returns,
except that LangChain's chunk merging cannot carry ``invalid_tool_calls``, so
a malformed call is reported in ``response_metadata["tool_call_error"]`` (in
both forms). Async calls run the policy in an executor thread.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.utils import convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.runnables.config import run_in_executor
from langchain_core.tools import BaseTool
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from archer_agents.formats.chat_calls import read_tool_calls
from archer_agents.formats.conversation import ChatTemplate
from archer_agents.formats.prompts import (
    UTTERANCE_CALLS_KEY,
    UTTERANCE_KEY,
    render_messages,
    tool_spec,
)
from archer_agents.formats.tool_formats import ToolFormat, family_for
from archer_agents.policies.protocol import Generation, Policy, SamplingParams

logger = logging.getLogger(__name__)

TOOL_CHOICES = ("auto", "none", "any", "required")
"""``tool_choice`` values `bind_tools` accepts, besides the name of a bound tool."""

_CHUNK = re.compile(r"\S+\s*|\s+")


@dataclass
class _Answer:
    """One chosen utterance and everything the message is built from."""

    text: str
    content: str
    tool_calls: list[dict[str, Any]]
    invalid_tool_calls: list[dict[str, Any]]
    metadata: dict[str, Any]
    usage: UsageMetadata


class ArcherChatModel(BaseChatModel):
    """A `Policy` behind LangChain's chat-model interface.

    Args:
        policy: any `Policy` (local model or OpenAI-compatible server).
        sampling: how each utterance is sampled.
        critic: a `DoubleCritic` that ranks candidates (needs ``num_candidates >= 2``).
        num_candidates: utterances sampled per call; the critic's favourite is said.
        model_name: reported in ``response_metadata["model_name"]``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    policy: Any
    """The `Policy` that samples utterances."""
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(max_new_tokens=128))
    """How each utterance is sampled (temperature 1 samples the policy as trained)."""
    critic: Any = None
    """A `DoubleCritic` ranking ``num_candidates`` candidates by min(Q1, Q2); None: no ranking."""
    num_candidates: int = Field(1, ge=1)
    """Candidates sampled per call; more than one needs a critic to choose."""
    model_name: str = "archer"
    """Name reported in the response metadata."""

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _templates: dict[str, ChatTemplate] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ArcherChatModel:
        if not isinstance(self.policy, Policy):
            raise TypeError(
                f"policy must implement the Policy protocol (version, generate, log_probs); got "
                f"{type(self.policy).__name__}. Use LocalPolicy.from_pretrained(...) or a "
                "server policy"
            )
        if self.num_candidates > 1 and self.critic is None:
            raise ValueError(
                f"num_candidates={self.num_candidates} needs a critic to choose among the "
                "candidates; pass critic=<DoubleCritic> or num_candidates=1"
            )
        if self.critic is not None and self.num_candidates < 2:
            raise ValueError(
                "a critic was given but num_candidates=1 leaves nothing to rank; "
                "pass num_candidates >= 2 or drop the critic"
            )
        if self.critic is not None and not callable(getattr(self.critic, "q", None)):
            raise TypeError(
                f"critic must have q(observations, actions) -> (B, 2) like DoubleCritic; got "
                f"{type(self.critic).__name__}"
            )
        return self

    @property
    def _llm_type(self) -> str:
        return "archer"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "policy_version": str(self.policy.version),
            "num_candidates": self.num_candidates,
            **self.sampling.model_dump(),
        }

    # -- tools ---------------------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Describe ``tools`` in the prompt (as training did) and parse calls from the output.

        ``tool_choice``: None or "auto" parses a call when the utterance is one;
        "none" never parses; "any", "required" or a tool's name treat every
        utterance as a call, so an utterance that is not one (or names another
        tool) comes back in ``invalid_tool_calls``. Decoding is never constrained.
        """
        if kwargs:
            raise TypeError(
                f"ArcherChatModel.bind_tools got unexpected argument(s) {sorted(kwargs)}; "
                "it takes tools and tool_choice"
            )
        specs = [tool_spec(tool) for tool in tools]  # type: ignore[arg-type]
        names = [spec["name"] for spec in specs]
        if tool_choice is not None and tool_choice not in TOOL_CHOICES and tool_choice not in names:
            raise ValueError(
                f"tool_choice {tool_choice!r} is neither one of {TOOL_CHOICES} nor a bound tool "
                f"({', '.join(names)})"
            )
        return self.bind(tools=specs, tool_choice=tool_choice)

    # -- generation ----------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        *,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        _reject_unknown(kwargs)
        answer = self._answer(messages, stop, tools, tool_choice)
        message = AIMessage(
            content=answer.content,
            tool_calls=answer.tool_calls,
            invalid_tool_calls=answer.invalid_tool_calls,
            response_metadata=answer.metadata,
            usage_metadata=answer.usage,
        )
        return ChatResult(
            generations=[ChatGeneration(message=message, generation_info=dict(answer.metadata))]
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        *,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        _reject_unknown(kwargs)
        answer = self._answer(messages, stop, tools, tool_choice)
        for chunk in _chunks(answer):
            if run_manager is not None:
                run_manager.on_llm_new_token(_chunk_text(chunk), chunk=chunk)
            yield chunk

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        sync_manager = run_manager.get_sync() if run_manager is not None else None
        return await run_in_executor(None, self._generate, messages, stop, sync_manager, **kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        *,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        _reject_unknown(kwargs)
        answer = await run_in_executor(None, self._answer, messages, stop, tools, tool_choice)
        for chunk in _chunks(answer):
            if run_manager is not None:
                await run_manager.on_llm_new_token(_chunk_text(chunk), chunk=chunk)
            yield chunk

    # -- the one path every form goes through --------------------------------------------
    def _answer(
        self,
        messages: Sequence[BaseMessage],
        stop: Sequence[str] | None,
        tools: Sequence[dict[str, Any]],
        tool_choice: str | None,
    ) -> _Answer:
        observation = render_messages(messages, tools)  # what the critic reads
        prompt, family = self._chat_prompt(messages, tools)
        candidates, values, best = self._sample(observation, prompt)
        chosen = candidates[best]
        text, stop_sequence = _cut_at_stop(chosen.text, stop or ())
        content, tool_calls, invalid, error = read_tool_calls(text, tools, tool_choice, family)
        metadata: dict[str, Any] = {
            "model_name": self.model_name,
            "policy_version": chosen.policy_version or str(self.policy.version),
            "finish_reason": "stop" if chosen.finished or stop_sequence else "length",
            UTTERANCE_KEY: text,
            UTTERANCE_CALLS_KEY: [[call["name"], call["args"]] for call in tool_calls],
            "token_ids": list(chosen.token_ids),
            "token_logprobs": [float(x) for x in chosen.logprobs],
            "prompt_token_ids": list(chosen.prompt_token_ids),
        }
        if stop_sequence is not None:
            # The ids are what was sampled; the text was cut after sampling.
            metadata["stop_sequence"] = stop_sequence
        if error is not None:
            metadata["tool_call_error"] = error
        if values is not None:
            metadata["candidates"] = [
                {"text": c.text, "critic_value": v} for c, v in zip(candidates, values, strict=True)
            ]
            metadata["chosen_candidate"] = best
        input_tokens = sum(len(c.prompt_token_ids) for c in candidates)
        output_tokens = sum(len(c.token_ids) for c in candidates)
        usage = UsageMetadata(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
        )
        return _Answer(text, content, tool_calls, invalid, metadata, usage)

    def _chat_prompt(
        self, messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]]
    ) -> tuple[tuple[int, ...] | None, ToolFormat | None]:
        """The model's own template over the conversation, and its call format (else None)."""
        tokenizer = getattr(self.policy, "tokenizer", None)
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            return None, None
        key = json.dumps(list(tools), sort_keys=True, default=str)
        template = self._templates.get(key)
        if template is None:  # built once per tool set: it checks the template on a probe
            template = self._templates[key] = ChatTemplate(tokenizer, list(tools))
        ids = template.prompt_ids(convert_to_openai_messages(list(messages)))
        return tuple(ids), family_for(tokenizer)

    def _sample(
        self, observation: str, prompt: tuple[int, ...] | None = None
    ) -> tuple[list[Generation], list[float] | None, int]:
        """The candidates, their critic values (None without a critic) and the chosen index.

        ``prompt`` (chat-template ids) is what the policy conditions on when given;
        the critic reads ``observation``.
        """
        # A policy that does not declare itself thread-safe (``thread_safe = True``)
        # samples one call at a time: batch() and async calls run in threads.
        thread_safe = bool(getattr(self.policy, "thread_safe", False))
        with nullcontext() if thread_safe else self._lock:
            said = observation if prompt is None else prompt
            candidates = self.policy.generate([said] * self.num_candidates, self.sampling)
            if len(candidates) != self.num_candidates:
                raise RuntimeError(
                    f"the policy returned {len(candidates)} generations for "
                    f"{self.num_candidates} observations; a Policy must return one per observation"
                )
            if self.critic is None:
                return candidates, None, 0
            from archer_agents.critic.ranking import candidate_values

            row = candidate_values(self.critic, [observation], [[c.text for c in candidates]])[0]
        values = [float(v) for v in row]
        return candidates, values, int(row.argmax())


def _reject_unknown(kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise TypeError(
            f"ArcherChatModel got unexpected argument(s) {sorted(kwargs)}; set sampling on the "
            "model (ArcherChatModel(sampling=SamplingParams(...))) and tools with bind_tools"
        )


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, str | None]:
    """``text`` up to the earliest stop sequence, and which one cut it."""
    cut, found = len(text), None
    for sequence in stop:
        index = text.find(sequence) if sequence else -1
        if 0 <= index < cut:
            cut, found = index, sequence
    return text[:cut], found


def _chunks(answer: _Answer) -> Iterator[ChatGenerationChunk]:
    """The answer as chunks whose sum is the message `_generate` returns."""
    pieces = _CHUNK.findall(answer.content) if answer.content else []
    for piece in pieces:
        yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
    tool_call_chunks = [
        {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i}
        for i, c in enumerate(answer.tool_calls)
    ]
    last = AIMessageChunk(
        content="",
        tool_call_chunks=tool_call_chunks,
        response_metadata=answer.metadata,
        usage_metadata=answer.usage,
        chunk_position="last",
    )
    yield ChatGenerationChunk(message=last, generation_info=dict(answer.metadata))


def _chunk_text(chunk: ChatGenerationChunk) -> str:
    content = chunk.message.content
    return content if isinstance(content, str) else ""
