"""The training loop every algorithm shares: collect, observe, update, evaluate, log, checkpoint.

It reads like the loop in docs/algorithm.md and knows nothing about ArCHer: the
`Algorithm` (``training.algorithm``) chooses utterances (`actor`), takes the
episodes (`observe`) and runs its gradient steps (`update`). Per iteration:

1. collect ``episodes_per_iteration`` episodes on the train split with the
   algorithm's actor, each written to the run's episode log as it ends;
2. hand them to the algorithm and let it update;
3. every ``eval_every`` iterations, play the evaluation split's tasks;
4. log the iteration's metrics (JSONL, TensorBoard) and redraw the curve;
5. every ``checkpoint_every`` iterations, write a checkpoint.

An algorithm with ``online = False`` (offline ArCHer) gets no rollouts, only
updates and evaluations.

A run directory holds::

    run.json            what the run is (algorithm, environment, model, configs)
    episodes.jsonl      every episode collected, one a line (fsynced per episode)
    metrics.jsonl       one record per iteration; learning_curve.png draws it
    tensorboard/        the same scalars for TensorBoard
    checkpoints/        step-NNNNNN/ (atomic, see training.checkpoint), latest
    policy/             the policy as of the last checkpoint, loadable as a model dir

Resuming (``resume=True``) restores the algorithm (weights, optimisers,
buffer), the counters and every RNG from the newest good checkpoint. Episodes
and metrics written after that checkpoint belong to an iteration that never
finished: they are moved to ``episodes.abandoned.jsonl`` /
``metrics.abandoned.jsonl`` (never deleted) and the logs cut back to the
checkpoint, so the log holds exactly what the algorithm has seen.

Several processes
-----------------
Under ``accelerate launch`` or ``torchrun`` the trainer finds its process group
itself (`training.distributed`), and the processes train as one::

    accelerate launch --multi_gpu --num_processes 2 -m archer_agents.cli train ...
    torchrun --nproc-per-node 2 -m archer_agents.cli train ...

(``--multi_gpu`` selects accelerate's multi-process launcher; on a machine
without GPUs its processes run on the CPU and talk over gloo.) Parameters start
as process 0's; each process plays its share of ``episodes_per_iteration``
and of ``eval_episodes`` (episode k keeps seed + k whichever process plays it)
and every process then receives all of them, so the replay buffers stay
equal; batches are split between the processes (PPO's minibatches excepted:
each process computes them whole) and gradients averaged before every step,
so the parameters stay equal. Settings keep their one-process meaning (the
work per iteration is the same, shared), except ``num_envs``, which is per
process. Update metrics are averaged over the processes. Only process 0
writes the run directory (an iteration's episodes once they have all
arrived); ``on_iteration`` gets process 0's record in every process. On
resume every process loads the same checkpoint, which also holds each
process's random state. In one process none of this costs anything.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from archer_agents.data.episode_log import EpisodeWriter
from archer_agents.data.schema import Episode
from archer_agents.training.algorithm import Algorithm
from archer_agents.training.checkpoint import (
    Checkpoint,
    capture_rng_state,
    load_checkpoint,
    load_latest,
    restore_rng_state,
    save_checkpoint,
    write_text_atomic,
)
from archer_agents.training.distributed import Distributed
from archer_agents.training.evaluation import summarize
from archer_agents.training.rollout import (
    CollectResult,
    EnvFactory,
    collect,
    make_env_factory,
    split_task_ids,
)
from archer_agents.training.run_log import MetricsLog, plot_learning_curve, read_metrics

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
RUN_FILE = "run.json"
EPISODES_FILE = "episodes.jsonl"
METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "learning_curve.png"
CHECKPOINT_DIR = "checkpoints"
POLICY_DIR = "policy"
TENSORBOARD_DIR = "tensorboard"


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


@dataclass
class Counters:
    """Progress that survives a resume."""

    iteration: int = 0
    episodes: int = 0
    transitions: int = 0
    train_seconds: float = 0.0
    last_eval_iteration: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "episodes": self.episodes,
            "transitions": self.transitions,
            "train_seconds": self.train_seconds,
            "last_eval_iteration": self.last_eval_iteration,
        }


@dataclass
class TrainResult:
    """What a call to `Trainer.train` did."""

    counters: Counters
    final_metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None
    """The checkpoint step the run continued from, if it did."""


class Trainer:
    """Runs an `Algorithm` on an environment, writing everything under ``run_dir``.

    Args:
        algorithm: the method to train.
        env_id: a registered environment id (used for collection and evaluation).
        run_dir: where the run's files go (see the module docstring).
        config: the loop's settings.
        env_factory: builds environments; defaults to ``gymnasium.make(env_id)``.
        run_info: extra facts recorded in ``run.json`` (model path, LoRA, configs);
            `load_run_policy` reads ``model`` and ``lora`` from it.
        references: horizontal lines on the learning curve, by label.
        on_iteration: called after each iteration with its number and metrics (in
            every process, with process 0's record, when several train together;
            ``trainer.distributed.is_main`` tells the one that should act alone).
        distributed: the processes training together; defaults to the launcher's
            (`Distributed.from_environment`), or one process.
    """

    def __init__(
        self,
        algorithm: Algorithm,
        env_id: str,
        run_dir: str | Path,
        config: TrainerConfig | None = None,
        *,
        env_factory: EnvFactory | None = None,
        run_info: dict[str, Any] | None = None,
        references: dict[str, float] | None = None,
        on_iteration: Callable[[int, dict[str, float]], None] | None = None,
        distributed: Distributed | None = None,
    ) -> None:
        self.algorithm = algorithm
        self.env_id = env_id
        self.run_dir = Path(run_dir)
        self.config = config or TrainerConfig()
        self.env_factory = env_factory or make_env_factory(env_id)
        self.run_info = dict(run_info or {})
        self.references = dict(references or {})
        self.on_iteration = on_iteration
        self.counters = Counters()
        self._eval_task_ids: list[str] | None = None
        modules = _modules(algorithm)
        on_cpu = all(p.device.type == "cpu" for m in modules for p in m.parameters())
        self.distributed = distributed or Distributed.from_environment(cpu=on_cpu)
        if self.distributed.enabled and not on_cpu:
            _check_devices(modules, self.distributed)

    # -- paths -------------------------------------------------------------------
    @property
    def episodes_path(self) -> Path:
        return self.run_dir / EPISODES_FILE

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / METRICS_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / CHECKPOINT_DIR

    @property
    def curve_path(self) -> Path:
        return self.run_dir / CURVE_FILE

    @property
    def online(self) -> bool:
        return bool(getattr(self.algorithm, "online", True))

    # -- the loop ----------------------------------------------------------------
    def train(self, *, resume: bool = False) -> TrainResult:
        """Run iterations until ``iterations`` or the time budget; return the counters.

        With ``resume`` the newest good checkpoint under ``run_dir`` is restored
        first (a run without checkpoints starts afresh). Without it, a run
        directory that already holds checkpoints is refused.
        """
        config = self.config
        resumed_from = self._start(resume)
        metrics_log, writer = None, None
        if self.distributed.is_main:  # the only process that writes files
            metrics_log = MetricsLog(
                self.metrics_path,
                self.run_dir / TENSORBOARD_DIR if config.tensorboard else None,
                purge_step=self.counters.iteration + 1 if resumed_from is not None else None,
            )
            writer = EpisodeWriter(self.episodes_path)
        last: dict[str, float] = {}
        checkpointed = resumed_from
        try:
            while self._more_iterations():
                iteration = self.counters.iteration + 1
                started = time.perf_counter()
                last = self._iteration(iteration, writer)
                if config.eval_every and iteration % config.eval_every == 0:
                    last.update(self.evaluate())
                    self.counters.last_eval_iteration = iteration
                self.counters.iteration = iteration
                self.counters.train_seconds += time.perf_counter() - started
                # Process 0's clock and figures everywhere: the time budget ends every process's
                # loop after the same iteration, and every process reports the same record.
                self.counters.train_seconds, last = self.distributed.broadcast(
                    (self.counters.train_seconds, last)
                )
                self._log(metrics_log, last)
                if config.checkpoint_every and iteration % config.checkpoint_every == 0:
                    self.save(writer, metrics_log)
                    checkpointed = iteration
            done = self.counters.iteration
            if done and self.counters.last_eval_iteration != done:
                final = self.evaluate()
                self.counters.last_eval_iteration = done
                last.update(final)
                self._log(metrics_log, {**final, "final_eval": 1.0})
                checkpointed = None  # the evaluation's record must be inside a checkpoint
            if done and checkpointed != done:
                self.save(writer, metrics_log)
        finally:
            if writer is not None:
                writer.close()
            if metrics_log is not None:
                metrics_log.close()
        self.distributed.barrier()  # every process returns once the last checkpoint exists
        return TrainResult(self.counters, last, resumed_from)

    def _more_iterations(self) -> bool:
        if self.counters.iteration >= self.config.iterations:
            return False
        budget = self.config.time_budget_s
        if budget is not None and self.counters.train_seconds >= budget:
            logger.info(
                "time budget of %.0fs spent after %d iterations",
                budget,
                self.counters.iteration,
            )
            return False
        return True

    def _iteration(self, iteration: int, writer: EpisodeWriter | None) -> dict[str, float]:
        """Collect, observe, update: one iteration's metrics."""
        config = self.config
        metrics: dict[str, float] = {}
        if self.online:
            start = time.perf_counter()
            result = self._play(
                config.episodes_per_iteration,
                split="train",
                seed=config.seed + self.counters.episodes,
                writer=writer,
                policy_version=str(iteration),
            )
            metrics["time/rollout_s"] = time.perf_counter() - start
            metrics.update(rollout_metrics(result.episodes))
            metrics["rollout/tokens_per_s"] = result.tokens_per_second
            self.counters.episodes += len(result.episodes)
            self.counters.transitions += sum(e.num_turns for e in result.episodes)
            self.algorithm.observe(result.episodes)
        start = time.perf_counter()
        metrics.update(self.distributed.mean_metrics(self.algorithm.update(iteration)))
        metrics["time/update_s"] = time.perf_counter() - start
        return metrics

    def _play(
        self,
        total: int,
        *,
        split: str,
        seed: int,
        writer: EpisodeWriter | None = None,
        task_ids: Sequence[str] | None = None,
        policy_version: str | None = None,
    ) -> CollectResult:
        """Play ``total`` episodes with the algorithm's actor (see `collect`), shared out.

        In several processes each plays a contiguous share; episode k keeps
        seed + k (and task ``task_ids[k % len]``) whichever process plays it.
        Every process gets all the episodes, in process order; process 0 writes
        them to ``writer``. One process plays them all, writing each as it ends.
        """
        distributed = self.distributed
        actor = self.algorithm.actor()
        num_envs = self.config.num_envs
        if not distributed.enabled:
            return collect(
                self.env_factory,
                actor,
                total,
                num_envs=num_envs,
                split=split,
                task_ids=task_ids,
                seed=seed,
                writer=writer,
                policy_version=policy_version,
                env_id=self.env_id,
            )
        start = time.perf_counter()
        offset, count = distributed.split(total)
        mine: tuple[list[Episode], int] = ([], 0)
        if count:
            if task_ids:  # rotated so that this share's first episode plays task offset
                cut = offset % len(task_ids)
                task_ids = [*task_ids[cut:], *task_ids[:cut]]
            result = collect(
                self.env_factory,
                actor,
                count,
                num_envs=num_envs,
                split=split,
                task_ids=task_ids,
                seed=seed + offset,
                policy_version=policy_version,
                env_id=self.env_id,
            )
            mine = (result.episodes, result.generated_tokens)
        shares = distributed.gather(mine)
        episodes = [episode for share, _ in shares for episode in share]
        if writer is not None:
            writer.write_all(episodes)
        return CollectResult(
            episodes=episodes,
            seconds=time.perf_counter() - start,
            generated_tokens=sum(tokens for _, tokens in shares),
        )

    # -- evaluation ----------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Play ``eval_episodes`` episodes sweeping the evaluation split; ``eval/...`` metrics."""
        config = self.config
        if self._eval_task_ids is None:
            self._eval_task_ids = split_task_ids(self.env_factory, config.eval_split)
        start = time.perf_counter()
        result = self._play(
            config.eval_episodes,
            split=config.eval_split,
            task_ids=self._eval_task_ids,
            seed=config.seed + 1_000_000_000,
        )
        summary = summarize(result.episodes, seed=config.seed)
        metrics = summary.metrics("eval")
        metrics["eval/valid_rate"] = 1.0 - summary.invalid_action_rate
        metrics["time/eval_s"] = time.perf_counter() - start
        return metrics

    # -- logging -------------------------------------------------------------------
    def _log(self, metrics_log: MetricsLog | None, metrics: dict[str, float]) -> None:
        counters = self.counters
        record: dict[str, Any] = {
            "iteration": counters.iteration,
            "episodes": counters.episodes,
            "transitions": counters.transitions,
            "time/train_s": counters.train_seconds,
            **metrics,
        }
        if metrics_log is not None:  # process 0
            metrics_log.write(counters.iteration, record)
            if any(key.startswith("eval/") for key in metrics):
                self.plot()
        if self.on_iteration is not None:
            self.on_iteration(counters.iteration, record)

    def plot(self) -> Path | None:
        """Redraw the learning curve from the metrics file (None when there is nothing yet)."""
        if not self.metrics_path.exists():
            return None
        records = read_metrics(self.metrics_path)
        if not records:
            return None
        name = getattr(self.algorithm, "name", type(self.algorithm).__name__)
        return plot_learning_curve(
            records,
            self.curve_path,
            title=f"{name} on {self.env_id}",
            references=self.references,
        )

    # -- checkpoints ---------------------------------------------------------------
    def save(self, writer: EpisodeWriter | None, metrics_log: MetricsLog | None) -> Path | None:
        """Write a checkpoint of everything, then export the policy beside it.

        In several processes every process must call it (each hands over its
        random state); process 0 writes and returns the folder, the others None.
        """
        start = time.perf_counter()
        processes = None
        if self.distributed.enabled:
            processes = self.distributed.gather(self._random_state())
        if not self.distributed.is_main:
            return None
        assert writer is not None and metrics_log is not None
        state = {
            "format": CHECKPOINT_FORMAT,
            "algorithm_name": getattr(self.algorithm, "name", type(self.algorithm).__name__),
            "algorithm": self.algorithm.state_dict(),
            "counters": self.counters.as_dict(),
            "rng": capture_rng_state(),
            "files": {
                "episodes_bytes": _synced_size(writer),
                "metrics_bytes": metrics_log.sync(),
            },
        }
        if processes is not None:
            state["processes"] = processes
        folder = save_checkpoint(
            self.checkpoint_dir,
            state,
            step=self.counters.iteration,
            keep=self.config.keep_checkpoints,
        )
        self._export_policy()
        logger.info("checkpoint %s in %.2fs", folder, time.perf_counter() - start)
        return folder

    def _export_policy(self) -> None:
        policy = getattr(self.algorithm, "policy", None)
        if policy is None or not hasattr(policy, "save"):
            return
        final = self.run_dir / POLICY_DIR
        staging = self.run_dir / f".{POLICY_DIR}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        policy.save(staging)
        old = self.run_dir / f".{POLICY_DIR}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)

    def _start(self, resume: bool) -> int | None:
        """Prepare the run directory; restore the newest checkpoint when resuming.

        In several processes, process 0 alone looks at the run directory and
        tells the others which checkpoint to load (or the error to raise); then
        every process starts from process 0's parameters and draws its own
        random numbers.
        """
        distributed = self.distributed
        checkpoint: Checkpoint | None = None
        if distributed.is_main:
            try:
                checkpoint = self._open_run_dir(resume)
            except BaseException as error:
                distributed.broadcast(error)
                raise
            distributed.broadcast(None if checkpoint is None else checkpoint.path)
        else:
            told = distributed.broadcast(None)
            if isinstance(told, BaseException):
                raise told
            checkpoint = None if told is None else load_checkpoint(told)
        if checkpoint is not None:
            self._restore(checkpoint)
        if distributed.enabled:
            for module in _modules(self.algorithm):
                distributed.broadcast_module(module)
            self._separate_randomness(None if checkpoint is None else checkpoint.state)
        return None if checkpoint is None else checkpoint.step

    def _open_run_dir(self, resume: bool) -> Checkpoint | None:
        """Create or check the run directory; the checkpoint to resume from, if any."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = load_latest(self.checkpoint_dir) if self.checkpoint_dir.exists() else None
        if checkpoint is not None and not resume:
            raise FileExistsError(
                f"{self.run_dir} already holds checkpoints (the newest is step "
                f"{checkpoint.step}); resume it (--resume / resume=True) or choose another "
                "run directory"
            )
        if checkpoint is None:
            if resume:
                logger.info("nothing to resume in %s; starting afresh", self.run_dir)
            for path in (self.episodes_path, self.metrics_path):
                if path.exists() and path.stat().st_size:
                    raise FileExistsError(
                        f"{path} already exists but {self.run_dir} has no checkpoint to resume; "
                        "choose another run directory or delete the old run"
                    )
            self._write_run_file()
            return None
        state = checkpoint.state
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"checkpoint {checkpoint.path} has format {state.get('format')!r}; this release "
                f"reads format {CHECKPOINT_FORMAT}"
            )
        name = getattr(self.algorithm, "name", None)
        if state.get("algorithm_name") != name:
            raise ValueError(
                f"checkpoint {checkpoint.path} was written by {state.get('algorithm_name')!r}, "
                f"not {name!r}; resume it with the algorithm that wrote it"
            )
        return checkpoint

    def _restore(self, checkpoint: Checkpoint) -> None:
        """Load the algorithm, counters and RNGs; process 0 cuts the logs back to the checkpoint."""
        state = checkpoint.state
        self.algorithm.load_state_dict(state["algorithm"])
        self.counters = Counters(**state["counters"])
        restore_rng_state(state["rng"])
        if self.distributed.is_main:
            files = state["files"]
            _cut_back(self.episodes_path, int(files["episodes_bytes"]))
            _cut_back(self.metrics_path, int(files["metrics_bytes"]))
        logger.info(
            "resumed %s from %s (iteration %d, %d episodes)",
            self.run_dir,
            checkpoint.path.name,
            self.counters.iteration,
            self.counters.episodes,
        )

    # -- randomness of several processes --------------------------------------------
    def _policy_generator(self) -> torch.Generator | None:
        generator = getattr(getattr(self.algorithm, "policy", None), "generator", None)
        return generator if isinstance(generator, torch.Generator) else None

    def _random_state(self) -> dict[str, Any]:
        """This process's global RNGs and its policy's sampling generator."""
        generator = self._policy_generator()
        return {
            "rng": capture_rng_state(),
            "policy_generator": None if generator is None else generator.get_state(),
        }

    def _separate_randomness(self, checkpoint_state: dict[str, Any] | None) -> None:
        """Give every process its own random draws, or restore each one's from the checkpoint.

        With equal generators the processes would sample the same utterance for
        the same observation (every episode's first turn), and their rollouts
        would repeat each other. Process 0 keeps the one-process draws; the
        others are seeded from (seed, rank, iteration). A checkpoint written by
        as many processes restores each one's own state, so a resumed run draws
        what an uninterrupted one would.
        """
        distributed = self.distributed
        generator = self._policy_generator()
        saved = None if checkpoint_state is None else checkpoint_state.get("processes")
        if saved is not None and len(saved) == distributed.world_size:
            own = saved[distributed.rank]
            restore_rng_state(own["rng"])
            if generator is not None and own["policy_generator"] is not None:
                generator.set_state(own["policy_generator"])
            return
        if saved is not None and distributed.is_main:
            logger.warning(
                "the checkpoint was written by %d processes and this run has %d: processes other "
                "than 0 start new random streams",
                len(saved),
                distributed.world_size,
            )
        if distributed.is_main:
            return
        entropy = [self.config.seed, distributed.rank, self.counters.iteration]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if generator is not None:
            generator.manual_seed(seed)

    def _write_run_file(self) -> None:
        info = {
            "algorithm": getattr(self.algorithm, "name", type(self.algorithm).__name__),
            "env_id": self.env_id,
            "trainer": self.config.model_dump(mode="json"),
            "created_at": datetime.now(timezone.utc).isoformat(),
            **self.run_info,
        }
        algorithm_config = getattr(self.algorithm, "config", None)
        if isinstance(algorithm_config, BaseModel) and "algorithm_config" not in info:
            info["algorithm_config"] = algorithm_config.model_dump(mode="json")
        write_text_atomic(self.run_dir / RUN_FILE, json.dumps(info, indent=2, default=str))


def rollout_metrics(episodes: list[Episode]) -> dict[str, float]:
    """``rollout/...`` figures of a batch of training episodes (no intervals: they are cheap)."""
    if not episodes:
        return {}
    turns = [t for e in episodes for t in e.transitions]
    invalid = sum(bool(t.info.get("invalid_action")) for t in turns) / max(len(turns), 1)
    returns = [
        e.total_reward if e.total_reward is not None else sum(t.reward for t in e.transitions)
        for e in episodes
    ]
    return {
        "rollout/return_mean": float(sum(returns) / len(returns)),
        "rollout/success": float(sum(bool(e.success) for e in episodes) / len(episodes)),
        "rollout/turns_mean": len(turns) / len(episodes),
        "rollout/invalid_action_rate": invalid,
        "rollout/valid_rate": 1.0 - invalid,
        "rollout/episodes": float(len(episodes)),
    }


def _modules(algorithm: object) -> list[nn.Module]:
    """The torch modules an algorithm holds as attributes, and the models of its policies."""
    found: dict[int, nn.Module] = {}
    for value in getattr(algorithm, "__dict__", {}).values():
        module = value if isinstance(value, nn.Module) else getattr(value, "model", None)
        if isinstance(module, nn.Module):
            found.setdefault(id(module), module)
    return list(found.values())


def _check_devices(modules: Sequence[nn.Module], distributed: Distributed) -> None:
    """Each process trains on its own GPU; models left on another one would collide there."""
    elsewhere = {
        p.device
        for m in modules
        for p in m.parameters()
        if p.device.type == distributed.device.type and p.device != distributed.device
    }
    if elsewhere:
        raise ValueError(
            f"process {distributed.rank} should hold its models on {distributed.device} but some "
            f"are on {sorted(map(str, elsewhere))}; load the policy and critic on "
            "Distributed.from_environment().device before building the Trainer"
        )


def _synced_size(writer: EpisodeWriter) -> int:
    """The episode log's durable size (every write is already fsynced)."""
    return writer.path.stat().st_size if writer.path.exists() else 0


def _cut_back(path: Path, size: int) -> None:
    """Move what ``path`` holds past ``size`` bytes to ``<stem>.abandoned<suffix>``; truncate."""
    if not path.exists():
        if size:
            raise ValueError(
                f"{path} is missing but the checkpoint records {size} bytes of it; restore the "
                "file or start a new run"
            )
        return
    actual = path.stat().st_size
    if actual < size:
        raise ValueError(
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


def load_run_policy(path: str | Path, **policy_kwargs: Any) -> Any:
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
    "Counters",
    "TrainResult",
    "Trainer",
    "TrainerConfig",
    "is_run_path",
    "load_run_policy",
    "rollout_metrics",
]
