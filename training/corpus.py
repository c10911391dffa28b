"""Text for training the embedded model's tokenizer: the environments' own words.

Scripted agents of every kind play each environment for a few episodes; every
observation and utterance they produce becomes tokenizer training text, so the
tokenizer covers exactly the language the policy will read and write.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from archer_agents.environments.base import TextEnv
from archer_agents.training.rollout import make_env_factory

logger = logging.getLogger(__name__)

BROWSER_SUFFIX = "Browser-v0"


def default_corpus_env_ids() -> list[str]:
    """Every registered archer environment except browser twins (same text, slower)."""
    from archer_agents.environments import registered_ids

    return [env_id for env_id in registered_ids() if not env_id.endswith(BROWSER_SUFFIX)]


def environment_corpus(
    env_ids: Sequence[str] | None = None,
    *,
    episodes_per_kind: int = 20,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
) -> list[str]:
    """Observations and utterances of scripted play in each environment.

    One environment instance per id plays every scripted kind on both splits
    (building an environment can mean generating a database or a catalog). An
    id may be ``module:id`` (an environment of your own, `make_env_factory`);
    ``env_kwargs`` go to every environment's constructor.
    """
    texts: list[str] = []
    for env_id in env_ids or default_corpus_env_ids():
        env = make_env_factory(env_id, **dict(env_kwargs or {}))()
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


TEXT_CHUNK_CHARS = 65_536
"""Text files are cut at line ends into pieces of about this size for the tokenizer trainer."""


def text_file_corpus(paths: Sequence[str | Path]) -> list[str]:
    """The lines of text files, in pieces of whole lines (for ``archer init-model --text``)."""
    texts: list[str] = []
    for path in paths:
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"no text file at {source}; pass an existing UTF-8 file")
        piece: list[str] = []
        size = 0
        for line in source.read_text(encoding="utf-8", errors="replace").splitlines(True):
            piece.append(line)
            size += len(line)
            if size >= TEXT_CHUNK_CHARS:
                texts.append("".join(piece))
                piece, size = [], 0
        if piece:
            texts.append("".join(piece))
        logger.info("corpus: %s gives %d texts so far", source, len(texts))
    return texts
