"""Gymnasium text environments built on LangChain tools (``archer/...-v0`` ids).

Your own tools become an environment with `register_tool_env` (or
`make_tool_env` for one unregistered instance): see
`archer_agents.environments.from_tools`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from archer_agents.environments.registration import register_all, registered_ids

register_all()

_LAZY = {
    "register_tool_env": "archer_agents.environments.from_tools",
    "make_tool_env": "archer_agents.environments.from_tools",
    "ToolEnvSpec": "archer_agents.environments.from_tools",
    "ToolTask": "archer_agents.environments.tool_env",
    "CallRecord": "archer_agents.environments.tool_env",
    "ToolCallingEnv": "archer_agents.environments.tool_env",
}
"""Names loaded on first use, so that registering the ids stays cheap."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


if TYPE_CHECKING:
    from archer_agents.environments.from_tools import (
        ToolEnvSpec,
        make_tool_env,
        register_tool_env,
    )
    from archer_agents.environments.tool_env import CallRecord, ToolCallingEnv, ToolTask

__all__ = [
    "CallRecord",
    "ToolCallingEnv",
    "ToolEnvSpec",
    "ToolTask",
    "make_tool_env",
    "register_all",
    "register_tool_env",
    "registered_ids",
]
