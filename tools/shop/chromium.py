"""Chromium and Playwright plumbing, now shared by every browser environment.

Kept so that existing imports keep working; the code lives in
`archer_agents.tools.browser.chromium`.
"""

from __future__ import annotations

from archer_agents.tools.browser.chromium import (
    CHROMIUM_ENV_VAR,
    CHROMIUM_FLAGS,
    CHROMIUM_NAMES,
    INSTALL_PLAYWRIGHT,
    PlaywrightThread,
    find_chromium,
    is_playwright_error,
    kill_process_group,
    require_playwright,
)

__all__ = [
    "CHROMIUM_ENV_VAR",
    "CHROMIUM_FLAGS",
    "CHROMIUM_NAMES",
    "INSTALL_PLAYWRIGHT",
    "PlaywrightThread",
    "find_chromium",
    "is_playwright_error",
    "kill_process_group",
    "require_playwright",
]
