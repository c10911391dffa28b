"""How a recorded run's model calls become a list of `Transition`s.

`ModelCall` holds one model call as the callbacks saw it: the messages (or the
plain prompt) the model got, the tools it was offered, its answer, and the tool
outputs that came back after. `episode_transitions` turns a run's calls into
one transition per answered call, and `token_fields` reads the token ids,
per-token log-probabilities, prompt ids and policy version a model reported in
its response metadata.

`EpisodeRecorder` (live runs) and `langsmith_import` (exported LangSmith traces)
both build their episodes here, so a run gives the same transitions whichever
way it reaches the episode log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage

from archer_agents.data.schema import Episode, Transition
from archer_agents.formats.prompts import render_action, render_messages


@dataclass
class ModelCall:
    """One model call: what the model saw, what it said, and what came back after."""

    run_id: str
    messages: list[BaseMessage] | None
    """The chat messages the model saw (None for a plain-text LLM)."""
    prompt: str | None
    """The prompt of a plain-text LLM."""
    tools: list[dict[str, Any]]
    name: str | None
    answer: AIMessage | None = None
    text: str | None = None
    generation_info: dict[str, Any] = field(default_factory=dict)
    after: list[BaseMessage] = field(default_factory=list)
    """Tool outputs that came back after this call."""

    def observation(self) -> str:
        if self.messages is None:
            return self.prompt or ""
        return render_messages(self.messages, self.tools)

    def action(self) -> str:
        if self.answer is not None:
            return render_action(self.answer)
        return self.text or ""

    def default_next_observation(self) -> str:
        if self.messages is None:
            return self.observation() + self.action()
        said: list[BaseMessage] = [self.answer] if self.answer is not None else []
        return render_messages([*self.messages, *said, *self.after], self.tools)


def episode_transitions(
    calls: Sequence[ModelCall], *, ended_with_error: bool = False
) -> list[Transition]:
    """One transition per answered call, reward 0; the last is terminal (or truncated on error).

    ``next_observation`` is the next call's observation when that call continues
    this one's conversation (its rendering starts with this call's messages and
    answer), else this call's conversation with its answer and the tool outputs
    that came back after it.
    """
    answered = [c for c in calls if c.answer is not None or c.text is not None]
    observations = [c.observation() for c in answered]
    transitions = []
    for index, call in enumerate(answered):
        action = call.action()
        if call.messages is not None and call.answer is not None:
            prefix = render_messages([*call.messages, call.answer], call.tools)
        else:
            prefix = observations[index] + action
        following = observations[index + 1] if index + 1 < len(answered) else None
        continues = following is not None and following.startswith(prefix)
        last = index == len(answered) - 1
        metadata: dict[str, Any] = dict(call.generation_info)
        if call.answer is not None:
            metadata.update(call.answer.response_metadata or {})
        transitions.append(
            Transition(
                observation=observations[index],
                action=action,
                reward=0.0,
                next_observation=following if continues else call.default_next_observation(),
                terminated=last and not ended_with_error,
                truncated=last and ended_with_error,
                info=_call_info(call),
                **token_fields(metadata),
            )
        )
    return transitions


def _call_info(call: ModelCall) -> dict[str, Any]:
    info: dict[str, Any] = {"run_id": call.run_id}
    if call.name:
        info["model"] = call.name
    if call.answer is not None and call.answer.tool_calls:
        info["tool_calls"] = [c["name"] for c in call.answer.tool_calls]
    return info


def token_fields(metadata: dict[str, Any]) -> dict[str, Any]:
    """`Transition` fields a model reported in its response metadata / generation info.

    ``prompt_token_ids``, ``action_token_ids``, ``action_logprobs`` and
    ``policy_version``, from `ArcherChatModel`'s keys (``token_ids``,
    ``token_logprobs``, ``prompt_token_ids``, ``policy_version``) or from
    OpenAI-form ``logprobs`` whose tokens read ``token_id:N`` (vLLM with
    ``return_tokens_as_token_ids``). Ids are left out when a stop sequence cut
    the text after sampling, since they would no longer spell the action.
    """
    fields: dict[str, Any] = {}
    version = metadata.get("policy_version") or metadata.get("model_name")
    if version:
        fields["policy_version"] = str(version)
    if metadata.get("stop_sequence") is not None:
        return fields
    ids = _int_list(metadata.get("token_ids"))
    logprobs = _float_list(metadata.get("token_logprobs"))
    if ids is None:
        ids, logprobs = _openai_logprobs(metadata.get("logprobs"))
    if ids is not None:
        fields["action_token_ids"] = ids
        if logprobs is not None and len(logprobs) == len(ids):
            fields["action_logprobs"] = logprobs
    prompt_ids = _int_list(metadata.get("prompt_token_ids"))
    if prompt_ids:
        fields["prompt_token_ids"] = prompt_ids
    return fields


def _openai_logprobs(payload: Any) -> tuple[list[int] | None, list[float] | None]:
    """Ids and logprobs from OpenAI-form ``logprobs`` whose tokens read ``token_id:N`` (vLLM)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("content"), list):
        return None, None
    ids, logprobs = [], []
    for entry in payload["content"]:
        token = entry.get("token") if isinstance(entry, dict) else None
        if not isinstance(token, str) or not token.startswith("token_id:"):
            return None, None
        try:
            ids.append(int(token.removeprefix("token_id:")))
            logprobs.append(float(entry["logprob"]))
        except (KeyError, TypeError, ValueError):
            return None, None
    return (ids, logprobs) if ids else (None, None)


def _int_list(value: Any) -> list[int] | None:
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return list(value)
    return None


def _float_list(value: Any) -> list[float] | None:
    if isinstance(value, list) and all(isinstance(v, int | float) for v in value):
        return [float(v) for v in value]
    return None


def with_reward(episode: Episode, reward: float, success: bool | None) -> Episode:
    """A copy of ``episode`` with its reward given: on the last transition, which then ends it.

    Rewards reach a recorded episode after its run (``recorder.feedback``); the
    copy's ``total_reward`` is the sum over transitions, and it is no longer
    marked ``reward_pending``.
    """
    rewarded = episode.model_copy(deep=True)
    if rewarded.transitions:
        last = rewarded.transitions[-1]
        last.reward = reward
        last.terminated = last.terminated or not last.truncated
    rewarded.total_reward = (
        float(sum(t.reward for t in rewarded.transitions)) if rewarded.transitions else reward
    )
    rewarded.success = success
    rewarded.metadata["reward_pending"] = False
    return rewarded
