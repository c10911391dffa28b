"""The served path on one GPU, end to end, in a few minutes (not run in CI).

1. SmolLM2-135M-Instruct as a Hugging Face folder (`archer init-model`), taught
   the price-lookup tool task (benchmarks/smollm2_tools.py) by a short LoRA
   behaviour cloning in its own chat template and Hermes tool calls;
2. vLLM (the CUDA wheel, float32) serving it with LoRA and
   ``--tool-call-parser hermes``; a stock ``ChatOpenAI.bind_tools`` asks it;
3. a few ArCHer iterations whose rollouts vLLM samples, each actor update
   hot-swapped into the server as a new adapter version (`ServedAlgorithm`);
4. the log-probabilities vLLM returns for the served adapter's samples against
   transformers' on the same ids (bound 1e-3).

Prints one summary and exits non-zero if a check fails. Run it through
``bash scripts/gpu_check.sh`` (which builds vLLM's environment first).

Without a GPU it runs on the CPU, with vLLM's CPU build in ``.venv-vllm``: a dry
run of the same path before renting a GPU. ``--adapter DIR`` starts from a LoRA
adapter already taught the task (e.g. ``.cache/smollm2-tools-run/policy`` from
the benchmark) instead of cloning one, and ``--episodes`` shrinks the ArCHer
iterations, so the dry run takes minutes on two cores rather than an hour.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location(
        "smollm2_tools", REPO / "benchmarks/smollm2_tools.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="SmolLM2 folder (default: converted into .cache/)")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--vllm-python", default=str(REPO / ".venv-vllm/bin/python"))
    parser.add_argument("--adapter", help="a LoRA adapter of SmolLM2 to start from (no cloning)")
    parser.add_argument("--bc-steps", type=int, default=60, help="behaviour cloning steps")
    parser.add_argument("--episodes", type=int, default=32, help="episodes per ArCHer iteration")
    args = parser.parse_args()

    import gymnasium as gym
    import torch

    from archer_agents.formats.conversation import ChatTemplate
    from archer_agents.policies.local_policy import LocalPolicy, LoraSettings
    from archer_agents.policies.protocol import SamplingParams
    from archer_agents.policies.server_policy import ServerPolicy
    from archer_agents.serving.vllm_server import VLLMServer, VLLMSettings
    from archer_agents.training.algorithms.archer import Archer
    from archer_agents.training.algorithms.bc import BCConfig, behaviour_clone
    from archer_agents.training.chat_rollout import ChatScriptedActor, chat_env_factory
    from archer_agents.training.rollout import collect
    from archer_agents.training.served import ServedAlgorithm
    from archer_agents.training.trainer import Trainer
    from archer_agents.training.trainer_config import TrainerConfig

    bench = _bench()
    bench.register()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    summary: dict[str, object] = {"device": device}
    failures: list[str] = []
    started = time.perf_counter()

    folder = bench.model_dir(args.model)
    if args.adapter:  # an adapter of this base, already taught the task
        policy = LocalPolicy.from_pretrained(args.adapter, device=device, seed=0)
    else:
        policy = LocalPolicy.from_pretrained(
            folder, lora=LoraSettings(r=16, alpha=32, dropout=0.0), device=device, seed=0
        )
    factory = chat_env_factory(lambda: gym.make(bench.ENV_ID), policy.tokenizer)
    if not args.adapter:
        expert = collect(
            factory, ChatScriptedActor("expert", policy.tokenizer), 66, seed=0
        ).episodes
        behaviour_clone(
            policy,
            expert,
            BCConfig(steps=args.bc_steps, batch_size=16, learning_rate=1e-3, warmup_steps=5),
        )
    summary["bc_s"] = round(time.perf_counter() - started, 1)

    work = Path(tempfile.mkdtemp(prefix="archer-gpu-check-"))
    settings = VLLMSettings(
        served_model_name="smollm2",
        port=0,
        dtype="float32",  # log-probabilities comparable with transformers' float32
        max_model_len=2048,
        extra_args=("--enforce-eager", "--gpu-memory-utilization", "0.3"),
    )
    with VLLMServer(folder, settings, python=args.vllm_python, log_path=work / "vllm.log") as vllm:
        summary["vllm_start_s"] = round(vllm.startup_seconds or 0.0, 1)
        summary["tool_call_parser"] = vllm.command()[vllm.command().index("--tool-call-parser") + 1]

        archer = Archer(bench.archer_config(40, batch=args.episodes, warmup=1), policy)
        served = ServedAlgorithm.connect(archer, vllm.url, work / "registry", keep=1)
        iterations: list[dict[str, float]] = []
        trainer = Trainer(
            served,
            bench.ENV_ID,
            work / "run",
            TrainerConfig(
                iterations=args.iterations,
                episodes_per_iteration=args.episodes,
                num_envs=args.episodes,
                eval_every=0,
                eval_episodes=1,
                checkpoint_every=0,
                tensorboard=False,
            ),
            on_iteration=lambda i, m: iterations.append({"iteration": i, **m}),
        )
        trainer.train()
        versions = sorted({m.get("serve/version") for m in iterations if "serve/version" in m})
        summary["archer_iterations"] = len(iterations)
        summary["served_versions"] = versions
        summary["swap_s"] = [round(m["serve/swap_s"], 2) for m in iterations if "serve/swap_s" in m]
        if not summary["swap_s"]:
            failures.append("no adapter was hot-swapped into vLLM")

        # Log-probability parity on the served (active) adapter.
        active = served.registry.active
        assert active is not None
        local = LocalPolicy.from_pretrained(active.path, device=device)
        template = ChatTemplate(local.tokenizer, factory().unwrapped.tool_specs)
        env = factory().unwrapped
        env.reset(seed=0, options={"split": "test"})
        prompts = [tuple(template.prompt_ids(env.chat_messages()))] * 8
        with ServerPolicy(vllm.url, served.registry.served_name(active), folder) as remote:
            generations = remote.generate(prompts, SamplingParams(max_new_tokens=32))
        with torch.no_grad():
            scores = local.log_probs(prompts, [g.token_ids for g in generations])
        gap = max(
            max(abs(a - b) for a, b in zip(g.logprobs, s.tolist(), strict=True))
            for g, s in zip(generations, scores, strict=True)
        )
        summary["logprob_max_gap"] = gap
        if gap > 1e-3:
            failures.append(f"log-probability gap {gap:.2e} > 1e-3")

        # A stock LangChain client gets OpenAI tool calls from the adapter.
        from langchain_openai import ChatOpenAI

        tools = [{"type": "function", "function": spec} for spec in env.tool_specs]
        client = ChatOpenAI(
            base_url=f"{vllm.url}/v1",
            model=served.registry.served_name(active),
            api_key="unused",
            temperature=0,
            max_tokens=48,
        ).bind_tools(tools)
        answer = client.invoke(env.chat_messages()[-1]["content"])
        summary["tool_calls"] = [(c["name"], c["args"]) for c in answer.tool_calls]
        if not answer.tool_calls:
            failures.append("vLLM returned no tool_calls to ChatOpenAI.bind_tools")
        served.close()

    summary["total_s"] = round(time.perf_counter() - started, 1)
    summary["failures"] = failures
    print(json.dumps(summary, indent=2, default=str))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
