"""Text for training the embedded model's tokenizer: the environments' own words.

Scripted agents of every kind play each environment for a few episodes; every
observation and utterance they produce becomes tokenizer training text, so the
tokenizer covers exactly the language the policy will read and write.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from archer_agents.environments.base import TextEnv
from archer_agents.training.rollout import make_env_factory

logger = logging.getLogger(__name__)

BROWSER_SUFFIX = "Browser-v0"


def default_corpus_env_ids() -> list[str]:
    """Every registered archer environment except browser twins (same text, slower)."""
    from archer_agents.environments import registered_ids

    return [env_id for env_id in registered_ids() if not env_id.endswith(BROWSER_SUFFIX)]


def environment_corpus(
    env_ids: Sequence[str] | None = None, *, episodes_per_kind: int = 20, seed: int = 0
) -> list[str]:
    """Observations and utterances of scripted play in each environment.

    One environment instance per id plays every scripted kind on both splits
    (building an environment can mean generating a database or a catalog).
    """
    texts: list[str] = []
    for env_id in env_ids or default_corpus_env_ids():
        env = make_env_factory(env_id)()
        base = env.unwrapped
        if not isinstance(base, TextEnv):
            env.close()
            continue
        for kind in base.scripted_kinds:
            agent = base.make_scripted_agent(kind, seed=seed)
            for split in ("train", "test"):
                for episode in range(episodes_per_kind):
                    observation, info = env.reset(seed=seed + episode, options={"split": split})
                    agent.reset(observation, info)
                    done = False
                    while not done:
                        action = agent.act(observation)
                        texts.append(action)
                        observation, _, terminated, truncated, _ = env.step(action)
                        done = terminated or truncated
                    texts.append(observation)
        env.close()
        logger.info("corpus: %s gives %d texts so far", env_id, len(texts))
    return texts
