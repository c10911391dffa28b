"""MiniWoB++ in headless Chromium: scripted and random success per task, and speed.

For each registered task (``archer/miniwob.<task>-v0``), plays the scripted
expert (where the task has one) and the random agent on the first
``--episodes`` test seeds, in one browser whose task is switched with
`MiniWoBEnv.use_task`, and prints a Markdown table: success with a 95%
bootstrap interval over episodes, mean turns, the mean time of a reset and of
a step. Then ``--contexts`` environments (each its own browser) play random
episodes of ``--speed-task`` side by side in threads for ``--speed-seconds``,
for total steps per second. Timing is reported, never asserted.

    python benchmarks/miniwob_eval.py --episodes 10 --contexts 4 --speed-seconds 30
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from archer_agents.data.stats import bootstrap_mean
from archer_agents.environments.miniwob.env import MiniWoBEnv
from archer_agents.environments.miniwob.tasks import SOLVERS, TASKS, TEST_SEEDS


def play(env: MiniWoBEnv, kind: str, seed: int) -> tuple[float, int, float, float]:
    """One test episode: (success, turns, reset seconds, seconds in env.step)."""
    agent = env.make_scripted_agent(kind, seed=seed)
    start = time.perf_counter()
    observation, info = env.reset(options={"split": "test", "task_id": str(seed)})
    reset_s = time.perf_counter() - start
    agent.reset(observation, info)
    turns, step_s = 0, 0.0
    while True:
        action = agent.act(observation)
        start = time.perf_counter()
        observation, _, terminated, truncated, info = env.step(action)
        step_s += time.perf_counter() - start
        turns += 1
        if terminated or truncated:
            return float(info.get("success", False)), turns, reset_s, step_s


def per_task(episodes: int) -> None:
    env = MiniWoBEnv(TASKS[0])
    seeds = list(TEST_SEEDS)[:episodes]
    print("| task | agent | success [95% CI] | turns | reset ms | step ms |")
    print("|---|---|---|---|---|---|")
    try:
        for task in TASKS:
            env.use_task(task)
            for kind in ("expert", "random") if task in SOLVERS else ("random",):
                runs = [play(env, kind, seed) for seed in seeds]
                success = bootstrap_mean([r[0] for r in runs], seed=0)
                turns = sum(r[1] for r in runs)
                reset_ms = 1000 * np.mean([r[2] for r in runs])
                step_ms = 1000 * sum(r[3] for r in runs) / max(turns, 1)
                print(
                    f"| {task} | {kind} | {success.mean:.2f} [{success.low:.2f}, {success.high:.2f}]"
                    f" | {turns / len(runs):.1f} | {reset_ms:.0f} | {step_ms:.0f} |"
                )
    finally:
        env.close()


def throughput(task: str, contexts: int, seconds: float) -> None:
    envs = [MiniWoBEnv(task) for _ in range(contexts)]
    counts = [0] * contexts
    stop = time.perf_counter() + seconds

    def run(index: int) -> None:
        env, seed = envs[index], index
        while time.perf_counter() < stop:
            agent = env.make_scripted_agent("random", seed=seed)
            observation, info = env.reset(options={"split": "train", "task_id": str(seed)})
            agent.reset(observation, info)
            done = False
            while not done and time.perf_counter() < stop:
                observation, _, terminated, truncated, _ = env.step(agent.act(observation))
                counts[index] += 1
                done = terminated or truncated
            seed += contexts

    try:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(contexts)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        for env in envs:
            env.close()
    total = sum(counts)
    print(
        f"\n{task}, {contexts} environments side by side for {elapsed:.0f} s: {total} steps, "
        f"{total / elapsed:.1f} steps/s in total, {total / elapsed / contexts:.1f} per environment"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10, help="test seeds per task and agent")
    parser.add_argument("--contexts", type=int, default=4, help="environments for the speed run")
    parser.add_argument("--speed-task", default="click-button")
    parser.add_argument("--speed-seconds", type=float, default=30.0)
    args = parser.parse_args()
    per_task(args.episodes)
    throughput(args.speed_task, args.contexts, args.speed_seconds)


if __name__ == "__main__":
    main()
