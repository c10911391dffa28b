"""Soak of the local server: mixed valid and malformed requests on loopback for a fixed time.

Starts the local server (the "test"-size embedded model) as its own process
on 127.0.0.1 and a free port, then for ``--duration`` seconds ``--clients``
threads each send requests back to back, alternating at random between valid
ones (completions and chat, a few tokens each) and malformed ones (NaN,
deep nesting, out-of-range integers, broken tool schemas and arguments,
unknown fields). It prints requests, errors, p50/p95 latency and the server
process's resident memory (``VmRSS`` from /proc) after warm-up and at the end,
then stops the server (the server also stops by itself when this process
goes, as its stdin closes).

An error is a valid request that did not get 200, or a malformed one that did
not get a 4xx. ``tests/test_serving_soak.py`` runs it for 60 s and asserts no
errors, memory growth under `RSS_TOLERANCE_MIB` and a healthy server after.

    HF_HUB_OFFLINE=1 python benchmarks/serving_soak.py --duration 60 --clients 3
"""

from __future__ import annotations

import argparse
import json
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

RSS_TOLERANCE_MIB = 32.0
"""Most the server's RSS may grow from the end of warm-up to the end of the soak."""
WARMUP_FRACTION = 0.2
"""Share of the duration before the baseline RSS is read (allocator and caches settle)."""
CORPUS = (
    "Questions:\nIs it an animal? Yes.\nIs it a bird? Yes.\nIs it a penguin? Yes.\n",
    "Questions:\nIs it a fruit? Yes.\nIs it red? No.\nIs it a banana? Yes.\n",
)
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Is it"}], "max_tokens": 8}
VALID: list[tuple[str, dict[str, Any]]] = [
    ("/v1/completions", {"model": "tiny", "prompt": "Questions:\nIs it", "max_tokens": 8}),
    ("/v1/completions", {"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 8, "logprobs": 2}),
    ("/v1/chat/completions", CHAT),
    (
        "/v1/chat/completions",
        {**CHAT, "tools": [{"type": "function", "function": {"name": "lookup"}}]},
    ),
]
ARGS_CALL = [
    {"role": "user", "content": "x"},
    {"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": ""}}]},
]


def _with_arguments(arguments: str) -> bytes:
    messages = json.loads(json.dumps(ARGS_CALL))
    messages[1]["tool_calls"][0]["function"]["arguments"] = arguments
    return json.dumps({**CHAT, "messages": messages}).encode()


INVALID: list[tuple[str, bytes]] = [
    ("/v1/completions", b'{"model": "tiny", "prompt": [1], "temperature": NaN}'),
    ("/v1/completions", b"[" * 5000 + b"]" * 5000),
    (
        "/v1/completions",
        json.dumps({"model": "tiny", "prompt": [1], "max_tokens": 10**30}).encode(),
    ),
    ("/v1/completions", json.dumps({"model": "tiny", "prompt": [1], "logprobs": -1}).encode()),
    ("/v1/completions", json.dumps({"model": "tiny", "prompt": [1], "seed": 2**70}).encode()),
    ("/v1/completions", json.dumps({"model": "tiny", "prompt": [1] * 5000}).encode()),
    ("/v1/completions", b'{"model": "tiny", "prompt": "\\ud800"}'),
    ("/v1/completions", b"{not json"),
    (
        "/v1/chat/completions",
        json.dumps(
            {
                **CHAT,
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"properties": [1]}},
                    }
                ],
            }
        ).encode(),
    ),
    ("/v1/chat/completions", _with_arguments('{"a": ' * 300 + "1" + "}" * 300)),
    ("/v1/chat/completions", _with_arguments('{"a": ' + "9" * 5000 + "}")),
    ("/v1/chat/completions", _with_arguments('{"a": Infinity}')),
    ("/v1/chat/completions", json.dumps({**CHAT, "temprature": 1}).encode()),
    ("/v1/load_lora_adapter", json.dumps({"lora_name": "x", "lora_path": "/nonexistent"}).encode()),
]


