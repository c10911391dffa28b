"""Text for training the embedded model's tokenizer: the environments' own words.

Scripted agents of every kind play each environment for a few episodes; every
observation and utterance they produce becomes tokenizer training text, so the
tokenizer covers exactly the language the policy will read and write.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from archer_agents.environments.base import TextEnv
from archer_agents.training.rollout import ScriptedActor, collect, make_env_factory

logger = logging.getLogger(__name__)

BROWSER_SUFFIX = "Browser-v0"


def default_corpus_env_ids() -> list[str]:
    """Every registered archer environment except browser twins (same text, slower)."""
    from archer_agents.environments import registered_ids

    return [env_id for env_id in registered_ids() if not env_id.endswith(BROWSER_SUFFIX)]


def environment_corpus(
    env_ids: Sequence[str] | None = None, *, episodes_per_kind: int = 40, seed: int = 0
) -> list[str]:
    """Observations and utterances of scripted play in each environment."""
    texts: list[str] = []
    for env_id in env_ids or default_corpus_env_ids():
        factory = make_env_factory(env_id)
        probe = factory()
        kinds = probe.unwrapped.scripted_kinds if isinstance(probe.unwrapped, TextEnv) else ()
        probe.close()
        for kind in kinds:
            for split in ("train", "test"):
                result = collect(
                    factory,
                    ScriptedActor(kind, seed=seed),
                    episodes_per_kind,
                    num_envs=8,
                    split=split,
                    seed=seed,
                )
                for episode in result.episodes:
                    for transition in episode.transitions:
                        texts.append(transition.action)
                    if episode.transitions:
                        texts.append(episode.transitions[-1].next_observation)
        logger.info("corpus: %s gives %d texts so far", env_id, len(texts))
    return texts
