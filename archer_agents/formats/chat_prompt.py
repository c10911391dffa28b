"""Chat messages as a prompt, the same for the local server and for vLLM.

The policy was trained on observations rendered by `render_prompt`, not on a
chat format, so a chat request is turned back into an observation: the
messages' texts joined by newlines (a client that sends one user message with
the whole observation gets exactly the training prompt). A model whose
tokenizer has its own chat template is rendered with that template instead.

vLLM renders chat requests with a Jinja template only, so `CHAT_TEMPLATE` is
the same rendering as Jinja; a test checks that both agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from archer_agents.formats.prompts import render_prompt

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if not loop.first %}{{ '\\n' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %}"
    "{% endfor %}"
)
"""Jinja form of `chat_prompt_text` for models without a chat template (vLLM's --chat-template)."""


def message_text(content: str | Sequence[Mapping[str, Any]]) -> str:
    """The text of a message's content: a string, or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content)


def chat_observation(messages: Sequence[Mapping[str, Any]]) -> str:
    """The observation a list of chat messages stands for: their texts, one per line."""
    return "\n".join(message_text(message.get("content") or "") for message in messages)


def chat_prompt_text(
    messages: Sequence[Mapping[str, Any]], tokenizer: PreTrainedTokenizerBase
) -> str:
    """The prompt text for chat messages, bos included; tokenize it without special tokens."""
    if getattr(tokenizer, "chat_template", None):
        return str(
            tokenizer.apply_chat_template(
                [dict(message) for message in messages], tokenize=False, add_generation_prompt=True
            )
        )
    return observation_prompt_text(chat_observation(messages), tokenizer)


def observation_prompt_text(observation: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """The prompt text for an observation, as the policy renders it, bos included."""
    return (tokenizer.bos_token or "") + render_prompt(observation)
