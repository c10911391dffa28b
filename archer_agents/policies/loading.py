"""One loader for a saved policy, whatever folder holds it.

`load_policy` takes, and tells apart:

- a model folder (``archer init-model``, ``archer bc --out``, a trainer's saved
  policy: weights and tokenizer saved by `LocalPolicy.save`) or a hub id;
- an adapter folder (a LoRA adapter saved by `LocalPolicy.save`; its base model
  is read from the adapter's config);
- a training run directory (``archer train --out``): the policy the trainer
  saved inside it, ``RUN/policy``, which it rewrites with every checkpoint.

The command line (``--policy``) and `archer_agents.langchain.load_agent` both
load through it, so a folder that one accepts the other accepts too.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RUN_POLICY_DIR = "policy"
"""Where a training run keeps its newest policy (the trainer's ``POLICY_DIR``)."""
RUN_MARKERS = ("run.json", "checkpoints")
"""Either one marks a training run directory."""


def is_training_run(path: str | Path) -> bool:
    """Whether ``path`` is a training run directory (``run.json`` or ``checkpoints/`` inside)."""
    path = Path(path)
    return path.is_dir() and any((path / marker).exists() for marker in RUN_MARKERS)


def resolve_policy_path(source: str | Path) -> str | Path:
    """The model or adapter folder (or hub id) that ``source`` names; raises when there is none."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "latest").is_file() or (path / "state.pt").is_file():
            raise ValueError(
                f"{path} is a training checkpoint (optimiser and replay state), not a policy; "
                "pass the run directory (its policy/ is the newest checkpoint's) instead"
            )
        if is_training_run(path):
            inside = path / RUN_POLICY_DIR
            if not inside.is_dir():
                raise FileNotFoundError(
                    f"{path} is a training run without a saved policy yet ({inside} is written "
                    "with the first checkpoint); wait for it, or pass a model folder"
                )
            return inside
        return path
    if path.exists():
        raise ValueError(f"{path} is a file; a policy is a folder (model, adapter or training run)")
    if _looks_like_hub_id(text):
        return text
    raise FileNotFoundError(
        f"no policy at {text!r}: expected a model or adapter folder written by LocalPolicy.save "
        "(`archer init-model`, `archer bc --out`), a training run (`archer train --out`) or "
        "a hub id"
    )


def load_policy(source: str | Path, **kwargs: Any) -> Any:
    """The `LocalPolicy` saved in a model folder, an adapter folder or a training run.

    Keyword arguments go to `LocalPolicy.from_pretrained` (``seed``, ``device``,
    ``dtype``, ``version``); the version defaults to the folder's name.
    """
    from archer_agents.policies.local_policy import LocalPolicy

    resolved = resolve_policy_path(source)
    kwargs.setdefault("version", Path(str(source)).name or str(source))
    logger.info("loading the policy in %s", resolved)
    return LocalPolicy.from_pretrained(resolved, **kwargs)


def _looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and os.sep not in name[:1]


__all__ = ["is_training_run", "load_policy", "resolve_policy_path"]
