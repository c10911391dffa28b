"""MiniWoB++ in headless Chromium: scripted and random success per task, and speed.

For each registered task (``archer/miniwob.<task>-v0``), plays the scripted
expert (where the task has one) and the random agent on the first
``--episodes`` test seeds, in one browser whose task is switched with
`MiniWoBEnv.use_task`, and prints a Markdown table: success with a 95%
bootstrap interval over episodes, mean turns, the mean time of a reset and of
a step. Then the speed runs: ``--contexts`` environments play random episodes
of the click tasks (``--speed-tasks``) for ``--speed-seconds``, as contexts of
shared Chromiums (``--contexts-per-browser``), stepped in turn from one thread
as ``archer rollout --num-envs`` does (``rollout``) or each from its own thread
(``threads``); it prints steps per second in total and per context, and reset
and step times. Timing is reported, never asserted.

    python benchmarks/miniwob_eval.py --episodes 10 --contexts 1 4 --speed-seconds 30
"""

from __future__ import annotations

import argparse
import os
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


def _speed_episode(
    env: MiniWoBEnv, task: str, seed: int, stop: float, record: dict[str, list[float]]
) -> None:
    """One random episode (until it ends or ``stop``): reset and step times into ``record``."""
    env.use_task(task)
    agent = env.make_scripted_agent("random", seed=seed)
    start = time.perf_counter()
    observation, info = env.reset(options={"split": "train", "task_id": str(seed % 1000)})
    record["reset"].append(time.perf_counter() - start)
    agent.reset(observation, info)
    done = False
    while not done and time.perf_counter() < stop:
        action = agent.act(observation)
        start = time.perf_counter()
        observation, _, terminated, truncated, _ = env.step(action)
        record["step"].append(time.perf_counter() - start)
        done = terminated or truncated


def throughput(
    tasks: list[str],
    contexts: int,
    contexts_per_browser: int,
    seconds: float,
    mode: str,
    episodes_per_task: int = 1,
) -> dict[str, float]:
    """``contexts`` environments on click tasks, random play for ``seconds``.

    ``mode`` ``rollout`` steps them in turn from one thread, as ``archer rollout
    --num-envs`` does; ``threads`` gives each its own thread. Environments share a
    Chromium, ``contexts_per_browser`` contexts in each (1: one Chromium each).
    Each environment plays ``episodes_per_task`` episodes of a task before it
    switches to the next: 1 measures a reset that loads another task's page, more
    measures mostly resets of the same task (restarted in the loaded page, as when
    an environment plays one task all along, as in training).
    """

    def task_of(seed: int) -> str:
        return tasks[(seed // (contexts * episodes_per_task)) % len(tasks)]

    import archer_agents.tools.browser.session as session

    session.DEFAULT_CONTEXTS_PER_BROWSER = contexts_per_browser  # read when a session is made
    envs = [MiniWoBEnv(tasks[0]) for _ in range(contexts)]
    records = [{"reset": [], "step": []} for _ in range(contexts)]
    for env in envs:  # start the browsers and warm the pages before the clock starts
        env.reset(options={"split": "train", "task_id": "0"})
    browsers = len({env.browser.pid for env in envs if env.browser is not None})
    stop = time.perf_counter() + seconds
    started = time.perf_counter()
    try:
        if mode == "threads":

            def run(index: int) -> None:
                seed = index
                while time.perf_counter() < stop:  # every context plays every task in turn
                    task = task_of(seed)
                    _speed_episode(envs[index], task, seed, stop, records[index])
                    seed += contexts

            threads = [threading.Thread(target=run, args=(i,)) for i in range(contexts)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:  # one thread, one step of each environment in turn (episodes interleaved)
            agents = [env.make_scripted_agent("random", seed=i) for i, env in enumerate(envs)]
            observations = [""] * contexts
            seeds = list(range(contexts))
            live = [False] * contexts
            while time.perf_counter() < stop:
                for i, env in enumerate(envs):
                    if not live[i]:
                        env.use_task(task_of(seeds[i]))
                        agents[i] = env.make_scripted_agent("random", seed=seeds[i])
                        begin = time.perf_counter()
                        observations[i], info = env.reset(
                            options={"split": "train", "task_id": str(seeds[i] % 1000)}
                        )
                        records[i]["reset"].append(time.perf_counter() - begin)
                        agents[i].reset(observations[i], info)
                        seeds[i] += contexts
                        live[i] = True
                        continue
                    action = agents[i].act(observations[i])
                    begin = time.perf_counter()
                    observations[i], _, terminated, truncated, _ = env.step(action)
                    records[i]["step"].append(time.perf_counter() - begin)
                    live[i] = not (terminated or truncated)
        elapsed = time.perf_counter() - started
    finally:
        for env in envs:
            env.close()
    steps = [len(r["step"]) for r in records]
    resets = [t for r in records for t in r["reset"]]
    step_times = [t for r in records for t in r["step"]]
    return {
        "contexts": contexts,
        "browsers": browsers,
        "seconds": elapsed,
        "steps": sum(steps),
        "episodes": len(resets),
        "steps_per_s": sum(steps) / elapsed,
        "steps_per_s_per_context": sum(steps) / elapsed / contexts,
        "reset_ms_median": 1000 * float(np.median(resets)),
        "reset_ms_p90": 1000 * float(np.percentile(resets, 90)),
        "step_ms_median": 1000 * float(np.median(step_times)),
    }


def print_speed(mode: str, row: dict[str, float]) -> None:
    print(
        f"| {mode} | {row['contexts']} | {row['browsers']} | {row['steps']} | {row['episodes']} "
        f"| {row['steps_per_s']:.1f} | {row['steps_per_s_per_context']:.2f} "
        f"| {row['reset_ms_median']:.0f} | {row['reset_ms_p90']:.0f} | {row['step_ms_median']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10, help="test seeds per task and agent")
    parser.add_argument("--skip-tasks", action="store_true", help="only the speed runs")
    parser.add_argument(
        "--contexts", type=int, nargs="+", default=[1, 4], help="environments per speed run"
    )
    parser.add_argument(
        "--contexts-per-browser",
        type=int,
        nargs="+",
        default=[8],
        help="contexts sharing one Chromium (1: a Chromium per environment)",
    )
    parser.add_argument("--modes", nargs="+", default=["rollout", "threads"])
    parser.add_argument(
        "--speed-tasks", default="click-button,click-link,click-checkboxes,click-option"
    )
    parser.add_argument("--speed-seconds", type=float, default=30.0)
    parser.add_argument(
        "--episodes-per-task",
        type=int,
        default=1,
        help="speed runs: episodes of one task before the next (1: every reset loads a page)",
    )
    args = parser.parse_args()
    if not args.skip_tasks:
        per_task(args.episodes)
    tasks = args.speed_tasks.split(",")
    print(
        f"\nrandom play on {', '.join(tasks)}, {args.episodes_per_task} episode(s) of a task "
        f"in turn, {args.speed_seconds:.0f} s a run (load average "
        f"{os.getloadavg()[0]:.1f} at the start)"
    )
    print(
        "| mode | contexts | Chromiums | steps | episodes | steps/s total | steps/s per context "
        "| reset ms (median) | reset ms (p90) | step ms (median) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for per_browser in args.contexts_per_browser:
        for contexts in args.contexts:
            for mode in args.modes:
                if mode == "threads" and contexts == 1:
                    continue
                row = throughput(
                    tasks, contexts, per_browser, args.speed_seconds, mode, args.episodes_per_task
                )
                print_speed(mode, row)


if __name__ == "__main__":
    main()
