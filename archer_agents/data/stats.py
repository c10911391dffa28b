"""Summary statistics every report uses: bootstrap intervals and pass^k."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import comb

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A mean with a 95% bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """Mean of ``values`` with a percentile-bootstrap interval.

    For success rates pass 0/1 values; for returns, per-episode returns. When
    several episodes share a task, pass per-task means so the interval is over
    tasks, as the reports require.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("bootstrap_mean needs at least one value")
    mean = float(data.mean())
    if data.size == 1:
        return Estimate(mean, mean, mean, 1)
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, data.size, size=(resamples, data.size))
    means = data[indices].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return Estimate(mean, float(low), float(high), int(data.size))


def pass_hat_k(successes_per_task: Mapping[str, Sequence[bool]], k: int) -> float:
    """tau-bench's pass^k: mean over tasks of C(c, k) / C(n, k).

    ``c`` is the number of successful trials of a task among its ``n`` trials;
    every task needs at least ``k`` trials.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not successes_per_task:
        raise ValueError("pass_hat_k needs at least one task")
    values = []
    for task_id, trials in successes_per_task.items():
        n, c = len(trials), sum(bool(t) for t in trials)
        if n < k:
            raise ValueError(f"task {task_id!r} has {n} trials; pass^{k} needs at least {k}")
        values.append(comb(c, k) / comb(n, k))
    return float(np.mean(values))
