"""A tau-bench-style retail support domain: a generated database and its LangChain tools.

- `generate_database(seed, size)`: users, products with variants, and orders;
- `SupportStore` / `build_support_tools(store)`: the desk's read and write tools;
- `POLICY`: the rules an agent working the desk must follow.
"""

from archer_agents.tools.support.generate import SIZES, DatabaseSize, generate_database
from archer_agents.tools.support.models import CANCEL_REASONS, Database
from archer_agents.tools.support.policy import POLICY
from archer_agents.tools.support.store import SupportStore
from archer_agents.tools.support.tools import (
    RESPOND,
    TRANSFER,
    WRITE_TOOLS,
    build_support_tools,
    replay,
)

__all__ = [
    "CANCEL_REASONS",
    "POLICY",
    "RESPOND",
    "SIZES",
    "TRANSFER",
    "WRITE_TOOLS",
    "Database",
    "DatabaseSize",
    "SupportStore",
    "build_support_tools",
    "generate_database",
    "replay",
]
