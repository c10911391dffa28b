"""Any site as an environment: a browser task file played in headless Chromium.

- `taskfile`: the task file (YAML or JSON) and its pydantic model;
- `env`: `BrowserTaskEnv`, the environment (``archer/BrowserTask-v0``, or the
  file's path wherever the command line takes an environment id);
- `agents`: the file's scripted solution as an expert, and a random agent;
- ``test_site/`` and ``tasks/``: a small test site and example task files for it
  (`example_tasks`).
"""

from __future__ import annotations

from pathlib import Path

EXAMPLES_DIR = Path(__file__).parent / "tasks"
SITE_DIR = Path(__file__).parent / "test_site"


def example_tasks() -> dict[str, Path]:
    """The shipped example task files, by name (``contact-form``: ``.../contact-form.yaml``)."""
    return {
        path.stem: path
        for path in sorted(EXAMPLES_DIR.iterdir())
        if path.suffix in (".yaml", ".yml", ".json")
    }
