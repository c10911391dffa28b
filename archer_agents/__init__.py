"""archer-agents: train LangChain agents with ArCHer, hierarchical multi-turn RL.

Importing the package registers the ``archer/...`` Gymnasium environments
(lazily: no environment module is imported until ``gymnasium.make``).
"""

from archer_agents import environments as _environments  # noqa: F401  (registers ids)
from archer_agents.episode_log import EpisodeWriter, iter_episodes, read_episodes
from archer_agents.policy import Generation, Policy, SamplingParams
from archer_agents.schema import SCHEMA_VERSION, Episode, Transition

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "Episode",
    "EpisodeWriter",
    "Generation",
    "Policy",
    "SamplingParams",
    "Transition",
    "iter_episodes",
    "read_episodes",
]
