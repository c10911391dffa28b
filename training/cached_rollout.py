"""A rollout actor that keeps each running episode's prompt cache between turns.

The observation is the whole history, so turn t + 1's prompt is turn t's plus
one line. `PolicyActor` recomputes the whole history every turn (quadratic in
the episode's length); `CachedPolicyActor` keeps the keys and values of each
slot's last prompt (`LocalPolicy.generate_cached`) and computes only the new
line. The samples are distributed exactly as `PolicyActor`'s; a slot's cache is
dropped when its episode ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from archer_agents.environments.base import TextEnv
from archer_agents.policies.decoding import PromptCache
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import Generation, SamplingParams


class CachedPolicyActor:
    """Samples from a `LocalPolicy`, one batched call per turn, reusing each slot's history."""

    def __init__(self, policy: LocalPolicy, sampling: SamplingParams | None = None) -> None:
        self.policy = policy
        self.sampling = sampling or SamplingParams()
        self._caches: dict[int, PromptCache] = {}

    def begin(self, slot: int, env: TextEnv, observation: str, info: dict[str, Any]) -> None:
        self._caches.pop(slot, None)

    def act(self, slots: Sequence[int], observations: Sequence[str]) -> list[Generation]:
        caches = [self._caches.get(slot) for slot in slots]
        generations, fresh = self.policy.generate_cached(list(observations), caches, self.sampling)
        for slot, cache in zip(slots, fresh, strict=True):
            self._caches[slot] = cache
        return generations


__all__ = ["CachedPolicyActor"]
