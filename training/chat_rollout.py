"""A rollout actor for models that read their own chat template, token-exact turn by turn.

`ChatPolicyActor` plays any `TextEnv` in chat form: each episode's opening
messages (`TextEnv.chat_messages`, with the environment's tools) are rendered
once by the policy's chat template, and every later prompt is the previous one
plus exactly the ids the policy sampled plus the ids of what came back
(`archer_agents.formats.conversation.Conversation`). The transitions the
collector writes therefore carry, per turn, the prompt ids the policy
conditioned on and the ids it sampled, and turn t + 1's prompt starts with
turn t's prompt and sampled ids: what is trained on is what was sampled.

The environment must read the model's tool-call format
(``gym.make(env_id, tool_format=...)`` for tool environments; see
`archer_agents.formats.tool_formats.family_for`). The observation text the
environment returns (its own rendering of the same episode) is what the
critic reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from archer_agents.environments.base import TextEnv
from archer_agents.formats.conversation import ChatTemplate, Conversation
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import Generation, SamplingParams


@dataclass
class _Episode:
    env: TextEnv
    conversation: Conversation
    last: Generation | None = None


class ChatPolicyActor:
    """Samples from a `LocalPolicy` with a chat template, one batched call per turn.

    Args:
        policy: the policy; its tokenizer's chat template renders the conversation.
        sampling: how to sample.
        chat_template: a Jinja template to use instead of the tokenizer's.
    """

    def __init__(
        self,
        policy: LocalPolicy,
        sampling: SamplingParams | None = None,
        *,
        chat_template: str | None = None,
    ) -> None:
        self.policy = policy
        self.sampling = sampling or SamplingParams()
        self.chat_template = chat_template
        self._templates: dict[str, ChatTemplate] = {}
        self._episodes: dict[int, _Episode] = {}

    def begin(self, slot: int, env: TextEnv, observation: str, info: dict[str, Any]) -> None:
        inner: TextEnv = env.unwrapped  # type: ignore[assignment]
        template = self._template(inner.tool_specs)  # gymnasium's wrappers hide the chat
        conversation = Conversation(template, inner.chat_messages())
        self._episodes[slot] = _Episode(inner, conversation)

    def act(self, slots: Sequence[int], observations: Sequence[str]) -> list[Generation]:
        prompts = []
        for slot in slots:
            episode = self._episodes[slot]
            if episode.last is not None:
                said = len(episode.conversation.messages)  # the reply is message number `said`
                came_back = episode.env.chat_messages()[said + 1 :]
                episode.conversation.add_turn(episode.last.token_ids, episode.last.text, came_back)
            prompts.append(episode.conversation.prompt_ids)
        generations = self.policy.generate_ids(prompts, self.sampling)
        for slot, generation in zip(slots, generations, strict=True):
            self._episodes[slot].last = generation
        return generations

    def _template(self, tools: Sequence[dict[str, Any]]) -> ChatTemplate:
        key = repr([tool.get("name") for tool in tools])
        template = self._templates.get(key)
        if template is None:
            template = ChatTemplate(self.policy.tokenizer, tools, chat_template=self.chat_template)
            self._templates[key] = template
        return template


__all__ = ["ChatPolicyActor"]
