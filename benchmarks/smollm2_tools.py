"""A real instruct model in its own format: SmolLM2-135M-Instruct on a two-step tool task.

The task is an environment of the user's own (`register_tool_env`): "how much
does one <item> cost?". The agent must call ``get_price(item)``, read the price
in the tool's answer, then call ``answer(price)``; prices are drawn per task and
the test split's items never appear in training, so the price has to be read,
not remembered. The model plays in its own chat template (ChatML, tools in the
system turn) and writes Hermes ``<tool_call>`` tags, which the environment
reads as vLLM's hermes parser does; every prompt is token-exact.

Rows, the same environment and test tasks for each (greedy decoding):

1. zero-shot: the model as shipped;
2. LoRA behaviour cloning on the scripted expert's episodes, recorded in the
   model's template and format (`ChatScriptedActor`);
3. ArCHer with LoRA from (2), for a fixed wall-clock budget.

Success and return with 95% intervals over tasks, and the rollouts' tokens per
second. Results go to ``--out`` (markdown) and are printed.

    python benchmarks/smollm2_tools.py --out benchmarks/results/smollm2_tools.md

``--smoke`` runs every row in a minute or two (tests).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gymnasium as gym
import torch
from langchain_core.tools import tool

from archer_agents.environments import register_tool_env
from archer_agents.policies.local_policy import LocalPolicy, LoraSettings
from archer_agents.policies.protocol import SamplingParams
from archer_agents.training.algorithms.archer import Archer
from archer_agents.training.algorithms.archer_config import ArcherConfig
from archer_agents.training.algorithms.bc import BCConfig, behaviour_clone
from archer_agents.training.chat_rollout import (
    ChatPolicyActor,
    ChatScriptedActor,
    chat_env_factory,
)
from archer_agents.training.evaluation import summarize
from archer_agents.training.rollout import collect, split_task_ids
from archer_agents.training.trainer import Trainer
from archer_agents.training.trainer_config import TrainerConfig

ENV_ID = "bench/PriceLookup-v0"
ITEMS = [
    "apple",
    "banana",
    "cherry",
    "grape",
    "lemon",
    "mango",
    "melon",
    "orange",
    "peach",
    "pear",
    "plum",
    "kiwi",
    "lime",
    "fig",
    "date",
    "carrot",
    "potato",
    "onion",
    "tomato",
    "pepper",
    "garlic",
    "ginger",
    "celery",
    "radish",
    "turnip",
    "leek",
    "cabbage",
    "spinach",
    "lettuce",
    "pumpkin",
]
TRAIN_ITEMS, TEST_ITEMS = ITEMS[:22], ITEMS[22:]


def _tasks(items: list[str], copies: int, seed: int, split: str) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "task_id": f"{split}-{item}-{k}",
            "instruction": f"How much does one {item} cost? Look it up, then answer.",
            "data": {"item": item, "price": rng.randint(2, 99)},
        }
        for k in range(copies)
        for item in items
    ]


def register() -> None:
    """Register the price-lookup environment (a user's own tools, in the user's namespace)."""

    def new_state(task: Any) -> dict[str, Any]:
        return {"price": task.data["price"], "item": task.data["item"], "answer": None}

    def make_tools(state: dict[str, Any]) -> list[Any]:
        @tool
        def get_price(item: str) -> str:
            """The price of one item, in dollars."""
            if item.strip().lower() != state["item"]:
                return f"No price for {item!r} today."
            return f"One {state['item']} costs {state['price']} dollars."

        @tool
        def answer(price: int) -> str:
            """Give the final answer: the price in dollars."""
            state["answer"] = price
            return "Answer recorded."

        return [get_price, answer]

    def expert(task: Any, state: Any) -> list[str]:
        item, price = task.data["item"], task.data["price"]
        return [json.dumps({"name": "get_price", "arguments": {"item": item}}),
                json.dumps({"name": "answer", "arguments": {"price": price}})]  # fmt: skip

    register_tool_env(
        ENV_ID,
        make_tools=make_tools,
        new_state=new_state,
        tasks={
            "train": _tasks(TRAIN_ITEMS, 3, seed=1, split="train"),
            "test": _tasks(TEST_ITEMS, 6, seed=2, split="test"),
        },
        reward=lambda state, task, calls: state["answer"] == task.data["price"],
        expert=expert,
        final_tools=["answer"],
        max_turns=4,
    )


def model_dir(explicit: str | None) -> Path:
    """``--model``, else SmolLM2 converted once into .cache/ (`archer init-model`)."""
    if explicit:
        return Path(explicit)
    from archer_agents.policies.base_models import write_base_model

    target = Path(".cache/smollm2-135m-instruct")
    if not (target / "config.json").is_file():
        write_base_model("smollm2-135m-instruct", target)
    return target


def archer_config(max_new_tokens: int, *, batch: int, warmup: int) -> ArcherConfig:
    """ArCHer for a LoRA adapter on this task: the rollout's own turns, a hashing critic."""
    return ArcherConfig(
        actor_lr=1e-4,
        actor_steps=1,
        actor_batch_size=batch,
        micro_batch_size=batch,
        actor_states="latest",
        critic_lr=1e-3,
        critic_steps=2,  # each step samples a fresh reply at every state of its batch
        critic_batch_size=32,
        warmup_iterations=warmup,
        max_new_tokens=max_new_tokens,
        encoder="hashing",
    )


