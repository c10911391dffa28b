"""Throughput of `LocalPolicy.generate` on the embedded model, on this machine's CPU.

Builds a model of the named size as ``archer init-model`` does (randomly
initialised, tokenizer trained on the environments' text) and times batched
sampling of utterances of ``--max-new-tokens`` tokens for Twenty Questions
prompts of 0 to 19 turns. A random model rarely emits eos, so nearly every
utterance runs to the token limit.
Reports generated tokens per second (eos included) and utterances per second.

    HF_HUB_OFFLINE=1 python benchmarks/generation_throughput.py --size demo --batch-sizes 1 64
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import SamplingParams
from archer_agents.policies.tiny_model import init_model
from archer_agents.training.corpus import environment_corpus

QUESTIONS = [
    "Is it an animal?",
    "Is it a mammal?",
    "Is it made of metal?",
    "Is it bigger than a car?",
    "Can you eat it?",
    "Is it used in the kitchen?",
    "Does it live in water?",
    "Is it a fruit?",
    "Does it have wheels?",
    "Is it found in a house?",
    "Is it a tool?",
    "Is it a bird?",
]


def observation(rng: random.Random, turns: int) -> str:
    lines = [f"{rng.choice(QUESTIONS)} {rng.choice(['Yes.', 'No.'])}" for _ in range(turns)]
    return "Questions:\n" + "".join(line + "\n" for line in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="demo")
    parser.add_argument("--vocab-size", type=int, default=2048, help="as archer init-model")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="time budget per batch size")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = random.Random(0)
    corpus = environment_corpus(seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = init_model(
            Path(tmp) / "model", corpus, size=args.size, vocab_size=args.vocab_size
        )
        policy = LocalPolicy.from_pretrained(model_dir, seed=0)
    n_params = sum(p.numel() for p in policy.model.parameters())
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens)
    print(
        f"size={args.size} params={n_params / 1e6:.2f}M vocab={len(policy.tokenizer)} "
        f"max_new_tokens={args.max_new_tokens} torch_threads={torch.get_num_threads()}"
    )
    for batch_size in args.batch_sizes:
        observations = [observation(rng, rng.randint(0, 19)) for _ in range(batch_size)]
        policy.generate(observations, sampling)  # warm-up
        calls, tokens, start = 0, 0, time.perf_counter()
        while calls < 3 or time.perf_counter() - start < args.seconds:
            generations = policy.generate(observations, sampling)
            tokens += sum(len(g.token_ids) for g in generations)
            calls += 1
        elapsed = time.perf_counter() - start
        prompt_lengths = [len(g.prompt_token_ids) for g in generations]
        print(
            f"batch={batch_size:<4d} prompt_tokens(mean/max)="
            f"{sum(prompt_lengths) / batch_size:.0f}/{max(prompt_lengths)} "
            f"calls={calls:<5d} tokens/s={tokens / elapsed:9.1f} "
            f"utterances/s={calls * batch_size / elapsed:8.1f} "
            f"ms/call={1000 * elapsed / calls:8.1f}"
        )


if __name__ == "__main__":
    main()
