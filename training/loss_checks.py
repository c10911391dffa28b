"""Shape checks and padding shared by the pure loss functions of `training.losses`.

The losses take ragged per-token tensors (one 1-D tensor per utterance) and
paired critic heads; these helpers reject a wrong shape with a message that
names the argument, and pad ragged rows into a batch with a mask of real tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence


def check_pair(name: str, tensor: torch.Tensor, batch: int | None = None) -> int:
    if tensor.dim() != 2 or tensor.shape[1] != 2:
        raise ValueError(
            f"{name} must have shape (B, 2), one column per head; got {tuple(tensor.shape)}"
        )
    if batch is not None and tensor.shape[0] != batch:
        raise ValueError(f"{name} has batch size {tensor.shape[0]}, expected {batch}")
    return tensor.shape[0]


def check_vector(name: str, tensor: torch.Tensor, batch: int) -> None:
    if tuple(tensor.shape) != (batch,):
        raise ValueError(f"{name} must have shape ({batch},), got {tuple(tensor.shape)}")


def padded(
    name: str, tokens: Sequence[torch.Tensor], batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack B 1-D tensors into (B, T_max) with a (B, T_max) mask of real tokens."""
    if batch == 0:
        raise ValueError(f"{name} is empty: a loss needs at least one utterance")
    if len(tokens) != batch:
        raise ValueError(f"{name} has {len(tokens)} utterances, expected {batch}")
    for index, row in enumerate(tokens):
        if row.dim() != 1:
            raise ValueError(
                f"{name}[{index}] must be 1-D (one entry per token), got {tuple(row.shape)}"
            )
    lengths = torch.tensor([len(row) for row in tokens])
    padded = pad_sequence(list(tokens), batch_first=True)  # (B, T)
    mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]  # (B, T)
    return padded, mask.to(padded.device)


def check_aligned(name: str, tokens: Sequence[torch.Tensor], like: Sequence[torch.Tensor]) -> None:
    if len(tokens) != len(like):
        raise ValueError(f"{name} has {len(tokens)} utterances, the log-probs have {len(like)}")
    for index, (row, other) in enumerate(zip(tokens, like, strict=True)):
        if row.shape != other.shape:
            raise ValueError(
                f"{name}[{index}] has shape {tuple(row.shape)} but the utterance's log-probs "
                f"have {tuple(other.shape)}; give one entry per scored token"
            )


__all__ = ["check_aligned", "check_pair", "check_vector", "padded"]
