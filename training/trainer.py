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

The run directory's files, resuming and the cut-back of logs written after
the last checkpoint are `training.run_dir`'s.

Several processes (``accelerate launch`` or ``torchrun``; see `training.distributed`)
train as one: each plays its share of ``episodes_per_iteration`` and
``eval_episodes`` (episode k keeps seed + k whichever process plays it) and
receives all of them; ``num_envs`` is per process, every other setting keeps its
one-process meaning; update metrics are averaged; only process 0 writes the run
directory, and ``on_iteration`` gets process 0's record in every process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from archer_agents.data.episode_log import EpisodeWriter
from archer_agents.data.schema import Episode
from archer_agents.training.algorithm import Algorithm
from archer_agents.training.chat_rollout import chat_actor_for, chat_env_factory, uses_chat_template
from archer_agents.training.checkpoint import (
    Checkpoint,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from archer_agents.training.distributed import (
    Distributed,
    check_devices,
    main_decides,
    play_shares,
    random_state,
    separate_randomness,
)
from archer_agents.training.evaluation import rollout_metrics, summarize
from archer_agents.training.rollout import (
    CollectResult,
    EnvFactory,
    collect,
    make_env_factory,
    split_task_ids,
)
from archer_agents.training.run_dir import CHECKPOINT_FORMAT, RunDir, run_info, synced_size
from archer_agents.training.run_log import MetricsLog, plot_learning_curve, read_metrics
from archer_agents.training.trainer_config import TrainerConfig

logger = logging.getLogger(__name__)


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
        env_id: the environment (a registered id or ``module:id``) to collect and
            evaluate on; None for an offline algorithm trained from logs only,
            which then plays nothing and records no ``eval/`` figures.
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
        env_id: str | None,
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
        if env_factory is None and env_id is not None:
            env_factory = make_env_factory(env_id)
        if env_factory is None and algorithm.online:
            raise ValueError(
                f"{algorithm.name} plays episodes while it trains; pass the environment (env_id)"
            )
        policy = algorithm.policy
        if env_factory is not None and policy is not None and uses_chat_template(policy):
            # A model with its own chat template plays in chat form, in its tool-call format.
            env_factory = chat_env_factory(env_factory, policy.tokenizer)
        self.env_factory: EnvFactory | None = env_factory
        self.run_info = dict(run_info or {})
        self.references = dict(references or {})
        self.on_iteration = on_iteration
        self.counters = Counters()
        self._eval_task_ids: list[str] | None = None
        self.files = RunDir(self.run_dir)
        modules = algorithm.modules()
        on_cpu = all(p.device.type == "cpu" for m in modules for p in m.parameters())
        self.distributed = distributed or Distributed.from_environment(cpu=on_cpu)
        if self.distributed.enabled and not on_cpu:
            check_devices(modules, self.distributed)

    @property
    def plays(self) -> bool:
        """Whether the run has an environment: online collection and evaluations need one."""
        return self.env_factory is not None

    # -- paths -------------------------------------------------------------------
    @property
    def episodes_path(self) -> Path:
        return self.files.episodes_path

    @property
    def metrics_path(self) -> Path:
        return self.files.metrics_path

    @property
    def checkpoint_dir(self) -> Path:
        return self.files.checkpoint_dir

    @property
    def curve_path(self) -> Path:
        return self.files.curve_path

    @property
    def online(self) -> bool:
        return self.algorithm.online

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
                self.files.tensorboard_dir if config.tensorboard else None,
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
                if self.plays and config.eval_every and iteration % config.eval_every == 0:
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
            if self.plays and done and self.counters.last_eval_iteration != done:
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

    def _factory(self) -> EnvFactory:
        if self.env_factory is None:
            raise RuntimeError("this run has no environment to play; give the Trainer an env_id")
        return self.env_factory

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
        factory = self._factory()
        distributed = self.distributed
        actor = chat_actor_for(self.algorithm.actor())
        num_envs = self.config.num_envs
        if not distributed.enabled:
            return collect(
                factory,
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

        def play_share(
            count: int, offset: int, share_tasks: Sequence[str] | None
        ) -> tuple[list[Episode], int]:
            result = collect(
                factory,
                actor,
                count,
                num_envs=num_envs,
                split=split,
                task_ids=share_tasks,
                seed=seed + offset,
                policy_version=policy_version,
                env_id=self.env_id,
            )
            return result.episodes, result.generated_tokens

        episodes, tokens = play_shares(distributed, total, task_ids, play_share)
        if writer is not None:
            writer.write_all(episodes)
        return CollectResult(
            episodes=episodes, seconds=time.perf_counter() - start, generated_tokens=tokens
        )

    # -- evaluation ----------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Play ``eval_episodes`` episodes sweeping the evaluation split; ``eval/...`` metrics.

        The random state (global generators, the policy's sampler) is put back
        afterwards: whether and when a run evaluates never changes what it
        trains on, so a run stopped after its final evaluation resumes into the
        draws of one that went on.
        """
        generator = self._policy_generator()
        saved = random_state(generator)
        try:
            return self._evaluate()
        finally:
            restore_rng_state(saved["rng"])
            if generator is not None:
                generator.set_state(saved["policy_generator"])

    def _evaluate(self) -> dict[str, float]:
        config = self.config
        if self._eval_task_ids is None:
            self._eval_task_ids = split_task_ids(self._factory(), config.eval_split)
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
        return plot_learning_curve(
            records,
            self.curve_path,
            title=f"{self.algorithm.name} on {self.env_id or 'episode logs'}",
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
            processes = self.distributed.gather(random_state(self._policy_generator()))
        if not self.distributed.is_main:
            return None
        assert writer is not None and metrics_log is not None
        state = {
            "format": CHECKPOINT_FORMAT,
            "algorithm_name": self.algorithm.name,
            "algorithm": self.algorithm.state_dict(),
            "counters": self.counters.as_dict(),
            "rng": capture_rng_state(),
            "files": {
                "episodes_bytes": synced_size(writer),
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
        if self.algorithm.policy is not None:
            self.files.export_policy(self.algorithm.policy)
        logger.info("checkpoint %s in %.2fs", folder, time.perf_counter() - start)
        return folder

    def _start(self, resume: bool) -> int | None:
        """Prepare the run directory; restore the newest checkpoint when resuming.

        In several processes, process 0 alone looks at the run directory and
        tells the others which checkpoint to load (or the error to raise); then
        every process starts from process 0's parameters and draws its own
        random numbers.
        """
        distributed = self.distributed
        opened: list[Checkpoint | None] = []

        def open_run_dir() -> Path | None:
            opened.append(
                self.files.open(
                    resume,
                    self.algorithm.name,
                    run_info(self.algorithm, self.env_id, self.config, self.run_info),
                )
            )
            return None if opened[0] is None else opened[0].path

        path = main_decides(distributed, open_run_dir)
        checkpoint = opened[0] if opened else None if path is None else load_checkpoint(path)
        if checkpoint is not None:
            self._restore(checkpoint)
        if distributed.enabled:
            for module in self.algorithm.modules():
                distributed.broadcast_module(module)
            separate_randomness(
                distributed,
                self._policy_generator(),
                None if checkpoint is None else checkpoint.state.get("processes"),
                seed=self.config.seed,
                iteration=self.counters.iteration,
            )
        return None if checkpoint is None else checkpoint.step

    def _restore(self, checkpoint: Checkpoint) -> None:
        """Load the algorithm, counters and RNGs; process 0 cuts the logs back to the checkpoint."""
        state = checkpoint.state
        self.algorithm.load_state_dict(state["algorithm"])
        self.counters = Counters(**state["counters"])
        restore_rng_state(state["rng"])
        if self.distributed.is_main:
            self.files.cut_back(state["files"])
        logger.info(
            "resumed %s from %s (iteration %d, %d episodes)",
            self.run_dir,
            checkpoint.path.name,
            self.counters.iteration,
            self.counters.episodes,
        )

    def _policy_generator(self) -> torch.Generator | None:
        """The policy's sampling generator, part of each process's random state."""
        policy = self.algorithm.policy
        return None if policy is None else policy.generator


__all__ = [
    "Counters",
    "TrainResult",
    "Trainer",
    "TrainerConfig",
]
