"""Named training settings: ``archer train --preset NAME``.

A preset is a run config's defaults (``trainer`` and ``algorithm`` sections,
as in a ``--config`` file) with a name and the reason to use it. ``--config``
and ``--set`` apply on top of it, in that order. The table in
docs/reference/presets.md is generated from `PRESETS` (`presets_markdown`).

`actor_stall_reasons` names the settings under which a run cannot move the
actor (the warm-up outlasts the run, no actor steps): such a run trains a
critic only, which is rarely what its author meant.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preset:
    """Settings for one algorithm, with what they are for."""

    name: str
    algo: str
    summary: str
    when: str
    trainer: Mapping[str, Any] = field(default_factory=dict)
    algorithm: Mapping[str, Any] = field(default_factory=dict)

    def defaults(self) -> dict[str, dict[str, Any]]:
        """The preset as run-config defaults: ``{"trainer": {...}, "algorithm": {...}}``."""
        return {"trainer": dict(self.trainer), "algorithm": dict(self.algorithm)}


CPU_SMALL = Preset(
    name="cpu-small",
    algo="archer",
    summary="The quickstart's ArCHer phase: a sub-million-parameter model on a few CPU cores.",
    when=(
        "Small models (the embedded demo model) on a CPU, from a behaviour-cloned policy; "
        "`archer quickstart` trains with exactly these settings (its --archer-minutes sets "
        "the time budget)."
    ),
    trainer={
        "iterations": 1000,
        "episodes_per_iteration": 128,
        "num_envs": 128,
        "eval_every": 10,
        "eval_episodes": 100,
        "checkpoint_every": 10,
        "keep_checkpoints": 2,
        "time_budget_s": 420.0,
    },
    algorithm={
        "encoder": "hashing-lines",
        "critic_lr": 3e-3,
        "critic_steps": 3,
        "critic_batch_size": 64,
        "critic_batches": "episodes",
        "polyak_tau": 0.3,
        "actor_lr": 3e-4,
        "actor_steps": 1,
        "actor_batch_size": 1024,
        "actor_states": "latest",
        "advantage_estimator": "gae",
        "gae_lambda": 0.9,
        "normalize_advantages": True,
        "advantage_clip": 3.0,
        "min_visits": 10,
        "invalid_action_penalty": 1.0,
        "warmup_iterations": 3,
        "max_new_tokens": 12,
    },
)

CPU_TINY = Preset(
    name="cpu-tiny",
    algo="archer",
    summary="Two iterations of a handful of episodes: every part of a run, in seconds.",
    when=(
        "Smoke tests and trying a new environment end to end (rollouts, critic, actor, "
        "evaluation, checkpoint, saved policy); it learns nothing."
    ),
    trainer={
        "iterations": 2,
        "episodes_per_iteration": 4,
        "num_envs": 4,
        "eval_every": 0,
        "eval_episodes": 4,
        "checkpoint_every": 1,
        "keep_checkpoints": 1,
        "tensorboard": False,
    },
    algorithm={
        **CPU_SMALL.algorithm,
        "critic_steps": 1,
        "critic_batch_size": 4,
        "actor_batch_size": 16,
        "micro_batch_size": 16,
        "min_visits": 0,
        "warmup_iterations": 0,
    },
)

PAPER = Preset(
    name="paper",
    algo="archer",
    summary="The authors' public code's defaults (ArcherConfig's and TrainerConfig's).",
    when=(
        "GPT-2 to 7B models on a GPU, as in the paper; the learning rates are for models of "
        "that size (docs/algorithm.md)."
    ),
    trainer={
        "iterations": 100,
        "episodes_per_iteration": 128,
        "num_envs": 64,
        "eval_every": 10,
        "eval_episodes": 200,
        "checkpoint_every": 5,
    },
    algorithm={
        "encoder": "hashing",
        "critic_lr": 2e-5,
        "critic_steps": 50,
        "critic_batch_size": 256,
        "critic_batches": "transitions",
        "gamma": 0.95,
        "polyak_tau": 0.1,
        "actor_lr": 1e-5,
        "actor_steps": 3,
        "actor_batch_size": 256,
        "actor_states": "buffer",
        "advantage_estimator": "q",
        "warmup_iterations": 10,
        "max_new_tokens": 32,
        "temperature": 1.0,
    },
)

GPU_SMALL = Preset(
    name="gpu-small",
    algo="archer",
    summary="cpu-small's stable options with the paper's batch sizes, for a small model on a GPU.",
    when=(
        "A model of tens to hundreds of millions of parameters on one GPU, from a "
        "behaviour-cloned policy, when the paper's settings move too slowly."
    ),
    trainer={
        "iterations": 200,
        "episodes_per_iteration": 128,
        "num_envs": 128,
        "eval_every": 10,
        "eval_episodes": 200,
        "checkpoint_every": 10,
    },
    algorithm={
        "critic_lr": 1e-4,
        "critic_steps": 20,
        "critic_batch_size": 256,
        "critic_batches": "episodes",
        "actor_lr": 1e-5,
        "actor_steps": 2,
        "actor_batch_size": 256,
        "advantage_estimator": "gae",
        "gae_lambda": 0.9,
        "normalize_advantages": True,
        "advantage_clip": 3.0,
        "min_visits": 10,
        "warmup_iterations": 5,
    },
)

PRESETS: dict[str, Preset] = {p.name: p for p in (CPU_TINY, CPU_SMALL, GPU_SMALL, PAPER)}
"""Every preset by name, smallest first."""


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name raises with the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown preset {name!r}; choose one of {', '.join(PRESETS)} "
            "(archer train --list-presets)"
        ) from None


def actor_stall_reasons(trainer: Any, algorithm: Any) -> list[str]:
    """Why a run with these configs cannot change the actor (empty when it can).

    Checks the settings algorithms share by name: ``warmup_iterations`` against
    the trainer's ``iterations``, and ``actor_steps``. Each reason is also
    logged as a warning.
    """
    reasons = []
    iterations = getattr(trainer, "iterations", None)
    warmup = getattr(algorithm, "warmup_iterations", None)
    if iterations is not None and warmup is not None and warmup >= iterations:
        reasons.append(
            f"warmup_iterations={warmup} >= iterations={iterations}: the actor never starts "
            "(lower warmup_iterations or raise trainer.iterations)"
        )
    steps = getattr(algorithm, "actor_steps", None)
    if steps == 0:
        reasons.append("actor_steps=0: the critic trains alone (raise actor_steps)")
    for reason in reasons:
        logger.warning("this run cannot move the actor: %s", reason)
    return reasons


def presets_markdown() -> str:
    """The presets as Markdown: each one's use, then one settings table of them all."""
    lines = []
    for preset in PRESETS.values():
        lines += [f"### `{preset.name}`", "", f"{preset.summary} {preset.when}", ""]
    names = list(PRESETS)
    lines += ["## Settings", ""]
    lines += ["| setting | " + " | ".join(f"`{n}`" for n in names) + " |"]
    lines += ["|---|" + "---|" * len(names)]
    for section in ("trainer", "algorithm"):
        keys: list[str] = []
        for preset in PRESETS.values():
            keys += [k for k in getattr(preset, section) if k not in keys]
        for key in keys:
            cells = []
            for preset in PRESETS.values():
                values = getattr(preset, section)
                cells.append(f"`{values[key]!r}`" if key in values else "default")
            lines.append(f"| `{section}.{key}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


__all__ = [
    "PRESETS",
    "Preset",
    "actor_stall_reasons",
    "get_preset",
    "presets_markdown",
]


if __name__ == "__main__":  # python -m archer_agents.training.presets > the table's page
    print(presets_markdown(), end="")
