"""MiniShop's scripted agents on the test split, and the speed of both backends.

Plays every scripted agent (expert, weak, random) on each test goal of the
text backend (``archer/MiniShop-v0``) for ``--trials`` trials (trial ``t`` uses
agent seed ``t``) and prints a Markdown table: success (reward 1) and mean
reward with 95% bootstrap intervals over goals (per-goal means), mean turns
and the invalid-action rate. Then times ``env.step`` (wall clock, resets
excluded, the agent's choice excluded) for the text backend over all those
steps, and for the browser backend (``archer/MiniShopBrowser-v0``, real
headless Chromium) over expert episodes on the first ``--browser-goals`` test
goals, checking that the browser reaches the same rewards. Timing is
reported, never asserted.

    python benchmarks/minishop_eval.py --catalog default --trials 3 --browser-goals 10
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

import numpy as np

from archer_agents.data.stats import bootstrap_mean
from archer_agents.environments.minishop.env import MiniShopEnv


def play(env: MiniShopEnv, agent, task_id: str) -> tuple[float, int, int, float, dict]:
    """One test episode: (return, turns, invalid actions, seconds in env.step, last info)."""
    observation, info = env.reset(options={"split": "test", "task_id": task_id})
    agent.reset(observation, info)
    total, turns, invalid, seconds = 0.0, 0, 0, 0.0
    while True:
        action = agent.act(observation)
        start = time.perf_counter()
        observation, reward, terminated, truncated, info = env.step(action)
        seconds += time.perf_counter() - start
        total += reward
        turns += 1
        invalid += bool(info["invalid_action"])
        if terminated or truncated:
            return total, turns, invalid, seconds, info


def evaluate(env: MiniShopEnv, kind: str, trials: int) -> tuple[dict[str, str], int, float]:
    successes: dict[str, list[float]] = defaultdict(list)
    rewards: dict[str, list[float]] = defaultdict(list)
    turns: list[int] = []
    invalid = steps = 0
    seconds = 0.0
    for trial in range(trials):
        agent = env.make_scripted_agent(kind, seed=trial)
        for task_id in env.task_ids("test"):
            total, n, bad, spent, info = play(env, agent, task_id)
            successes[task_id].append(float(info["success"]))
            rewards[task_id].append(total)
            turns.append(n)
            invalid += bad
            steps += n
            seconds += spent
    success = bootstrap_mean([float(np.mean(v)) for v in successes.values()])
    reward = bootstrap_mean([float(np.mean(v)) for v in rewards.values()])
    row = {
        "agent": kind,
        "episodes": str(len(turns)),
        "goals": str(len(successes)),
        "success": f"{success.mean:.3f}",
        "success 95% CI": f"[{success.low:.3f}, {success.high:.3f}]",
        "mean reward": f"{reward.mean:.3f}",
        "reward 95% CI": f"[{reward.low:.3f}, {reward.high:.3f}]",
        "mean turns": f"{np.mean(turns):.2f}",
        "invalid rate": f"{invalid / steps:.3f}",
    }
    return row, steps, seconds


def browser_speed(catalog: str, goals: int) -> tuple[int, float, float, int, int]:
    """Expert episodes in Chromium: (steps, step seconds, reset seconds, successes, matches)."""
    from archer_agents.environments.minishop.browser import MiniShopBrowserEnv

    text = MiniShopEnv(catalog=catalog)
    browser = MiniShopBrowserEnv(catalog=catalog)
    steps, step_seconds, reset_seconds, successes, matches = 0, 0.0, 0.0, 0, 0
    try:
        browser.reset(seed=0)  # start Chromium outside the timing
        for task_id in text.task_ids("test")[:goals]:
            expected, *_ = play(text, text.make_scripted_agent("expert"), task_id)
            expert = browser.make_scripted_agent("expert")
            start = time.perf_counter()
            observation, info = browser.reset(options={"split": "test", "task_id": task_id})
            reset_seconds += time.perf_counter() - start
            expert.reset(observation, info)
            total = 0.0
            while True:
                action = expert.act(observation)
                start = time.perf_counter()
                observation, reward, terminated, truncated, info = browser.step(action)
                step_seconds += time.perf_counter() - start
                steps += 1
                total += reward
                if terminated or truncated:
                    break
            successes += bool(info["success"])
            matches += total == expected
    finally:
        browser.close()
    return steps, step_seconds, reset_seconds, successes, matches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", default="default", help="catalog name: default or small")
    parser.add_argument("--trials", type=int, default=3, help="trials per test goal and agent")
    parser.add_argument(
        "--browser-goals", type=int, default=10, help="test goals played in Chromium (0: skip)"
    )
    args = parser.parse_args()

    env = MiniShopEnv(catalog=args.catalog)
    rows = []
    text_steps, text_seconds = 0, 0.0
    for kind in env.scripted_kinds:
        row, steps, seconds = evaluate(env, kind, args.trials)
        rows.append(row)
        text_steps += steps
        text_seconds += seconds
    print(f"MiniShop text backend, catalog {args.catalog!r}, test split, {args.trials} trials\n")
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(row.values()) + " |")
    print(f"\ntext backend: {text_steps / text_seconds:,.0f} steps/s over {text_steps} steps")
    if args.browser_goals > 0:
        load = os.getloadavg()[0]
        steps, seconds, resets, successes, matches = browser_speed(args.catalog, args.browser_goals)
        print(
            f"browser backend: {steps / seconds:.2f} steps/s over {steps} steps "
            f"({args.browser_goals} expert episodes; {resets / args.browser_goals:.2f} s per "
            f"reset); expert success {successes}/{args.browser_goals}, same reward as the "
            f"text backend in {matches}/{args.browser_goals} (load average {load:.1f} at the "
            f"start, {os.cpu_count()} CPUs)"
        )


if __name__ == "__main__":
    main()
