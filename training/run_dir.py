"""A training run's directory: what it holds, opening it, cutting it back, loading its policy.

A run directory holds::

    run.json            what the run is (algorithm, environment, model, configs)
    episodes.jsonl      every episode collected, one a line (fsynced per episode)
    metrics.jsonl       one record per iteration; learning_curve.png draws it
    tensorboard/        the same scalars for TensorBoard
    checkpoints/        step-NNNNNN/ (atomic, see training.checkpoint), latest
    policy/             the policy as of the last checkpoint, loadable as a model dir

Resuming restores the newest good checkpoint. Episodes and metrics written
after that checkpoint belong to an iteration that never finished: they are
moved to ``episodes.abandoned.jsonl`` / ``metrics.abandoned.jsonl`` (never
deleted) and the logs cut back to the checkpoint, so the log holds exactly what
the algorithm has seen. The trainer (`training.trainer`) runs the loop; this
module only knows the files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from archer_agents.data.episode_log import EpisodeWriter
from archer_agents.training.algorithm import Algorithm
from archer_agents.training.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    load_latest,
    write_text_atomic,
)

if TYPE_CHECKING:
    from archer_agents.policies.local_policy import LocalPolicy

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
RUN_FILE = "run.json"
EPISODES_FILE = "episodes.jsonl"
METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "learning_curve.png"
CHECKPOINT_DIR = "checkpoints"
POLICY_DIR = "policy"
TENSORBOARD_DIR = "tensorboard"


class RunDirError(CheckpointError, ValueError):
    """The run directory cannot be opened as asked; the message is one line with the fix.

    A `CheckpointError`, so commands show it as one line; a `ValueError` too, as
    these mismatches were before.
    """


@dataclass(frozen=True)
class RunDir:
    """The files of one run directory (see the module docstring)."""

    path: Path

    @property
    def episodes_path(self) -> Path:
        return self.path / EPISODES_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def curve_path(self) -> Path:
        return self.path / CURVE_FILE

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD_DIR

    def open(self, resume: bool, algorithm_name: str, info: dict[str, Any]) -> Checkpoint | None:
        """Create or check the directory; the checkpoint to resume from, if any.

        A fresh run writes ``info`` to ``run.json``. Without ``resume`` a
        directory that already holds checkpoints is refused, and so is one with
        logs but no checkpoint; a checkpoint of another format or algorithm is
        refused too. When checkpoint folders exist but none is usable (a crash
        tore the run's first checkpoint), `CheckpointError` says how to start
        over rather than silently training from scratch over the old logs.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            checkpoint = load_latest(self.checkpoint_dir) if self.checkpoint_dir.exists() else None
        except CheckpointError as error:
            problems = "; ".join(error.problems) or str(error)
            raise RunDirError(
                f"{self.path} holds no usable checkpoint ({problems}), so it cannot be "
                f"{'resumed' if resume else 'reused'}: move or delete {self.path} and start "
                "again without --resume (resume=False), or train into another run directory"
            ) from None
        if checkpoint is not None and not resume:
            raise FileExistsError(
                f"{self.path} already holds checkpoints (the newest is step "
                f"{checkpoint.step}); resume it (--resume / resume=True) or choose another "
                "run directory"
            )
        if checkpoint is None:
            if resume:
                logger.info("nothing to resume in %s; starting afresh", self.path)
            for path in (self.episodes_path, self.metrics_path):
                if path.exists() and path.stat().st_size:
                    raise FileExistsError(
                        f"{path} already exists but {self.path} has no checkpoint to resume; "
                        "choose another run directory or delete the old run"
                    )
            write_text_atomic(self.path / RUN_FILE, json.dumps(info, indent=2, default=str))
            return None
        state = checkpoint.state
        if state.get("format") != CHECKPOINT_FORMAT:
            raise RunDirError(
                f"checkpoint {checkpoint.path} has format {state.get('format')!r}; this release "
                f"reads format {CHECKPOINT_FORMAT}"
            )
        if state.get("algorithm_name") != algorithm_name:
            raise RunDirError(
                f"checkpoint {checkpoint.path} was written by {state.get('algorithm_name')!r}, "
                f"not {algorithm_name!r}; resume it with the algorithm that wrote it"
            )
        return checkpoint

    def cut_back(self, files: dict[str, Any]) -> None:
        """Cut the episode and metrics logs back to the sizes a checkpoint recorded."""
        cut_back(self.episodes_path, int(files["episodes_bytes"]))
        cut_back(self.metrics_path, int(files["metrics_bytes"]))

    def export_policy(self, policy: LocalPolicy) -> None:
        """Write ``policy/`` whole: saved beside it first, then swapped in."""
        final = self.path / POLICY_DIR
        staging = self.path / f".{POLICY_DIR}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        policy.save(staging)
        old = self.path / f".{POLICY_DIR}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)


def run_info(
    algorithm: Algorithm, env_id: str | None, trainer_config: BaseModel, extra: dict[str, Any]
) -> dict[str, Any]:
    """What ``run.json`` records: the algorithm, environment, settings and ``extra``."""
    info = {
        "algorithm": algorithm.name,
        "env_id": env_id,
        "trainer": trainer_config.model_dump(mode="json"),
        "created_at": datetime.now(timezone.utc).isoformat(),
        **extra,
    }
    if algorithm.config is not None and "algorithm_config" not in info:
        info["algorithm_config"] = algorithm.config.model_dump(mode="json")
    return info


def synced_size(writer: EpisodeWriter) -> int:
    """The episode log's durable size (every write is already fsynced)."""
    return writer.path.stat().st_size if writer.path.exists() else 0


def cut_back(path: Path, size: int) -> None:
    """Move what ``path`` holds past ``size`` bytes to ``<stem>.abandoned<suffix>``; truncate."""
    if not path.exists():
        if size:
            raise RunDirError(
                f"{path} is missing but the checkpoint records {size} bytes of it; restore the "
                "file or start a new run"
            )
        return
    actual = path.stat().st_size
    if actual < size:
        raise RunDirError(
            f"{path} holds {actual} bytes but the checkpoint records {size}: the file lost data "
            "written before the checkpoint; restore it or start a new run"
        )
    if actual == size:
        return
    with path.open("rb+") as handle:
        handle.seek(size)
        tail = handle.read()
        abandoned = path.with_name(f"{path.stem}.abandoned{path.suffix}")
        with abandoned.open("ab") as out:
            out.write(tail if tail.endswith(b"\n") else tail + b"\n")
            out.flush()
            os.fsync(out.fileno())
        handle.truncate(size)
        handle.flush()
        os.fsync(handle.fileno())
    logger.warning(
        "%s: moved %d bytes written after the checkpoint to %s", path, len(tail), abandoned.name
    )


# -------------------------------------------------------------- loading back ---


def load_run_policy(path: str | Path, **policy_kwargs: Any) -> LocalPolicy:
    """The policy of a run directory's newest checkpoint, or of one ``step-*`` folder.

    Reads the base model (and LoRA settings) from the run's ``run.json`` and the
    trained weights from the checkpoint's ``algorithm.policy`` state (the
    convention every algorithm that trains a policy follows). Keyword arguments
    go to `LocalPolicy.from_pretrained` (``device``, ``dtype``, ``seed``).
    """
    from archer_agents.policies.local_policy import LocalPolicy, LoraSettings
    from archer_agents.training.updates import load_policy_state

    path = Path(path)
    if (path / CHECKPOINT_DIR).is_dir():
        run_dir = path
        checkpoint = load_latest(path / CHECKPOINT_DIR)
        if checkpoint is None:
            raise FileNotFoundError(f"{path} is a run directory without a checkpoint yet")
    else:
        run_dir = path.parent.parent
        checkpoint = load_checkpoint(path)
    run_file = run_dir / RUN_FILE
    if not run_file.is_file():
        raise FileNotFoundError(
            f"{run_file} is missing, so the base model of {path} is unknown; pass the run "
            "directory written by `archer train`"
        )
    info = json.loads(run_file.read_text())
    model = info.get("model")
    if not model:
        raise ValueError(f"{run_file} does not name the base model ('model'); cannot load {path}")
    lora = info.get("lora")
    policy = LocalPolicy.from_pretrained(
        model, lora=LoraSettings(**lora) if lora else None, **policy_kwargs
    )
    state = checkpoint.state.get("algorithm", {})
    if "policy" in state:
        load_policy_state(policy, state["policy"])
    else:
        logger.info("%s holds no policy weights (the algorithm does not train one)", path)
    policy.version = f"{checkpoint.path.name}"
    return policy


def is_run_path(path: str | Path) -> bool:
    """A run directory (with checkpoints) or one of its ``step-*`` checkpoint folders."""
    path = Path(path)
    return (path / CHECKPOINT_DIR).is_dir() or (
        path.name.startswith("step-") and path.parent.name == CHECKPOINT_DIR
    )


__all__ = [
    "CHECKPOINT_DIR",
    "CHECKPOINT_FORMAT",
    "CURVE_FILE",
    "EPISODES_FILE",
    "METRICS_FILE",
    "POLICY_DIR",
    "RUN_FILE",
    "TENSORBOARD_DIR",
    "RunDir",
    "RunDirError",
    "cut_back",
    "is_run_path",
    "load_run_policy",
    "run_info",
    "synced_size",
]
