"""ArCHer on a MiniWoB++ selection in real Chromium, after behaviour cloning from the solvers.

The embedded model (built here, its tokenizer trained on the selection's own
pages) plays ``archer/miniwob.suite-v0``: several MiniWoB++ tasks in one
environment, task ids ``task:seed``, train and test seeds disjoint. Steps:

1. build the model; record the scripted solvers' play on train seeds;
2. behaviour cloning on those episodes;
3. ArCHer from the cloned policy for a fixed wall-clock budget (rollouts in
   Chromium, the critic reading the page text);
4. evaluate random play, the solvers, the cloned policy and the ArCHer policy on
   the same test seeds (greedy decoding), per task and over the selection.

Success with 95% intervals (bootstrap over task instances) per task and row.
Results go to ``--out`` (markdown) and are printed.

    python benchmarks/miniwob_train.py --out benchmarks/results/miniwob_train.md

``--smoke`` runs every step at toy sizes (tests).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gymnasium as gym
import torch

from archer_agents.data.schema import Episode
from archer_agents.environments.miniwob.suite import DEFAULT_SELECTION, split_task_id
from archer_agents.environments.registration import MINIWOB_SUITE_ID
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import SamplingParams
from archer_agents.policies.tiny_model import init_model
from archer_agents.training.algorithms.archer import Archer
from archer_agents.training.algorithms.archer_config import ArcherConfig
from archer_agents.training.algorithms.bc import BCConfig, behaviour_clone
from archer_agents.training.cached_rollout import CachedPolicyActor
from archer_agents.training.corpus import environment_corpus
from archer_agents.training.evaluation import Summary, summarize
from archer_agents.training.rollout import ScriptedActor, collect, split_task_ids
from archer_agents.training.trainer import Trainer
from archer_agents.training.trainer_config import TrainerConfig

SELECTION = DEFAULT_SELECTION
"""Tasks random play mostly fails (0.5, 0.5, 0.2, 0.0 in benchmarks/results/browser_speed.md)."""
NUM_ENVS = 4


def archer_config(max_new_tokens: int) -> ArcherConfig:
    """The cpu-small preset's ArCHer, sized for a few browser contexts."""
    return ArcherConfig(
        encoder="hashing-lines",
        critic_lr=3e-3,
        critic_steps=3,
        critic_batch_size=32,
        critic_batches="episodes",
        polyak_tau=0.3,
        actor_lr=3e-4,
        actor_steps=1,
        actor_batch_size=64,
        actor_states="latest",
        advantage_estimator="gae",
        gae_lambda=0.9,
        normalize_advantages=True,
        advantage_clip=3.0,
        invalid_action_penalty=1.0,
        warmup_iterations=2,
        max_new_tokens=max_new_tokens,
    )


