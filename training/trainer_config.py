"""The training loop's settings, whatever the algorithm (`training.trainer.Trainer`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TrainerConfig(BaseModel):
    """How the loop runs, whatever the algorithm."""

    model_config = ConfigDict(extra="forbid")

    iterations: int = Field(100, ge=1)
    """Iterations to run (a resumed run counts the ones already done)."""
    episodes_per_iteration: int = Field(128, ge=1)
    """Episodes collected per iteration (the paper's code: 128; 512 on WebShop)."""
    num_envs: int = Field(64, ge=1)
    """Environments played side by side; the policy samples for all of them in one batch."""
    eval_every: int = Field(10, ge=0)
    """Evaluate every this many iterations (0: only after the last one)."""
    eval_episodes: int = Field(200, ge=1)
    """Episodes per evaluation, sweeping the evaluation split's tasks in order."""
    eval_split: str = "test"
    """Split evaluated on (``test``, or ``train``)."""
    checkpoint_every: int = Field(5, ge=0)
    """Checkpoint every this many iterations (0: only after the last one)."""
    keep_checkpoints: int = Field(2, ge=1)
    """Complete checkpoints kept on disk, newest first."""
    time_budget_s: float | None = Field(None, gt=0)
    """Start no new iteration after this many seconds of training (None: no limit)."""
    tensorboard: bool = True
    """Mirror the metrics to TensorBoard event files (needs the tensorboard package)."""
    seed: int = 0
    """Seeds the episodes: training episode k is reset with seed + k."""
