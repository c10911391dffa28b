"""MiniShop: a small web shop, played as text or in headless Chromium."""
