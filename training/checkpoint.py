"""Checkpoints that survive a crash at any moment, and the RNG state that makes resuming exact.

A training run is killed sooner or later (preemption, out of memory, a
power cut), often while it is writing. So a checkpoint is never written in
place: each file goes to a temporary name in its final directory, is fsynced,
then renamed over the final name with `os.replace` (atomic on POSIX), and the
directory is fsynced so the rename itself is durable. The order is:

1. ``step-000123/state.pt``: the state, via `torch.save`;
2. ``step-000123/MANIFEST.json``: sizes and SHA-256 of the files above;
3. ``latest``: the name of the newest complete checkpoint.

A checkpoint counts only once its manifest exists and matches the files, so a
crash before step 2 leaves a folder that `load_latest` recognises as partial,
and a crash before step 3 leaves ``latest`` naming the previous checkpoint.
A corrupt or partial checkpoint is skipped with a warning in favour of the
previous good one. The newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
MANIFEST_FILE = "MANIFEST.json"
LATEST_FILE = "latest"
MANIFEST_FORMAT = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")
_TMP_MARK = ".tmp-"


class CheckpointError(RuntimeError):
    """Checkpoints exist but none of them can be loaded; the message is one line with the fix."""

    problems: tuple[str, ...] = ()
    """Each unusable checkpoint folder and why (``"step-000001: no manifest ..."``)."""


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    step: int
    path: Path
    state: dict[str, Any]


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


# -------------------------------------------------------- durable writes ---


def _fsync_dir(directory: Path) -> None:
    """Make renames and new entries in ``directory`` durable (a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` via a fsynced temporary file in the same directory and `os.replace`."""
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path``: a reader sees the old file or the new one, never a part."""
    _atomic_write(Path(path), lambda handle: handle.write(text.encode()))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_state(checkpoint_dir: Path, state: dict[str, Any]) -> None:
    _atomic_write(checkpoint_dir / STATE_FILE, lambda handle: torch.save(state, handle))


def _write_manifest(checkpoint_dir: Path, step: int) -> None:
    files = {}
    for name in (STATE_FILE,):
        path = checkpoint_dir / name
        files[name] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    manifest = {
        "format": MANIFEST_FORMAT,
        "step": step,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "files": files,
    }
    payload = json.dumps(manifest, indent=2).encode()
    _atomic_write(checkpoint_dir / MANIFEST_FILE, lambda handle: handle.write(payload))


def _write_latest(directory: Path, name: str) -> None:
    _atomic_write(directory / LATEST_FILE, lambda handle: handle.write(f"{name}\n".encode()))


# ------------------------------------------------------------ inspection ---


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every ``step-*`` folder, complete or not, oldest first."""
    root = Path(directory)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def verify_checkpoint(checkpoint_dir: str | Path) -> str | None:
    """None when the folder holds a complete checkpoint, else why it does not."""
    folder = Path(checkpoint_dir)
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        return "no manifest (the write did not finish)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"unreadable manifest ({error})"
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != expected["size"]:
            return f"{name} has {size} bytes, the manifest says {expected['size']}"
        if _sha256(path) != expected["sha256"]:
            return f"{name} does not match its SHA-256 in the manifest"
    return None


def _read_latest(root: Path) -> str | None:
    try:
        name = (root / LATEST_FILE).read_text().strip()
    except OSError:
        return None
    return name if _STEP_DIR.match(name) else None


# ---------------------------------------------------------------- saving ---


def save_checkpoint(
    directory: str | Path, state: dict[str, Any], *, step: int, keep: int = 3
) -> Path:
    """Write ``state`` as checkpoint ``step`` under ``directory``; return its folder.

    Args:
        directory: the run's checkpoint folder (created if missing).
        state: anything `torch.save` takes: state dicts of the policy, critic,
            target critic and optimisers, the replay buffer's `state_dict`,
            `capture_rng_state()`, counters.
        step: the training step this state belongs to (names the folder).
        keep: how many complete checkpoints to keep, this one included.

    Folders of steps after ``step`` belong to a history that a resume abandoned,
    and are removed.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    name = step_dir_name(step)
    folder = root / name
    if folder.exists():
        # Invalidate before overwriting, so a crash mid-overwrite leaves a partial folder.
        with contextlib.suppress(FileNotFoundError):
            (folder / MANIFEST_FILE).unlink()
        _fsync_dir(folder)
        _remove_leftovers(folder)
    else:
        folder.mkdir()
        _fsync_dir(root)
    _write_state(folder, state)
    _write_manifest(folder, step)
    _write_latest(root, name)
    logger.info("saved checkpoint %s", folder)
    _prune(root, step, keep)
    return folder


def _prune(root: Path, step: int, keep: int) -> None:
    kept = 1  # the checkpoint just written
    for other_step, folder in reversed(list_checkpoints(root)):
        if other_step == step:
            continue
        if other_step > step:
            logger.warning(
                "removing checkpoint %s: it is newer than step %d, from a run history "
                "that resuming abandoned",
                folder,
                step,
            )
        elif kept < keep and verify_checkpoint(folder) is None:
            kept += 1
            continue
        shutil.rmtree(folder, ignore_errors=True)
    _remove_leftovers(root)


def _remove_leftovers(directory: Path) -> None:
    """Delete temporary files that a killed writer left behind (one writer per directory)."""
    for leftover in directory.glob(f".*{_TMP_MARK}*"):
        with contextlib.suppress(OSError):
            leftover.unlink()


# --------------------------------------------------------------- loading ---


def load_checkpoint(
    checkpoint_dir: str | Path,
    *,
    map_location: str | torch.device = "cpu",
    weights_only: bool = True,
) -> Checkpoint:
    """Load one checkpoint folder after checking it against its manifest."""
    folder = Path(checkpoint_dir)
    problem = verify_checkpoint(folder)
    if problem is not None:
        raise CheckpointError(f"checkpoint {folder} is not usable: {problem}")
    return _load_verified(folder, map_location, weights_only)


def _load_verified(
    folder: Path, map_location: str | torch.device, weights_only: bool
) -> Checkpoint:
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    state = torch.load(folder / STATE_FILE, map_location=map_location, weights_only=weights_only)
    return Checkpoint(step=int(manifest["step"]), path=folder, state=state)


def load_latest(
    directory: str | Path,
    *,
    map_location: str | torch.device = "cpu",
    weights_only: bool = True,
) -> Checkpoint | None:
    """The newest good checkpoint under ``directory``, or None when there is none at all.

    Follows the ``latest`` pointer; if what it names is partial or corrupt
    (or the pointer is missing), falls back to the newest good checkpoint
    before it, with a warning. ``weights_only=True`` refuses pickled code;
    pass False only for checkpoints you wrote yourself that hold other
    Python objects.

    Raises `CheckpointError` when checkpoint folders exist but none is usable,
    rather than letting a resumed run silently start from scratch.
    """
    root = Path(directory)
    folders = list_checkpoints(root)
    if not folders:
        return None
    pointer = _read_latest(root)
    candidates = [folder for _, folder in reversed(folders)]
    if pointer is not None and (root / pointer).is_dir():
        pointed = root / pointer
        pointer_step = int(_STEP_DIR.match(pointer).group(1))  # type: ignore[union-attr]
        candidates = [pointed] + [f for s, f in reversed(folders) if s < pointer_step]
    else:
        logger.warning(
            "no valid %r pointer in %s; using the newest complete checkpoint", LATEST_FILE, root
        )

    skipped: list[str] = []
    for folder in candidates:
        problem = verify_checkpoint(folder)
        if problem is None:
            try:
                checkpoint = _load_verified(folder, map_location, weights_only)
            except Exception as error:  # a file that matches its manifest but will not load
                problem = f"torch.load failed ({type(error).__name__}: {error})"
            else:
                if skipped:
                    logger.warning(
                        "skipped unusable checkpoint(s) %s; resuming from %s",
                        "; ".join(skipped),
                        folder,
                    )
                return checkpoint
        skipped.append(f"{folder.name}: {_one_line(problem)}")
    unusable = CheckpointError(
        f"no usable checkpoint in {root} ({'; '.join(skipped)}): delete the unusable step "
        "folder(s) to start afresh, or point the run at another checkpoint directory"
    )
    unusable.problems = tuple(skipped)
    raise unusable


def _one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line, at most ``limit`` characters (torch errors span several)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------ RNG states ---


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states of Python's `random`, NumPy and torch (CPU and CUDA).

    Plain values and tensors only, so a checkpoint holding it loads with
    ``weights_only=True``.
    """
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": [int(key) for key in keys],
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what `capture_rng_state` returned, so the next draws repeat."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    saved = state["numpy"]
    np.random.set_state(
        (
            saved["name"],
            np.asarray(saved["keys"], dtype=np.uint32),
            saved["position"],
            saved["has_gauss"],
            saved["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(state["cuda"]):
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            logger.warning(
                "checkpoint holds CUDA RNG states for %d device(s) but %d are visible; "
                "CUDA random draws will differ from the original run",
                len(state["cuda"]),
                torch.cuda.device_count() if torch.cuda.is_available() else 0,
            )


__all__ = [
    "Checkpoint",
    "CheckpointError",
    "capture_rng_state",
    "list_checkpoints",
    "load_checkpoint",
    "load_latest",
    "restore_rng_state",
    "save_checkpoint",
    "verify_checkpoint",
    "write_text_atomic",
]
