"""The model call that `LocalPolicy`'s decoding and scoring share.

Batches are padded on the left with an explicit attention mask and explicit
position ids (``cumsum(mask) - 1``), so a row's numbers do not depend on the
other rows in its batch (docs/algorithm.md, defect 1). `decoding` and `scoring`
both build their batches and call the model through these helpers.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import torch
from peft import PeftModel

if TYPE_CHECKING:
    from archer_agents.policies.local_policy import LocalPolicy


def left_pad(policy: LocalPolicy, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask, both (B, T), padded on the left, on the policy's device."""
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), policy.pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return input_ids.to(policy.device), mask.to(policy.device)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids (B, T) counting only real tokens; padding gets 0 (it is masked anyway)."""
    return (mask.cumsum(dim=-1) - 1).clamp(min=0)


def forward(
    policy: LocalPolicy,
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    cache: Any,
    use_cache: bool,
    logits_to_keep: int,
) -> Any:
    """The policy's model on a batch, continuing from ``cache`` (or None)."""
    return policy.model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=use_cache,
        logits_to_keep=logits_to_keep,
        **{policy.cache_name: cache},
    )


def cache_argument_name(model: torch.nn.Module) -> str:
    """The KV cache argument: ``cache`` in recent transformers, ``past_key_values`` before."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
