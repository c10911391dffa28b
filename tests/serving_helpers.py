"""Helpers shared by the serving tests: adapters with known weights, a server on a free port."""

from __future__ import annotations

from pathlib import Path

import torch

from archer_agents.policies.local_policy import LocalPolicy, LoraSettings


def random_lora_policy(model_dir: Path, seed: int, r: int = 8, scale: float = 0.3) -> LocalPolicy:
    """A policy whose LoRA B matrices are random (a fresh adapter's are zero, a no-op)."""
    policy = LocalPolicy.from_pretrained(model_dir, lora=LoraSettings(r=r, alpha=2 * r))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, weight in policy.model.named_parameters():
            if "lora_B" in name:
                weight.copy_(torch.randn(weight.shape, generator=generator) * scale)
    return policy


def random_adapter(model_dir: Path, out: Path, seed: int, r: int = 8, scale: float = 0.3) -> Path:
    """Save a `random_lora_policy`'s adapter to ``out``."""
    return random_lora_policy(model_dir, seed, r, scale).save(out)


def start_local_server(model_dir: Path, settings=None, adapters=None):
    """The local server on a free 127.0.0.1 port, serving ``model_dir`` as "tiny"."""
    from archer_agents.serving.local_server import LocalServer, create_app

    policy = LocalPolicy.from_pretrained(model_dir)
    app = create_app(policy, "tiny", settings, adapters=adapters)
    return LocalServer(app).start()


OBSERVATIONS = (
    "Questions:\nIs it an animal? Yes.\n",
    "Questions:\nIs it a fruit? No.\nIs it made of metal?",
    "Is it",
    "Questions:\n",
)
