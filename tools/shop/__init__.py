"""MiniShop: a small web shop (catalog, BM25 search, pages, HTTP server, browser driver).

The text backend and the Chromium backend of the MiniShop environments share
everything here: one catalog, one state machine (`state`), one page model
(`pages`). Playwright is only imported by `browser`, inside the code that needs it;
the LangChain tools are in `tools`.
"""

from archer_agents.tools.shop.actions import ActionError, Command, Step, plan
from archer_agents.tools.shop.catalog import (
    Catalog,
    Goal,
    Product,
    PurchaseScore,
    score_purchase,
)
from archer_agents.tools.shop.generate import generate_catalog, load_catalog
from archer_agents.tools.shop.pages import Element, PageView, parse_observation
from archer_agents.tools.shop.search import BM25Index, ProductSearch
from archer_agents.tools.shop.state import BackendFailure, Purchase, ShopState, TextClient

__all__ = [
    "ActionError",
    "BM25Index",
    "BackendFailure",
    "Catalog",
    "Command",
    "Element",
    "Goal",
    "PageView",
    "Product",
    "ProductSearch",
    "Purchase",
    "PurchaseScore",
    "ShopState",
    "Step",
    "TextClient",
    "generate_catalog",
    "load_catalog",
    "parse_observation",
    "plan",
    "score_purchase",
]
