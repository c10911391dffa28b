"""archer-agents: train LangChain agents with ArCHer, hierarchical multi-turn RL.

The names users need import from here, lazily: ``import archer_agents`` loads
none of torch, transformers or LangChain until one of them is used, and
registers no environment. The ``archer/...`` Gymnasium ids are registered by
importing `archer_agents.environments` (the command line does it for you).

The package, by role (arrows point one way; import-linter checks them):

- `archer_agents.data`: the episode schema, JSONL logs, statistics.
- `archer_agents.formats`: prompt rendering and tool-call parsing.
- `archer_agents.policies`: the Policy protocol, local and server policies.
- `archer_agents.critic`: the utterance-level critic and its text encoders.
- `archer_agents.langchain`: chat model, agent, recorder, LangSmith import.
- `archer_agents.serving`: the OpenAI-compatible local server, vLLM.
- `archer_agents.tools`, `archer_agents.environments`: tools and the
  Gymnasium environments built on them.
- `archer_agents.training`: the trainer, ArCHer and its baselines.
- `archer_agents.cli`: the ``archer`` command.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "SCHEMA_VERSION": "archer_agents.data.schema",
    "Episode": "archer_agents.data.schema",
    "Transition": "archer_agents.data.schema",
    "EpisodeWriter": "archer_agents.data.episode_log",
    "iter_episodes": "archer_agents.data.episode_log",
    "read_episodes": "archer_agents.data.episode_log",
    "Generation": "archer_agents.policies.protocol",
    "Policy": "archer_agents.policies.protocol",
    "SamplingParams": "archer_agents.policies.protocol",
    "LocalPolicy": "archer_agents.policies.local_policy",
    "ArcherChatModel": "archer_agents.langchain.chat_model",
    "EpisodeRecorder": "archer_agents.langchain.recorder",
    "load_agent": "archer_agents.langchain.agent",
    "ToolCallingEnv": "archer_agents.environments.tool_env",
    "ToolTask": "archer_agents.environments.tool_env",
    "register_tool_env": "archer_agents.environments.from_tools",
    "make_tool_env": "archer_agents.environments.from_tools",
    "Archer": "archer_agents.training.algorithms.archer",
    "ArcherConfig": "archer_agents.training.algorithms.archer",
    "Trainer": "archer_agents.training.trainer",
    "TrainerConfig": "archer_agents.training.trainer_config",
}

__all__ = [
    "SCHEMA_VERSION",
    "Archer",
    "ArcherChatModel",
    "ArcherConfig",
    "Episode",
    "EpisodeRecorder",
    "EpisodeWriter",
    "Generation",
    "LocalPolicy",
    "Policy",
    "SamplingParams",
    "ToolCallingEnv",
    "ToolTask",
    "Trainer",
    "TrainerConfig",
    "Transition",
    "iter_episodes",
    "load_agent",
    "make_tool_env",
    "read_episodes",
    "register_tool_env",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'archer_agents' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from archer_agents.data.episode_log import EpisodeWriter, iter_episodes, read_episodes
    from archer_agents.data.schema import SCHEMA_VERSION, Episode, Transition
    from archer_agents.environments.from_tools import make_tool_env, register_tool_env
    from archer_agents.environments.tool_env import ToolCallingEnv, ToolTask
    from archer_agents.langchain.agent import load_agent
    from archer_agents.langchain.chat_model import ArcherChatModel
    from archer_agents.langchain.recorder import EpisodeRecorder
    from archer_agents.policies.local_policy import LocalPolicy
    from archer_agents.policies.protocol import Generation, Policy, SamplingParams
    from archer_agents.training.algorithms.archer import Archer, ArcherConfig
    from archer_agents.training.trainer import Trainer
    from archer_agents.training.trainer_config import TrainerConfig
