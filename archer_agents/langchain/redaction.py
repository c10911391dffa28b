"""Masking personal data in episodes before they are written.

A `Redactor` maps a text to the same text with personal data masked;
`redact_patterns` builds one from ``(regex, replacement)`` pairs.
`redact_episode` applies a redactor to every text of an episode (observations,
actions, next observations, and the strings inside ``info`` and ``metadata``)
and drops the token ids of any observation or action it changed, since those
ids spell the original text. `EpisodeRecorder` and `langsmith_import` both
redact through it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from archer_agents.data.schema import Episode

Redactor = Callable[[str], str]
"""Maps a text to the same text with personal data masked."""


def redact_episode(episode: Episode, redact: Redactor) -> Episode:
    """A copy with every text masked; token ids of changed texts dropped."""
    transitions = []
    for t in episode.transitions:
        observation = redact(t.observation)
        action = redact(t.action)
        updates: dict[str, Any] = {
            "observation": observation,
            "action": action,
            "next_observation": redact(t.next_observation),
            "info": _redact_tree(t.info, redact),
        }
        if observation != t.observation:
            updates["prompt_token_ids"] = None
        if action != t.action:
            updates["action_token_ids"] = None
            updates["action_logprobs"] = None
        transitions.append(t.model_copy(update=updates))
    return episode.model_copy(
        update={"transitions": transitions, "metadata": _redact_tree(episode.metadata, redact)}
    )


def _redact_tree(value: Any, redact: Redactor) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_tree(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_tree(v, redact) for v in value]
    return value


def redact_patterns(patterns: Sequence[tuple[str, str]]) -> Redactor:
    """A redactor from ``(regex, replacement)`` pairs, applied in order.

    Example: ``redact_patterns([(r"[\\w.+-]+@[\\w-]+\\.[\\w.]+", "<email>")])``.
    """
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in patterns]

    def redact(text: str) -> str:
        for pattern, replacement in compiled:
            text = pattern.sub(replacement, text)
        return text

    return redact
