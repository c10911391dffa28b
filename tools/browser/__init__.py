"""A confined headless Chromium for browser environments (MiniShop, MiniWoB++).

- `chromium`: finding the system's Chromium, the thread that owns Playwright,
  killing Chromium's process group.
- `host`: `ChromiumHost`, one Chromium process and its Playwright thread,
  every operation a job with a deadline, restarted on crash or hang, shared
  by up to ``contexts_per_browser`` environments (`acquire`, `release`).
- `confined`: `ConfinedChromium`, one browser context reachable only on
  allowed origins, in a (possibly shared) host.
- `session`: `BrowserSession`, a page with an element-id snapshot and actions
  (click, fill, select, press, scroll, back, goto, read text) whose mistakes
  come back as `PageActionError` messages, fit to show a model.
- `static`: `StaticServer`, a folder over HTTP on 127.0.0.1 (`loopback`: the
  server lifecycle it shares with MiniShop's pages).
- `tools`: `BrowserToolkit`, the actions as LangChain tools bound to a session.

Playwright is the optional ``browser`` extra; nothing here imports it at
module import time.
"""
