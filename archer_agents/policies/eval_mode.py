"""A context manager that turns dropout off for a block and restores the caller's mode."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode for the duration, then restore its training flag.

    Scoring, ranking and target computations must not see dropout noise, yet
    the caller may be mid-training; this keeps both right.
    """
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