def evaluate(policy: LocalPolicy, factory: Any, episodes: int, max_new_tokens: int) -> Any:
    greedy = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    tasks = split_task_ids(factory, "test")
    result = collect(
        factory,
        ChatPolicyActor(policy, greedy),
        episodes,
        num_envs=16,
        split="test",
        task_ids=tasks,
        seed=10_000,
    )
    return summarize(result.episodes), result.tokens_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="SmolLM2 folder (default: converted into .cache/)")
    parser.add_argument("--eval-episodes", type=int, default=48)
    parser.add_argument("--bc-episodes", type=int, default=66)
    parser.add_argument("--bc-steps", type=int, default=60)
    parser.add_argument("--archer-budget-s", type=float, default=600.0)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for tests")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.smoke:
        args.eval_episodes, args.bc_episodes, args.bc_steps = 4, 4, 2
        args.archer_budget_s = 1.0
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    register()
    folder = model_dir(args.model)
    lora = LoraSettings(r=16, alpha=32, dropout=0.0)
    policy = LocalPolicy.from_pretrained(folder, lora=lora, seed=0)
    factory = chat_env_factory(lambda: gym.make(ENV_ID), policy.tokenizer)
    rows: dict[str, tuple[Any, float, float]] = {}

    started = time.perf_counter()
    with policy.model.disable_adapter():  # the model as shipped
        summary, tps = evaluate(policy, factory, args.eval_episodes, args.max_new_tokens)
    rows["zero-shot"] = (summary, tps, 0.0)
    print(f"zero-shot: {summary.success} ({time.perf_counter() - started:.0f} s)", flush=True)

    started = time.perf_counter()
    expert = collect(
        factory,
        ChatScriptedActor("expert", policy.tokenizer, seed=0),
        args.bc_episodes,
        num_envs=16,
        seed=0,
    ).episodes
    config = BCConfig(
        steps=args.bc_steps, batch_size=16, learning_rate=1e-3, warmup_steps=5, packed=True
    )
    behaviour_clone(policy, expert, config)
    bc_seconds = time.perf_counter() - started
    summary, tps = evaluate(policy, factory, args.eval_episodes, args.max_new_tokens)
    rows["LoRA behaviour cloning"] = (summary, tps, bc_seconds)
    print(f"behaviour cloning: {summary.success} ({bc_seconds:.0f} s)", flush=True)

    started = time.perf_counter()
    archer = Archer(archer_config(args.max_new_tokens, batch=16, warmup=2), policy)
    run = Path(".cache/smollm2-tools-run")
    shutil.rmtree(run, ignore_errors=True)  # every run starts ArCHer from this run's clone
    trainer = Trainer(
        archer,
        ENV_ID,
        run,
        TrainerConfig(
            iterations=1 if args.smoke else 10_000,
            episodes_per_iteration=16,
            num_envs=16,
            eval_every=0,
            eval_episodes=1,
            checkpoint_every=0,
            tensorboard=False,
            time_budget_s=args.archer_budget_s,
        ),
        env_factory=lambda: gym.make(ENV_ID),
    )
    trainer.train()
    archer_seconds = time.perf_counter() - started
    summary, tps = evaluate(policy, factory, args.eval_episodes, args.max_new_tokens)
    rows[f"ArCHer + LoRA ({archer.actor_updates} actor updates)"] = (summary, tps, archer_seconds)
    print(f"ArCHer: {summary.success} ({archer_seconds:.0f} s)", flush=True)

    lines = [
        "| row | success [95% CI] | return [95% CI] | training s | eval tokens/s |",
        "|---|---|---|---|---|",
    ]
    for name, (s, tps, seconds) in rows.items():
        lines.append(
            f"| {name} | {s.success.mean:.3f} [{s.success.low:.3f}, {s.success.high:.3f}] | "
            f"{s.mean_return.mean:.2f} [{s.mean_return.low:.2f}, {s.mean_return.high:.2f}] | "
            f"{seconds:.0f} | {tps:.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            "# SmolLM2-135M-Instruct on a two-step tool task (bench/PriceLookup-v0)\n\n"
            f"Command: `python benchmarks/smollm2_tools.py --eval-episodes {args.eval_episodes} "
            f"--bc-episodes {args.bc_episodes} --bc-steps {args.bc_steps} "
            f"--archer-budget-s {args.archer_budget_s:.0f} --out {args.out}`\n\n"
            f"{args.eval_episodes} greedy test episodes per row over {len(TEST_ITEMS)} unseen "
            "items; 95% intervals over tasks.\n\n" + table + "\n"
        )


if __name__ == "__main__":
    main()
