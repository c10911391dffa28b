"""A training run's metrics: a JSONL file, TensorBoard scalars and a learning-curve PNG.

The JSONL file is the record (one line per iteration, flushed as written, so a
crash loses at most the line being written); TensorBoard and the PNG are views
of it. Keys are namespaced (``critic/q1_loss``, ``actor/advantage_mean``,
``rollout/return_mean``, ``eval/return_mean``, ``time/rollout_s``, ...).
TensorBoard and matplotlib are imported only when used, and a missing one
fails with the command that installs it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TRAIN_EXTRA = "pip install 'archer-agents[train]'"


class MetricsLog:
    """Appends one JSON object per iteration to ``path``; mirrors scalars to TensorBoard.

    ``tensorboard_dir`` None disables TensorBoard. ``purge_step`` (on resume)
    makes TensorBoard drop events logged after the checkpoint being resumed.
    """

    def __init__(
        self,
        path: str | Path,
        tensorboard_dir: str | Path | None = None,
        *,
        purge_step: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self._tensorboard: Any = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise ImportError(
                    "TensorBoard logging needs the tensorboard package, which is not installed. "
                    f"Install it with: pip install tensorboard (or {TRAIN_EXTRA}), or turn "
                    "TensorBoard off in the trainer config (tensorboard: false)"
                ) from error
            self._tensorboard = SummaryWriter(str(tensorboard_dir), purge_step=purge_step)

    def write(self, step: int, record: Mapping[str, float | int]) -> None:
        """Log ``record`` (numbers by key) for ``step``."""
        clean = {key: _finite(value) for key, value in record.items()}
        self._file.write(json.dumps(clean, sort_keys=False) + "\n")
        self._file.flush()
        if self._tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and math.isfinite(value) and "/" in key:
                    self._tensorboard.add_scalar(key, value, global_step=step)
            self._tensorboard.flush()

    def sync(self) -> int:
        """Make everything written durable; return the file's size in bytes."""
        self._file.flush()
        os.fsync(self._file.fileno())
        return self.path.stat().st_size

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def _finite(value: Any) -> Any:
    """JSON has no NaN or inf; they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics file; a torn last line (crash) is skipped."""
    path = Path(path)
    records = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if index == len(lines) - 1:
                logger.warning("%s: torn last line skipped", path)
                continue
            raise ValueError(f"{path}:{index + 1}: not a JSON metrics record") from None
    return records


def plot_learning_curve(
    records: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    title: str = "learning curve",
    references: Mapping[str, float] | None = None,
    x_key: str = "episodes",
) -> Path:
    """Write a PNG: evaluation return with its 95% interval, rollout return, valid-action share.

    Args:
        records: metrics records (`read_metrics`), each with ``x_key`` and any of
            ``eval/return_mean`` (+ ``_low``/``_high``), ``rollout/return_mean``,
            ``eval/valid_rate``, ``rollout/valid_rate``.
        path: the PNG to write.
        references: horizontal lines to draw on the return axes, by label
            (e.g. the scripted expert's return).
        x_key: the x axis: ``episodes`` (sample efficiency, as in the paper) or
            ``iteration``.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "plotting the learning curve needs matplotlib, which is not installed. Install it "
            f"with: pip install matplotlib (or {TRAIN_EXTRA})"
        ) from error

    def series(key: str) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for record in records:
            if record.get(key) is not None and record.get(x_key) is not None:
                xs.append(float(record[x_key]))
                ys.append(float(record[key]))
        return xs, ys

    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    xs, ys = series("rollout/return_mean")
    if xs:
        top.plot(xs, ys, color="tab:gray", linewidth=1, alpha=0.7, label="rollouts (train split)")
    xs, ys = series("eval/return_mean")
    if xs:
        _, lows = series("eval/return_low")
        _, highs = series("eval/return_high")
        top.plot(xs, ys, marker="o", color="tab:blue", label="evaluation (95% interval)")
        if len(lows) == len(xs) == len(highs):
            top.fill_between(xs, lows, highs, color="tab:blue", alpha=0.2)
    for (label, value), color in zip(
        (references or {}).items(),
        ("tab:green", "tab:red", "tab:purple", "tab:orange"),
        strict=False,
    ):
        top.axhline(value, linestyle="--", color=color, linewidth=1, label=label)
    top.set_ylabel("mean return")
    top.set_title(title)
    top.grid(alpha=0.3)
    top.legend(loc="lower right", fontsize="small")

    for key, label, color in (
        ("rollout/valid_rate", "rollouts", "tab:gray"),
        ("eval/valid_rate", "evaluation", "tab:blue"),
    ):
        xs, ys = series(key)
        if xs:
            bottom.plot(xs, ys, label=label, color=color, marker="o" if "eval" in key else None)
    bottom.set_ylabel("valid utterances")
    bottom.set_xlabel("episodes collected" if x_key == "episodes" else x_key)
    bottom.grid(alpha=0.3)
    bottom.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    os.replace(tmp, path)
    return path


__all__ = ["MetricsLog", "plot_learning_curve", "read_metrics"]
