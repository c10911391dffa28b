"""What the LangChain face costs over calling the policy directly, on this machine's CPU.

Times, per model call on one Twenty Questions prompt (greedy, the embedded
model of ``--size`` built as ``archer init-model`` does):

- ``LocalPolicy.generate`` on the rendered prompt;
- ``ArcherChatModel.invoke`` with the environment's tool bound (rendering,
  sampling, tool-call parsing, LangChain's callback machinery);
- the same with an `EpisodeRecorder` attached (the episode stays in memory
  awaiting feedback, as in production; no write).

    HF_HUB_OFFLINE=1 python benchmarks/langchain_overhead.py --size demo --calls 50
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from langchain_core.messages import HumanMessage

from archer_agents.formats.prompts import render_messages
from archer_agents.langchain.chat_model import ArcherChatModel
from archer_agents.langchain.recorder import EpisodeRecorder
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import SamplingParams
from archer_agents.policies.tiny_model import init_model
from archer_agents.tools.twenty_questions import make_twenty_questions_tool
from archer_agents.training.corpus import environment_corpus


def per_call_ms(fn: Callable[[], object], calls: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="demo", help="embedded model size (test or demo)")
    parser.add_argument("--calls", type=int, default=50, help="timed calls per form")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = init_model(Path(tmp) / "model", environment_corpus(seed=0), size=args.size)
        policy = LocalPolicy.from_pretrained(model_dir, seed=0)
        sampling = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
        tool = make_twenty_questions_tool("dog")
        messages = [HumanMessage("Find the secret object.")]
        observation = render_messages(messages, [tool])
        model = ArcherChatModel(policy=policy, sampling=sampling).bind_tools([tool])
        recorder = EpisodeRecorder(Path(tmp) / "episodes.jsonl", max_waiting=10 * args.calls)
        rows = {
            "LocalPolicy.generate": lambda: policy.generate([observation], sampling),
            "ArcherChatModel.invoke": lambda: model.invoke(messages),
            "ArcherChatModel.invoke + EpisodeRecorder": lambda: model.invoke(
                messages, config={"callbacks": [recorder]}
            ),
        }
        print(f"size={args.size} calls={args.calls} max_new_tokens={args.max_new_tokens}")
        for name, fn in rows.items():
            print(f"{name:45s} {per_call_ms(fn, args.calls):8.1f} ms/call")


if __name__ == "__main__":
    main()
