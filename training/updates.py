"""Pieces every algorithm's update shares: one clipped optimiser step, batch tensors, weights.

- Each optimiser clips the gradient norm of its own parameters only
  (docs/algorithm.md, defect 5: the public code clipped actor and critic together,
  with stale gradients from the other's last step).
- In a run of several processes, every step first averages the gradients over
  them (`distributed.average_gradients`), so every algorithm that steps here
  trains data-parallel and its parameters stay equal on every process.
- An algorithm's `state_dict` must load with ``torch.load(weights_only=True)``
  (the checkpoint's default), so policy weights travel as plain tensors: the
  parameters an optimiser trains (all of them under full fine-tuning, only the
  adapter's under LoRA, so a 7B checkpoint does not copy the frozen base), plus
  the policy's sampling generator.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from archer_agents.data.schema import Transition
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.training.distributed import average_gradients


def clip_and_step(
    optimizer: torch.optim.Optimizer, parameters: Iterable[torch.Tensor], max_grad_norm: float
) -> float:
    """Average gradients over the processes, clip their norm, step ``optimizer``, clear them.

    The caller has called ``backward`` (once, or once per accumulated chunk).
    Returns the norm of the (averaged) gradient before clipping. In one
    process there is nothing to average.
    """
    stepped = list(parameters)
    average_gradients(stepped)
    grad_norm = torch.nn.utils.clip_grad_norm_(stepped, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(grad_norm)


def shaped_reward(transition: Transition, invalid_action_penalty: float) -> float:
    """The turn's reward, less ``invalid_action_penalty`` if the environment could not read it.

    Environments flag an utterance they could not understand with
    ``info["invalid_action"]``; the penalty shapes the training signal only
    (evaluation reports the environment's own rewards).
    """
    if invalid_action_penalty and transition.info.get("invalid_action"):
        return transition.reward - invalid_action_penalty
    return transition.reward


def rewards_and_dones(
    batch: Sequence[Transition], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) rewards and (B,) dones; a time-limit end counts as done, as in ArCHer."""
    rewards = torch.tensor([t.reward for t in batch], dtype=torch.float32, device=device)
    dones = torch.tensor([t.done for t in batch], dtype=torch.bool, device=device)
    return rewards, dones


def module_device(module: nn.Module) -> torch.device:
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the parameters that require gradients, by name, on the CPU."""
    return {
        name: parameter.detach().cpu().clone()
        for name, parameter in model.named_parameters()
        if parameter.requires_grad
    }


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `trainable_state`'s output back into ``model``; the names must match exactly."""
    parameters = {
        name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad
    }
    if parameters.keys() != state.keys():
        differing = sorted(parameters.keys() ^ state.keys())[:5]
        raise ValueError(
            f"the saved weights do not fit this model (e.g. {differing}); resume with the same "
            "model and the same LoRA settings the checkpoint was written with"
        )
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(state[name].to(parameter.device))


def policy_state(policy: LocalPolicy) -> dict[str, Any]:
    """The policy's trainable weights and its sampling generator's state."""
    state: dict[str, Any] = {"weights": trainable_state(policy.model), "version": policy.version}
    if policy.generator is not None:
        state["generator"] = policy.generator.get_state()
    return state


def load_policy_state(policy: LocalPolicy, state: dict[str, Any]) -> None:
    """Restore `policy_state`'s output into ``policy``."""
    load_trainable_state(policy.model, state["weights"])
    policy.version = str(state["version"])
    if "generator" in state and policy.generator is not None:
        policy.generator.set_state(state["generator"])


def frozen_copy(policy: LocalPolicy) -> LocalPolicy:
    """A copy of ``policy`` whose weights never train (the KL anchor's reference)."""
    model = copy.deepcopy(policy.model)
    model.requires_grad_(False)
    model.eval()
    return LocalPolicy(model, policy.tokenizer, version=f"{policy.version}-reference")


def matching_state(reference: nn.Module, policy: nn.Module) -> dict[str, torch.Tensor]:
    """The reference's copies of the parameters the policy trains (the rest never differ)."""
    trained = {name for name, p in policy.named_parameters() if p.requires_grad}
    return {
        name: p.detach().cpu().clone()
        for name, p in reference.named_parameters()
        if name in trained
    }


__all__ = [
    "clip_and_step",
    "frozen_copy",
    "load_policy_state",
    "load_trainable_state",
    "matching_state",
    "module_device",
    "policy_state",
    "rewards_and_dones",
    "trainable_state",
]
