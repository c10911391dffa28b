"""SupportSim's scripted agents on the test split: success, DB/output match and pass^k.

Runs every scripted agent (expert, weak, random) for ``--trials`` trials on
each test task (trial ``t`` uses agent seed ``t``) and prints a Markdown
table: success with a 95% bootstrap interval over tasks (per-task means),
pass^1..k (tau-bench's C(c,k)/C(n,k) averaged over tasks), DB-match,
output-match and confirmed-writes rates, mean turns, invalid-action and
tool-error rates, and the CPU time of the environment's step alone
(``time.process_time``, so other processes on the machine do not inflate it),
resets excluded, the end-of-episode reward included. Also times
database generation and environment construction. Timing is reported, never
asserted.

    python benchmarks/support_sim_eval.py --size default --trials 4
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from archer_agents.data.stats import bootstrap_mean, pass_hat_k
from archer_agents.environments.support.env import SupportSimEnv
from archer_agents.tools.support import generate_database


def evaluate(env: SupportSimEnv, kind: str, trials: int) -> dict[str, str]:
    successes: dict[str, list[bool]] = defaultdict(list)
    flags: dict[str, list[float]] = defaultdict(list)
    turns: list[int] = []
    returns: list[float] = []
    invalid = tool_errors = steps = 0
    step_seconds = 0.0
    for trial in range(trials):
        agent = env.make_scripted_agent(kind, seed=trial)
        for task_id in env.task_ids("test"):
            observation, info = env.reset(options={"split": "test", "task_id": task_id})
            agent.reset(observation, info)
            total, turn, done = 0.0, 0, False
            while not done:
                action = agent.act(observation)
                start = time.process_time()
                observation, reward, terminated, truncated, info = env.step(action)
                step_seconds += time.process_time() - start
                total += reward
                turn += 1
                invalid += bool(info["invalid_action"])
                tool_errors += bool(info["tool_error"])
                done = terminated or truncated
            steps += turn
            turns.append(turn)
            returns.append(total)
            successes[task_id].append(bool(info["success"]))
            for key in ("db_match", "output_match", "writes_confirmed"):
                flags[key].append(float(info[key]))
    per_task = [float(np.mean(v)) for v in successes.values()]
    row = {
        "agent": kind,
        "episodes": str(len(returns)),
        "success": f"{bootstrap_mean(per_task)}",
    }
    for k in range(1, trials + 1):
        row[f"pass^{k}"] = f"{pass_hat_k(successes, k):.3f}"
    row.update(
        {
            "DB match": f"{np.mean(flags['db_match']):.3f}",
            "output match": f"{np.mean(flags['output_match']):.3f}",
            "writes confirmed": f"{np.mean(flags['writes_confirmed']):.3f}",
            "mean return": f"{np.mean(returns):.3f}",
            "mean turns": f"{np.mean(turns):.1f}",
            "invalid rate": f"{invalid / steps:.3f}",
            "tool-error rate": f"{tool_errors / steps:.3f}",
            "env steps/s (CPU)": f"{steps / step_seconds:.0f}",
        }
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="default", help="database size: default or small")
    parser.add_argument("--seed", type=int, default=0, help="database and task seed")
    parser.add_argument("--trials", type=int, default=4, help="trials per test task and agent")
    parser.add_argument("--agents", nargs="+", default=["expert", "weak", "random"])
    args = parser.parse_args()

    wall, cpu = time.perf_counter(), time.process_time()
    generate_database(args.seed, args.size)
    generation = f"{time.process_time() - cpu:.2f} s CPU ({time.perf_counter() - wall:.2f} s wall)"
    wall, cpu = time.perf_counter(), time.process_time()
    env = SupportSimEnv(seed=args.seed, size=args.size)
    construction = (
        f"{time.process_time() - cpu:.2f} s CPU ({time.perf_counter() - wall:.2f} s wall)"
    )
    print(
        f"database generation: {generation}; environment (database + tasks): "
        f"{construction}; {len(env.db.users)} users, {len(env.db.orders)} orders, "
        f"{len(env.db.products)} products, "
        f"{sum(len(p.variants) for p in env.db.products.values())} variants\n"
    )
    rows = [evaluate(env, kind, args.trials) for kind in args.agents]
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row[h] for h in header) + " |")


if __name__ == "__main__":
    main()
