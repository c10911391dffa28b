"""Rollout actors that play in a model's chat template, token-exact turn by turn.

`ChatPolicyActor` plays any `TextEnv` in chat form: each episode's opening
messages (`TextEnv.chat_messages`, with the environment's tools and its
`TextEnv.chat_template_kwargs`) are rendered once by the policy's chat template,
and every later prompt is the previous one
plus exactly the ids the policy sampled plus the ids of what came back
(`archer_agents.formats.conversation.Conversation`). The transitions the
collector writes therefore carry, per turn, the prompt ids the policy
conditioned on and the ids it sampled, and turn t + 1's prompt starts with
turn t's prompt and sampled ids: what is trained on is what was sampled.

`ChatScriptedActor` plays the environment's scripted agent (the expert, for
behaviour cloning) in the same form: its calls are written in the
environment's tool-call format and its replies carry the ids a model would
sample to say them (`ChatTemplate.reply_ids`), so behaviour cloning trains a
chat model on exactly the prompts it will see.

The environment must read the model's tool-call format
(``gym.make(env_id, tool_format=...)`` for tool environments: `chat_env_factory`). The
observation text the environment returns (its own rendering of the same
episode) is what the critic reads.

A tokenizer without a chat template of its own (the embedded models) plays in
`EMBEDDED_CHAT_TEMPLATE`, which renders the conversation as the environment's
text observation: its prompts are the ids the text path gives, and it goes
through the same actors, logs and trainers as any other model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from archer_agents.environments.base import TextEnv
from archer_agents.environments.tool_env import ToolCallingEnv
from archer_agents.formats import tool_formats
from archer_agents.formats.chat_templates import EMBEDDED_CHAT_TEMPLATE
from archer_agents.formats.conversation import ChatTemplate, Conversation
from archer_agents.formats.tool_calls import ToolCall, bind_positional
from archer_agents.policies.decoding import PromptCache
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import Generation, Policy, SamplingParams
from archer_agents.training.cached_rollout import CachedPolicyActor
from archer_agents.training.rollout import PolicyActor, ScriptedActor

logger = logging.getLogger(__name__)


def uses_chat_template(policy: Any) -> bool:
    """Whether a policy's tokenizer brings a chat template of its own (and its call format)."""
    tokenizer = getattr(policy, "tokenizer", None)
    return bool(getattr(tokenizer, "chat_template", None))


def template_of(tokenizer: Any) -> str:
    """The chat template a policy plays in: its tokenizer's, else the project's text format."""
    return str(getattr(tokenizer, "chat_template", None) or EMBEDDED_CHAT_TEMPLATE)


def chat_env_factory(factory: Callable[[], Any], tokenizer: Any) -> Callable[[], Any]:
    """``factory``, making tool environments read ``tokenizer``'s tool-call format.

    A tool-calling environment left in the project's embedded format reads the
    family the tokenizer's template writes
    (`archer_agents.formats.tool_formats.family_for`); any other environment, or
    one whose format was chosen already, is unchanged.
    """
    probe = factory()
    try:
        env = probe.unwrapped
        if not isinstance(env, ToolCallingEnv) or env.tool_format is not tool_formats.EMBEDDED:
            return factory
    finally:
        probe.close()
    family = tool_formats.family_for(tokenizer)
    if family is tool_formats.EMBEDDED:
        return factory
    logger.info("the environment reads the model's %s tool calls", family.name)

    def make() -> Any:
        env = factory()
        env.unwrapped.tool_format = family  # read only when a call is parsed
        return env

    return make


def chat_actor_for(actor: Any) -> Any:
    """``actor`` in chat form: every model with a tokenizer plays through one code path.

    A plain sampler (`PolicyActor`, `CachedPolicyActor`) of a policy with a tokenizer
    becomes a `ChatPolicyActor` with the same sampling: the model's own chat
    template renders the conversation, or, for a tokenizer without one (the
    embedded models), `EMBEDDED_CHAT_TEMPLATE`, whose prompts are the text path's.
    Scripted actors and policies without a tokenizer are returned as they are, and
    so is any other actor over a policy without a template of its own (CHAI's
    critic-ranked one reads the text observation, which is that template's
    rendering). Such an actor over a policy with its own template raises `ValueError`.
    """
    policy = getattr(actor, "policy", None)
    if policy is None or getattr(policy, "tokenizer", None) is None:
        return actor
    if isinstance(actor, PolicyActor | CachedPolicyActor):
        return ChatPolicyActor(policy, actor.sampling)
    if isinstance(actor, ChatPolicyActor) or not uses_chat_template(policy):
        return actor
    raise ValueError(
        f"{type(actor).__name__} samples from the project's text observations, but the policy's "
        "tokenizer has a chat template; train this model with an algorithm whose actor is a "
        "plain sampler (archer, ppo, reinforce, filtered_bc)"
    )


@dataclass
class _Episode:
    env: TextEnv
    conversation: Conversation
    last: Generation | None = None


