"""A confined headless Chromium for browser environments (MiniShop, MiniWoB++).

- `chromium`: finding the system's Chromium, the thread that owns Playwright,
  killing Chromium's process group.
- `confined`: `ConfinedChromium`, one Chromium reachable only on allowed
  origins, every operation a job with a deadline, restarted on crash or hang.
- `session`: `BrowserSession`, a page with an element-id snapshot and actions
  (click, fill, select, press, scroll, back, goto, read text) whose mistakes
  come back as `PageActionError` messages, fit to show a model.
- `static`: `StaticServer`, a folder over HTTP on 127.0.0.1.

Playwright is the optional ``browser`` extra; nothing here imports it at
module import time.
"""
