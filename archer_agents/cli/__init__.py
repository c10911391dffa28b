"""The ``archer`` command line: one module per command group, assembled in `app`."""

from archer_agents.cli.app import main

__all__ = ["main"]
