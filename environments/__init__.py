"""Gymnasium text environments built on LangChain tools (``archer/...-v0`` ids)."""

from archer_agents.environments.registration import register_all, registered_ids

register_all()

__all__ = ["register_all", "registered_ids"]
