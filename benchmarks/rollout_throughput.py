"""Rollout throughput: episodes and generated tokens per second at several batch sizes.

Builds the embedded demo model (untrained weights: its utterances are as long as
a trained model's at most, so this is a fair upper bound on tokens per episode),
then plays Twenty Questions with `collect` at each ``--num-envs`` (one batched
generation per turn for all running episodes) and prints a table.

    python benchmarks/rollout_throughput.py --episodes 64 --num-envs 1 64
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import SamplingParams
from archer_agents.policies.tiny_model import init_model
from archer_agents.training.cached_rollout import CachedPolicyActor
from archer_agents.training.corpus import environment_corpus
from archer_agents.training.rollout import collect, make_env_factory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="archer/TwentyQuestions-v0")
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", help="policy directory (default: a fresh demo model)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or init_model(f"{tmp}/model", environment_corpus(), size="demo")
        policy = LocalPolicy.from_pretrained(model_dir, seed=0)
        params = sum(p.numel() for p in policy.model.parameters())
        print(f"{model_dir}: {params / 1e6:.2f}M parameters, torch threads {args.threads}")
        factory = make_env_factory(args.env)
        sampling = SamplingParams(max_new_tokens=args.max_new_tokens)
        print("| batch (num_envs) | episodes | turns | seconds | episodes/s | tokens/s |")
        print("|---|---|---|---|---|---|")
        for num_envs in args.num_envs:
            episodes = max(args.episodes, num_envs)
            start = time.perf_counter()
            result = collect(
                factory, CachedPolicyActor(policy, sampling), episodes, num_envs=num_envs
            )
            seconds = time.perf_counter() - start
            turns = sum(e.num_turns for e in result.episodes)
            print(
                f"| {num_envs} | {episodes} | {turns} | {seconds:.1f} | "
                f"{episodes / seconds:.2f} | {result.generated_tokens / seconds:.0f} |"
            )


if __name__ == "__main__":
    main()
