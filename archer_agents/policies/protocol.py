"""The policy interface shared by local models, servers and the trainers.

A policy maps text observations to utterances. `generate` samples a batch and
returns, per observation, the sampled token ids and their log-probabilities, so
that training can score exactly what was sampled. `log_probs` rescores given
token ids under the current weights (with gradients, for the actor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch

    from archer_agents.data.schema import Transition

Prompt: TypeAlias = "str | Sequence[int]"
"""What a policy conditions on: an observation to render (the project's text format,
``[bos] + tokenize(observation)``), or prompt token ids exactly as the policy saw them
(a conversation rendered by the model's own chat template, which is never re-tokenised)."""


def policy_prompt(transition: Transition, *, retokenize: bool = False) -> Prompt:
    """The prompt a transition's action was sampled from: its recorded ids, else its text.

    Recorded ``prompt_token_ids`` are what the policy conditioned on, so scoring them
    scores exactly what was sampled (for a text-format policy they equal the ids its
    observation renders to). ``retokenize`` ignores them, for logs another model wrote.
    """
    if transition.prompt_token_ids and not retokenize:
        return tuple(transition.prompt_token_ids)
    return transition.observation


class SamplingParams(BaseModel):
    """How to sample one utterance. NaN and infinities are refused in every field."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_new_tokens: int = Field(32, ge=1)
    """Longest utterance in tokens, the end-of-utterance token included."""
    temperature: float = Field(1.0, ge=0.0)
    """Softmax temperature; 0 means greedy decoding."""
    top_k: int = Field(0, ge=0)
    """Keep only the k most likely tokens; 0 keeps all (sample what you score)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass; 1.0 keeps all (sample what you score)."""

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def prompt_budget(context_length: int, sampling: SamplingParams) -> int:
    """The most prompt tokens that leave room for ``max_new_tokens`` in the context."""
    budget = context_length - sampling.max_new_tokens
    if budget < 1:
        raise ValueError(
            f"max_new_tokens {sampling.max_new_tokens} leaves no room for a prompt in a "
            f"context of {context_length} tokens; lower max_new_tokens"
        )
    return budget


@dataclass
class Generation:
    """One sampled utterance."""

    text: str
    """The decoded utterance, special tokens removed."""
    token_ids: list[int]
    """Exactly the sampled ids, the end-of-utterance token included when emitted."""
    logprobs: list[float]
    """Log-probability of each sampled id under the distribution it was drawn from."""
    prompt_token_ids: list[int] = field(default_factory=list)
    """The prompt ids the policy conditioned on."""
    finished: bool = True
    """True when the utterance ended with the end-of-utterance token."""
    policy_version: str | None = None
    """The weights that sampled it, when the policy knows per call (a served adapter's name)."""

    @property
    def logprob(self) -> float:
        return float(sum(self.logprobs))


@runtime_checkable
class Policy(Protocol):
    """Anything that samples utterances and scores token ids."""

    version: str
    """Identifies the weights in use (a checkpoint or adapter version)."""

    def generate(
        self, observations: Sequence[Prompt], sampling: SamplingParams | None = None
    ) -> list[Generation]:
        """Sample one utterance per observation."""
        ...

    def log_probs(
        self, observations: Sequence[Prompt], action_token_ids: Sequence[Sequence[int]]
    ) -> list[torch.Tensor]:
        """Per-token log-probabilities of the given ids, one 1-D tensor per pair."""
        ...