def per_task(episodes: Sequence[Episode]) -> dict[str, Summary]:
    """Each task's summary, and the whole selection's under ``"all"``."""
    groups: dict[str, list[Episode]] = defaultdict(list)
    for episode in episodes:
        groups[split_task_id(episode.task_id or "")[0]].append(episode)
    rows = {task: summarize(groups[task]) for task in sorted(groups)}
    rows["all"] = summarize(episodes)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(SELECTION))
    parser.add_argument("--eval-per-task", type=int, default=25)
    parser.add_argument("--bc-episodes", type=int, default=400)
    parser.add_argument("--bc-steps", type=int, default=400)
    parser.add_argument("--archer-budget-s", type=float, default=600.0)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--work", type=Path, default=Path(".cache/miniwob-train"))
    parser.add_argument("--smoke", action="store_true", help="toy sizes, for tests")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.smoke:
        args.eval_per_task, args.bc_episodes, args.bc_steps = 1, 4, 2
        args.archer_budget_s = 1.0
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tasks = tuple(args.tasks)

    def factory() -> Any:
        return gym.make(MINIWOB_SUITE_ID, tasks=tasks)

    started = time.perf_counter()
    timings: dict[str, float] = {}
    corpus_episodes = 2 if args.smoke else 20
    model_dir = init_model(
        args.work / "model",
        environment_corpus(
            [MINIWOB_SUITE_ID], episodes_per_kind=corpus_episodes, env_kwargs={"tasks": tasks}
        ),
        size="demo",
        overwrite=True,
        merge_within="line",
    )
    policy = LocalPolicy.from_pretrained(model_dir, seed=0)
    expert = collect(
        factory, ScriptedActor("expert", seed=0), args.bc_episodes, num_envs=NUM_ENVS, seed=0
    ).episodes
    timings["model and expert data"] = time.perf_counter() - started

    step = time.perf_counter()
    config = BCConfig(
        steps=args.bc_steps, batch_size=32, learning_rate=3e-3, warmup_steps=20, packed=True
    )
    behaviour_clone(policy, expert, config)
    bc_dir = policy.save(args.work / "bc_policy")
    timings["behaviour cloning"] = time.perf_counter() - step

    test_ids = list(split_task_ids(factory, "test"))[: args.eval_per_task * len(tasks)]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)

    def evaluate(actor: Any) -> dict[str, Summary]:
        result = collect(
            factory,
            actor,
            len(test_ids),
            num_envs=NUM_ENVS,
            split="test",
            task_ids=test_ids,
            seed=10_000,
        )
        return per_task(result.episodes)

    step = time.perf_counter()
    rows: dict[str, dict[str, Summary]] = {
        "random": evaluate(ScriptedActor("random", seed=0)),
        "scripted solvers": evaluate(ScriptedActor("expert", seed=0)),
        "behaviour-cloned": evaluate(CachedPolicyActor(policy, greedy)),
    }
    timings["evaluation before"] = time.perf_counter() - step
    print(f"behaviour-cloned: {rows['behaviour-cloned']['all'].success}", flush=True)

    step = time.perf_counter()
    trained = LocalPolicy.from_pretrained(bc_dir, seed=0)
    archer = Archer(archer_config(args.max_new_tokens), trained)
    trainer = Trainer(
        archer,
        MINIWOB_SUITE_ID,
        args.work / "archer_run",
        TrainerConfig(
            iterations=1 if args.smoke else 10_000,
            episodes_per_iteration=NUM_ENVS if args.smoke else 32,
            num_envs=NUM_ENVS,
            eval_every=0,
            eval_episodes=1,
            checkpoint_every=0,
            tensorboard=False,
            time_budget_s=args.archer_budget_s,
        ),
        env_factory=factory,
    )
    trainer.train()
    timings["ArCHer"] = time.perf_counter() - step
    step = time.perf_counter()
    rows[f"ArCHer ({archer.actor_updates} actor updates)"] = evaluate(
        CachedPolicyActor(trained, greedy)
    )
    timings["evaluation after"] = time.perf_counter() - step
    timings["total"] = time.perf_counter() - started

    columns = [*sorted(tasks), "all"]
    lines = [
        "| row | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, summaries in rows.items():
        cells = [
            f"{s.success.mean:.2f} [{s.success.low:.2f}, {s.success.high:.2f}]"
            for s in (summaries[c] for c in columns)
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    times = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
    print(table)
    print(times)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            "# ArCHer on a MiniWoB++ selection (the embedded model, real Chromium)\n\n"
            f"Command: `python benchmarks/miniwob_train.py --tasks {' '.join(tasks)} "
            f"--eval-per-task {args.eval_per_task} --bc-episodes {args.bc_episodes} "
            f"--bc-steps {args.bc_steps} --archer-budget-s {args.archer_budget_s:.0f} "
            f"--out {args.out}`\n\n"
            f"Success on {args.eval_per_task} test seeds per task (seeds never trained on), "
            "greedy decoding; 95% bootstrap intervals over task instances.\n\n"
            f"{table}\n\nTimes: {times}.\n"
        )


if __name__ == "__main__":
    main()
