"""Training whose rollouts come from a server: every actor update becomes a served adapter version.

The split between serving and training: an OpenAI-compatible
server (vLLM on GPUs, or the local server) samples the rollouts, gradients are
computed locally. `ServedAlgorithm` wraps any `Algorithm` that trains a LoRA
adapter on a `LocalPolicy`, without changing the algorithm or the trainer:

- `actor` samples through a `ServerPolicy` with the algorithm's own sampling
  settings: a plain policy sampler (`PolicyActor`, `CachedPolicyActor`)
  becomes a `PolicyActor` over the server, and CHAI's critic-ranked actor ranks
  candidates the server samples. Any other actor is refused.
- `update` runs the algorithm's update. When it wrote to the policy's weights
  (actor steps ran), the adapter is saved as the registry's next version and
  promoted (`archer_agents.policies.adapters.Deployment`): loaded into the server under
  its versioned name, new rollouts routed to it, versions older than ``keep``
  unloaded. Metrics gain ``serve/version``, ``serve/swap_s`` (save, load,
  route and unload) and ``serve/load_s`` (the server's load alone).
- Before the first rollout, and again after a resume, the server must sample
  from exactly the local weights: the registry's active version is promoted
  again when it holds them (a resumed run, or a run started from that
  version), otherwise they are saved as a new version first. Numbering
  always continues from the registry's newest version.

Each rollout transition records the served name of the version that sampled
it (``archer-v0003``) as its ``policy_version``. `observe`, `state_dict` and
`load_state_dict` are the algorithm's own, so a checkpoint resumes with or
without a server.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from torch import nn

from archer_agents.data.schema import Episode
from archer_agents.policies.adapters import AdapterRegistry, AdapterVersion, Deployment
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.server_policy import ServerPolicy
from archer_agents.training.algorithm import Algorithm
from archer_agents.training.algorithms.chai import ChaiActor
from archer_agents.training.cached_rollout import CachedPolicyActor
from archer_agents.training.rollout import Actor, PolicyActor

logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"


class ServedAlgorithm:
    """``algorithm``, its rollouts sampled by ``server_policy``, its versions deployed.

    Args:
        algorithm: any `Algorithm` whose ``policy`` is a `LocalPolicy` with a LoRA adapter.
        server_policy: samples the rollouts; `Deployment.promote` routes it.
        deployment: the adapter registry and the server the versions are loaded into.
    """

    def __init__(
        self, algorithm: Algorithm, server_policy: ServerPolicy, deployment: Deployment
    ) -> None:
        self.algorithm = algorithm
        self.policy = _lora_policy(algorithm)
        """The local policy the algorithm trains (the trainer exports it)."""
        self.server_policy = server_policy
        self.deployment = deployment
        self.name = algorithm.name
        self.served: AdapterVersion | None = None
        """The version the server samples rollouts from; None until the first is promoted."""
        self._server_actor(algorithm.actor())  # refuse an unservable actor now, not mid-run

    @classmethod
    def connect(
        cls,
        algorithm: Algorithm,
        base_url: str,
        registry: str | Path | AdapterRegistry,
        *,
        api_key: str | None = None,
        keep: int = 1,
    ) -> ServedAlgorithm:
        """Serve ``algorithm`` on the server at ``base_url``, with versions kept in ``registry``.

        The rollout policy uses the trained policy's tokenizer; raises
        ConnectionError when the server cannot be reached.
        """
        policy = _lora_policy(algorithm)
        if not isinstance(registry, AdapterRegistry):
            registry = AdapterRegistry.open(registry)
        store = registry
        root = base_url.rstrip("/").removesuffix("/v1")
        deployment = Deployment(store, root, api_key=api_key, keep=keep)
        try:
            server_policy = ServerPolicy(
                root, deployment.base_model(), policy.tokenizer, api_key=api_key
            )
            return cls(algorithm, server_policy, deployment)
        except BaseException:
            deployment.close()
            raise

    # -- what the trainer reads ------------------------------------------------------
    @property
    def online(self) -> bool:
        """Whether the trainer collects episodes (the wrapped algorithm's answer)."""
        return self.algorithm.online

    @property
    def config(self) -> BaseModel | None:
        """The wrapped algorithm's config (recorded in ``run.json``)."""
        return self.algorithm.config

    @property
    def registry(self) -> AdapterRegistry:
        return self.deployment.registry

    # -- the Algorithm protocol ----------------------------------------------------------
    def modules(self) -> list[nn.Module]:
        """The wrapped algorithm's modules."""
        return self.algorithm.modules()

    def actor(self) -> Actor:
        """The algorithm's actor, sampling on the server from the version that holds its weights."""
        if self.served is None:
            self._serve_current_weights()
        return self._server_actor(self.algorithm.actor())

    def observe(self, episodes: Sequence[Episode]) -> None:
        self.algorithm.observe(episodes)

    def update(self, iteration: int) -> dict[str, float]:
        """The algorithm's update; new weights are saved, hot-loaded and routed to."""
        before = _writes(self.policy)
        metrics = self.algorithm.update(iteration)
        if _writes(self.policy) != before:
            started = time.perf_counter()
            record = self.registry.save(self.policy, note=f"{self.name}, update {iteration}")
            promotion = self.deployment.promote(record.version, [self.server_policy])
            self.served = record
            metrics["serve/version"] = float(record.number)
            metrics["serve/swap_s"] = time.perf_counter() - started
            metrics["serve/load_s"] = promotion.load_seconds
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return self.algorithm.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the algorithm; the restored weights are served before the next rollout."""
        self.algorithm.load_state_dict(state)
        self.served = None

    def close(self) -> None:
        self.deployment.close()
        self.server_policy.close()

    # -- serving -------------------------------------------------------------------------
    def _server_actor(self, actor: Actor) -> Actor:
        if isinstance(actor, ChaiActor):
            return ChaiActor(self.server_policy, actor.critic, actor.num_candidates, actor.sampling)
        if isinstance(actor, PolicyActor | CachedPolicyActor) and actor.policy is self.policy:
            return PolicyActor(self.server_policy, actor.sampling)
        raise ValueError(
            f"{self.name}'s actor ({type(actor).__name__}) is not a sampler of its policy that "
            "a server can stand in for (PolicyActor, CachedPolicyActor or ChaiActor over the "
            "trained policy); train it without a server"
        )

    def _serve_current_weights(self) -> None:
        """Promote a version that holds the local weights: the active one, else a new one."""
        started = time.perf_counter()
        active = self.registry.active
        if active is not None and holds_weights(active, self.policy):
            record = active
        else:
            record = self.registry.save(self.policy, note=f"{self.name}, starting weights")
        promotion = self.deployment.promote(record.version, [self.server_policy])
        self.served = record
        logger.info(
            "rollouts sample from %s (%.2fs)", promotion.served_name, time.perf_counter() - started
        )


def _lora_policy(algorithm: Algorithm) -> LocalPolicy:
    """The algorithm's policy, if it is a `LocalPolicy` with a LoRA adapter to serve."""
    from peft import PeftModel

    policy = algorithm.policy
    if not isinstance(policy, LocalPolicy):
        raise ValueError(
            f"{algorithm.name} has no LocalPolicy (.policy) to save adapter versions of; only "
            "algorithms that train a policy can be served while they train"
        )
    if not isinstance(policy.model, PeftModel):
        raise ValueError(
            "the policy is fully fine-tuned, so there is no LoRA adapter to hot-load into the "
            "server; train a LoRA adapter instead (`archer train --lora`, or "
            "LocalPolicy.from_pretrained(..., lora=LoraSettings()))"
        )
    return policy


def holds_weights(version: AdapterVersion, policy: LocalPolicy) -> bool:
    """Whether ``version``'s adapter is exactly ``policy``'s: the same config and tensors."""
    import torch
    from safetensors.torch import load_file

    saved = version.path / ADAPTER_WEIGHTS
    if not saved.is_file():
        return False
    with tempfile.TemporaryDirectory(prefix="archer-adapter-") as tmp:
        policy.model.save_pretrained(tmp, safe_serialization=True)
        mine = Path(tmp)
        if _adapter_config(mine) != _adapter_config(version.path):
            return False
        current, stored = load_file(mine / ADAPTER_WEIGHTS), load_file(saved)
    return current.keys() == stored.keys() and all(
        torch.equal(current[name], stored[name]) for name in current
    )


def _adapter_config(directory: Path) -> dict[str, Any]:
    config = dict(json.loads((directory / "adapter_config.json").read_text()))
    config.pop("inference_mode", None)  # how it was loaded, not what it computes
    for key, value in config.items():
        # PEFT keeps module names (target_modules ...) in sets, written in the process's
        # string-hash order: the same adapter reloaded may list them in another order.
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            config[key] = sorted(value)
    return config


def _writes(policy: LocalPolicy) -> int:
    """How many in-place writes the trainable parameters have had (optimiser steps bump it)."""
    return sum(parameter._version for parameter in policy.trainable_parameters())


__all__ = ["ServedAlgorithm", "holds_weights"]