def serve_forever(model_dir: str) -> None:
    """Child process: serve ``model_dir`` as "tiny" on 127.0.0.1, print the port, stop at stdin EOF."""
    import torch

    from archer_agents.policies.local_policy import LocalPolicy
    from archer_agents.serving.local_server import LocalServer, ServerSettings, create_app

    torch.set_num_threads(1)
    app = create_app(LocalPolicy.from_pretrained(model_dir), "tiny", ServerSettings(seed=0))
    with LocalServer(app) as server:
        print(server.port, flush=True)
        sys.stdin.read()  # returns when the parent closes the pipe or exits


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (``VmRSS`` in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def soak(duration: float = 60.0, clients: int = 3, seed: int = 0) -> dict[str, Any]:
    """Run the soak and return its figures (see the module docstring)."""
    from archer_agents.policies.tiny_model import init_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = init_model(Path(tmp) / "model", CORPUS, size="test", vocab_size=512, seed=0)
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(model_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            port = int(child.stdout.readline())
            return _drive(f"http://127.0.0.1:{port}", child.pid, duration, clients, seed)
        finally:
            assert child.stdin is not None
            child.stdin.close()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _drive(url: str, pid: int, duration: float, clients: int, seed: int) -> dict[str, Any]:
    lock = threading.Lock()
    latencies: dict[str, list[float]] = {"valid": [], "invalid": []}
    errors: dict[str, list[str]] = {"valid": [], "invalid": []}
    start = time.monotonic()
    deadline = start + duration

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        headers = {"content-type": "application/json"}
        with httpx.Client(base_url=url, timeout=120) as http:
            while time.monotonic() < deadline:
                valid = rng.random() < 0.5
                if valid:
                    path, body = rng.choice(VALID)
                    content = json.dumps(body).encode()
                else:
                    path, content = rng.choice(INVALID)
                sent = time.perf_counter()
                try:
                    status = http.post(path, content=content, headers=headers).status_code
                except httpx.HTTPError as exc:
                    status, problem = 0, f"{path}: {exc!r}"
                else:
                    problem = f"{path}: {status}"
                elapsed = time.perf_counter() - sent
                ok = status == 200 if valid else 400 <= status < 500
                kind = "valid" if valid else "invalid"
                with lock:
                    latencies[kind].append(elapsed)
                    if not ok:
                        errors[kind].append(problem)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(duration * WARMUP_FRACTION)
    rss_warm = rss_mib(pid)
    peak = rss_warm
    while any(thread.is_alive() for thread in threads):
        peak = max(peak, rss_mib(pid))
        time.sleep(0.5)
    for thread in threads:
        thread.join()
    rss_end = rss_mib(pid)
    healthy = httpx.get(f"{url}/health").status_code == 200
    after = httpx.post(f"{url}/v1/completions", json=VALID[0][1], timeout=60).status_code == 200

    def ms(values: list[float], q: float) -> float:
        return (
            1000 * statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else float("nan")
        )

    return {
        "duration_s": time.monotonic() - start,
        "clients": clients,
        "requests": {kind: len(values) for kind, values in latencies.items()},
        "errors": {kind: len(found) for kind, found in errors.items()},
        "error_samples": {kind: found[:5] for kind, found in errors.items()},
        "p50_ms": {kind: ms(values, 50) for kind, values in latencies.items()},
        "p95_ms": {kind: ms(values, 95) for kind, values in latencies.items()},
        "rss_warm_mib": rss_warm,
        "rss_end_mib": rss_end,
        "rss_peak_mib": peak,
        "healthy_after": healthy and after,
    }


def table(result: dict[str, Any]) -> str:
    """The figures as two Markdown tables: per kind of request, then memory and health."""
    rows = ["| kind | requests | errors | p50 latency | p95 latency |", "|---|---|---|---|---|"]
    for kind in ("valid", "invalid"):
        rows.append(
            f"| {kind} | {result['requests'][kind]} | {result['errors'][kind]} | "
            f"{result['p50_ms'][kind]:.1f} ms | {result['p95_ms'][kind]:.1f} ms |"
        )
    growth = result["rss_end_mib"] - result["rss_warm_mib"]
    rows += [
        "",
        "| duration | clients | RSS after warm-up | RSS at end | growth | peak | healthy after |",
        "|---|---|---|---|---|---|---|",
        f"| {result['duration_s']:.1f} s | {result['clients']} | {result['rss_warm_mib']:.1f} MiB | "
        f"{result['rss_end_mib']:.1f} MiB | {growth:+.1f} MiB | {result['rss_peak_mib']:.1f} MiB | "
        f"{'yes' if result['healthy_after'] else 'NO'} |",
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--clients", type=int, default=3, help="client threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serve", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_forever(args.serve)
        return
    result = soak(args.duration, args.clients, args.seed)
    print(table(result))
    for kind, samples in result["error_samples"].items():
        for sample in samples:
            print(f"{kind} error: {sample}")


if __name__ == "__main__":
    main()
