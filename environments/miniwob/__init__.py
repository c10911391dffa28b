"""MiniWoB++ tasks in real headless Chromium (see `archer_agents.environments.miniwob.env`)."""