class _ChatActor:
    """What both chat actors share: one `Conversation` per slot, advanced each turn."""

    def __init__(self, tokenizer: Any, chat_template: str | None) -> None:
        self.tokenizer = tokenizer
        self.chat_template = chat_template or template_of(tokenizer)
        self._templates: dict[str, ChatTemplate] = {}
        self._episodes: dict[int, _Episode] = {}

    def begin(self, slot: int, env: TextEnv, observation: str, info: dict[str, Any]) -> None:
        inner = cast(TextEnv, env.unwrapped)  # gymnasium's wrappers hide the chat
        template = self._template(inner.tool_specs, inner.chat_template_kwargs)
        self._episodes[slot] = _Episode(inner, Conversation(template, inner.chat_messages()))

    def _prompts(self, slots: Sequence[int]) -> list[list[int]]:
        """Each slot's next prompt: the last one, the reply's ids, then what came back."""
        prompts = []
        for slot in slots:
            episode = self._episodes[slot]
            if episode.last is not None:
                said = len(episode.conversation.messages)  # the reply is message number `said`
                came_back = episode.env.chat_messages()[said + 1 :]
                episode.conversation.add_turn(episode.last.token_ids, episode.last.text, came_back)
            prompts.append(episode.conversation.prompt_ids)
        return prompts

    def _remember(self, slots: Sequence[int], generations: Sequence[Generation]) -> None:
        for slot, generation in zip(slots, generations, strict=True):
            self._episodes[slot].last = generation

    def _template(self, tools: Sequence[dict[str, Any]], kwargs: dict[str, Any]) -> ChatTemplate:
        key = repr(([tool.get("name") for tool in tools], sorted(kwargs.items())))
        template = self._templates.get(key)
        if template is None:
            template = ChatTemplate(
                self.tokenizer, tools, chat_template=self.chat_template, template_kwargs=kwargs
            )
            self._templates[key] = template
        return template


class ChatPolicyActor(_ChatActor):
    """Samples from a policy with a chat template, one batched call per turn.

    A `LocalPolicy` keeps each slot's prompt cache between turns (the next prompt
    extends the last one token for token), so a turn computes only its new ids.

    Args:
        policy: a `LocalPolicy`, or a `ServerPolicy` (the prompt ids are sent as they
            are); its tokenizer's chat template renders the conversation.
        sampling: how to sample.
        chat_template: a Jinja template to use instead of the tokenizer's.
    """

    def __init__(
        self,
        policy: Policy,
        sampling: SamplingParams | None = None,
        *,
        chat_template: str | None = None,
    ) -> None:
        super().__init__(getattr(policy, "tokenizer", None), chat_template)
        self.policy = policy
        self.sampling = sampling or SamplingParams()
        self._caches: dict[int, PromptCache] = {}

    def begin(self, slot: int, env: TextEnv, observation: str, info: dict[str, Any]) -> None:
        super().begin(slot, env, observation, info)
        self._caches.pop(slot, None)

    def act(self, slots: Sequence[int], observations: Sequence[str]) -> list[Generation]:
        prompts = self._prompts(slots)
        if isinstance(self.policy, LocalPolicy):
            # Turn t + 1's prompt extends turn t's, so each slot's keys and values are
            # kept and only the sampled reply and what came back are computed.
            caches = [self._caches.get(slot) for slot in slots]
            generations, fresh = self.policy.generate_cached(prompts, caches, self.sampling)
            self._caches.update(zip(slots, fresh, strict=True))
        else:
            generations = self.policy.generate(prompts, self.sampling)
        self._remember(slots, generations)
        return generations


class ChatScriptedActor(_ChatActor):
    """The environment's scripted agent, its replies in a chat model's template and format.

    Each reply is the agent's utterance with its tool call rewritten in the
    environment's tool-call format, recorded with the prompt ids the model's
    template renders and the ids the model would sample for it (no
    log-probabilities: nothing was sampled).

    Args:
        kind: the scripted agent (``expert``, ``weak``, ``random``).
        tokenizer: the chat model's tokenizer (its template renders the prompts).
        seed: seeds slot i's agent with ``seed + i``.
        chat_template: a Jinja template to use instead of the tokenizer's.
    """

    def __init__(
        self, kind: str, tokenizer: Any, *, seed: int = 0, chat_template: str | None = None
    ) -> None:
        super().__init__(tokenizer, chat_template)
        self.kind = kind
        self.seed = seed
        self._scripted = ScriptedActor(kind, seed=seed)  # the agents, one per slot

    def begin(self, slot: int, env: TextEnv, observation: str, info: dict[str, Any]) -> None:
        super().begin(slot, env, observation, info)
        self._scripted.begin(slot, env, observation, info)

    def act(self, slots: Sequence[int], observations: Sequence[str]) -> list[Generation]:
        prompts = self._prompts(slots)
        said = self._scripted.act(slots, observations)
        generations = []
        for slot, utterance, prompt in zip(slots, said, prompts, strict=True):
            episode = self._episodes[slot]
            text = in_env_format(episode.env, utterance.text)
            ids = episode.conversation.template.reply_ids(text)
            generations.append(
                Generation(text=text, token_ids=ids, logprobs=[], prompt_token_ids=list(prompt))
            )
        self._remember(slots, generations)
        return generations


def in_env_format(env: TextEnv, utterance: str) -> str:
    """A scripted utterance (the project's embedded call form) in ``env``'s tool-call format.

    Text that is not a call, and every utterance of an environment that reads the
    embedded form or no tools at all, is returned as it is.
    """
    family = getattr(env, "tool_format", tool_formats.EMBEDDED)
    if family is tool_formats.EMBEDDED:
        return utterance
    reply = tool_formats.EMBEDDED.parse(utterance)
    if not reply.calls:
        return utterance
    parameters: dict[str, list[str]] = {
        spec["name"]: list(spec.get("parameters", {}).get("properties", {}))
        for spec in env.tool_specs
    }
    calls = []
    for call in reply.calls:
        arguments = bind_positional(call, parameters.get(call.name, []))
        calls.append(ToolCall(call.name, arguments))
    return family.render(calls)


__all__ = [
    "ChatPolicyActor",
    "ChatScriptedActor",
    "chat_actor_for",
    "chat_env_factory",
    "in_env_format",
    "template_of",
    "uses_chat_template",
]
