"""Mean return and success rate of an environment's scripted agents (expert, weak, random).

Plays ``--episodes`` episodes per agent on one split, each on a task drawn by
the environment from ``seed + episode``, and prints a Markdown table: mean
return and success rate with 95% bootstrap intervals over tasks (per-task
means), mean turns, invalid-action rate and the cost of a step (environment
plus agent). Timing is reported, never asserted.

    python benchmarks/scripted_returns.py --env archer/TwentyQuestions-v0 --episodes 1000
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import gymnasium as gym
import numpy as np

import archer_agents.environments  # noqa: F401  (registers the ids)
from archer_agents.data.stats import bootstrap_mean
from archer_agents.environments.base import TextEnv


def run(env: TextEnv, kind: str, *, episodes: int, split: str, seed: int) -> dict[str, str]:
    agent = env.make_scripted_agent(kind, seed=seed)
    returns: dict[str, list[float]] = defaultdict(list)
    successes: dict[str, list[float]] = defaultdict(list)
    turns, invalid, steps = [], 0, 0
    start = time.perf_counter()
    for episode in range(episodes):
        obs, info = env.reset(seed=seed + episode, options={"split": split})
        agent.reset(obs, info)
        total, turn = 0.0, 0
        while True:
            obs, reward, terminated, truncated, step_info = env.step(agent.act(obs))
            total += float(reward)
            turn += 1
            invalid += bool(step_info.get("invalid_action"))
            if terminated or truncated:
                break
        steps += turn
        turns.append(turn)
        returns[info["task_id"]].append(total)
        successes[info["task_id"]].append(float(step_info["success"]))
    elapsed = time.perf_counter() - start
    per_task_return = [float(np.mean(v)) for v in returns.values()]
    per_task_success = [float(np.mean(v)) for v in successes.values()]
    all_returns = [r for v in returns.values() for r in v]
    all_successes = [s for v in successes.values() for s in v]
    return {
        "agent": kind,
        "episodes": str(episodes),
        "tasks": str(len(returns)),
        "mean return": f"{np.mean(all_returns):.2f}",
        "return 95% CI (tasks)": _interval(per_task_return, 2),
        "success": f"{np.mean(all_successes):.3f}",
        "success 95% CI (tasks)": _interval(per_task_success, 3),
        "mean turns": f"{np.mean(turns):.2f}",
        "invalid rate": f"{invalid / steps:.3f}",
        "us/step": f"{elapsed / steps * 1e6:.0f}",
    }


def _interval(values: list[float], digits: int) -> str:
    estimate = bootstrap_mean(values)
    return f"[{estimate.low:.{digits}f}, {estimate.high:.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="archer/TwentyQuestions-v0", help="registered env id")
    parser.add_argument("--episodes", type=int, default=1000, help="episodes per agent")
    parser.add_argument("--split", default="test", choices=["train", "test"])
    parser.add_argument("--seed", type=int, default=0, help="first episode seed")
    parser.add_argument("--agents", default="expert,weak,random", help="comma-separated kinds")
    args = parser.parse_args()
    env = gym.make(args.env).unwrapped
    if not isinstance(env, TextEnv):
        raise SystemExit(f"{args.env} is not an archer TextEnv; it has no scripted agents")
    rows = [
        run(env, kind, episodes=args.episodes, split=args.split, seed=args.seed)
        for kind in args.agents.split(",")
    ]
    header = list(rows[0])
    print(f"{args.env}, {args.split} split, seed {args.seed}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row[column] for column in header) + " |")


if __name__ == "__main__":
    main()
