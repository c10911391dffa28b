"""The replay buffer of utterance-level transitions that ArCHer's critic and actor sample.

ArCHer is off-policy at the utterance level: every transition collected so far
(up to a capacity; the authors' code keeps 100k) may train the critic, and the
actor draws its states from the same store. The buffer keeps whole
`Transition` objects, so the sampled token ids and their log-probabilities
travel with them, evicts the oldest first, and samples uniformly with
replacement from its own seeded generator. Its `state_dict` holds that
generator's state, so a run resumed from a checkpoint draws the same batches as
one that never stopped.

It also counts, per exact action text, how many stored transitions carry it:
`visit_counts` feeds the actor's guard against raising the probability of
utterances the critic has rarely seen (docs/algorithm.md, "Stability options"). The
count covers transitions currently stored, so it falls when they are evicted;
this keeps its memory bounded by the capacity and makes it describe what the
critic is trained on now.

In a run of several processes (`training.distributed`) every process holds
the same buffer with the same generator state, so all draw the same batch and
each keeps its own share of it: together they train on one batch of the
requested size, and the generator stays equal everywhere (one checkpoint
resumes them all).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from archer_agents.data.schema import Episode, Transition
from archer_agents.training.distributed import shard

logger = logging.getLogger(__name__)

STATE_VERSION = 2
"""Version 2 holds the transitions as JSON lines in one string; version 1 (a list of
dicts, slow to pickle at 100k transitions) still loads."""


class ReplayBuffer:
    """A FIFO store of transitions with seeded uniform sampling."""

    def __init__(self, capacity: int, seed: int | None = 0) -> None:
        """
        Args:
            capacity: most transitions kept; adding more evicts the oldest.
            seed: seed of the sampling generator; None draws one from the OS.
        """
        if capacity < 1:
            raise ValueError(f"replay buffer capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._storage: list[Transition] = []
        self._next = 0
        """Slot the next transition goes to once the buffer is full (the oldest one)."""
        self._rng = np.random.default_rng(seed)
        self._action_counts: Counter[str] = Counter()
        self.num_added = 0
        """Transitions ever added, evicted ones included."""

    def __len__(self) -> int:
        return len(self._storage)

    def add(self, transition: Transition) -> None:
        """Store one transition, evicting the oldest when full."""
        if not isinstance(transition, Transition):
            raise TypeError(
                f"ReplayBuffer stores archer_agents.data.schema.Transition, got "
                f"{type(transition).__name__}"
            )
        if len(self._storage) < self.capacity:
            self._storage.append(transition)
        else:
            evicted = self._storage[self._next]
            self._forget(evicted.action)
            self._storage[self._next] = transition
            self._next = (self._next + 1) % self.capacity
        self._action_counts[transition.action] += 1
        self.num_added += 1

    def extend(self, transitions: Iterable[Transition]) -> None:
        for transition in transitions:
            self.add(transition)

    def add_episode(self, episode: Episode) -> None:
        """Store every transition of ``episode``, in order."""
        self.extend(episode.transitions)

    def sample(self, batch_size: int) -> list[Transition]:
        """``batch_size`` transitions drawn uniformly, with replacement.

        In a run of several processes: this process's share of that batch
        (every world_size-th draw), so the processes split one batch between them.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not self._storage:
            raise ValueError("cannot sample from an empty replay buffer; add episodes first")
        indices = self._rng.integers(0, len(self._storage), size=batch_size)
        return [self._storage[index] for index in shard(indices.tolist())]

    def visit_count(self, action: str) -> int:
        """How many stored transitions have exactly this action text."""
        return self._action_counts.get(action, 0)

    def visit_counts(self, actions: Sequence[str]) -> torch.Tensor:
        """(B,) long tensor of `visit_count` for each action, for `actor_loss`'s guard."""
        return torch.tensor([self.visit_count(action) for action in actions], dtype=torch.long)

    def in_order(self) -> list[Transition]:
        """The stored transitions, oldest first."""
        if len(self._storage) < self.capacity:
            return list(self._storage)
        return self._storage[self._next :] + self._storage[: self._next]

    def _forget(self, action: str) -> None:
        self._action_counts[action] -= 1
        if self._action_counts[action] <= 0:
            del self._action_counts[action]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: contents in slot order, write slot, RNG state.

        Only plain Python values, so it loads with ``torch.load(weights_only=True)``.
        The transitions are one string of JSON lines: a checkpoint of 100k of
        them is written in about a second instead of five.
        """
        return {
            "version": STATE_VERSION,
            "capacity": self.capacity,
            "next": self._next,
            "num_added": self.num_added,
            "transitions_jsonl": "\n".join(t.model_dump_json() for t in self._storage),
            "rng_state": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict`'s output; the capacity must match this buffer's."""
        version = state.get("version")
        if version == 1:
            storage = [Transition.model_validate(t) for t in state["transitions"]]
        elif version == STATE_VERSION:
            lines = state["transitions_jsonl"]
            storage = [Transition.model_validate_json(line) for line in lines.split("\n") if line]
        else:
            raise ValueError(
                f"replay buffer state has version {version!r}, this release reads versions 1 "
                f"and {STATE_VERSION}"
            )
        if state["capacity"] != self.capacity:
            raise ValueError(
                f"replay buffer state has capacity {state['capacity']} but this buffer has "
                f"{self.capacity}; build ReplayBuffer(capacity={state['capacity']}) to resume"
            )
        if len(storage) > self.capacity:
            raise ValueError(
                f"replay buffer state holds {len(storage)} transitions, over its capacity "
                f"{self.capacity}"
            )
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng_state"]
        self._storage = storage
        self._next = int(state["next"])
        self.num_added = int(state["num_added"])
        self._rng = rng
        self._action_counts = Counter(t.action for t in storage)


__all__ = ["ReplayBuffer"]
