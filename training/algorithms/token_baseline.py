"""The paper's token-level baseline for ArCHer's actor, and its training step.

Paper: Zhou, Zanette, Pan, Levine, Kumar, "ArCHer: Training Language Model
Agents via Hierarchical Multi-Turn RL", ICML 2024 (arXiv 2402.19446), which
proposes a token-level baseline b(s, a_<t) that the public code never finished.
Where it departs: the paper's baseline reads the policy's hidden states; this
one reads hashed word features of the observation and of the decoded utterance
prefix, with its own encoder, so neither the policy nor the critic is disturbed.
It is regressed onto the utterance's advantage (`losses.token_baseline_loss`)
and the actor weights token t by A - b_t (``actor_loss(token_baselines=...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from archer_agents.critic.encoders import HashingEncoder
from archer_agents.policies.protocol import Generation
from archer_agents.training.losses import token_baseline_loss
from archer_agents.training.updates import clip_and_step


class TokenBaseline(nn.Module):
    """The paper's token-level baseline: b(s, a_<t) for every token of an utterance.

    Reads hashed word features of the observation and of the decoded prefix of
    the utterance before token t (its own encoder, so the critic's is not
    disturbed) and is regressed onto the utterance's advantage
    (`losses.token_baseline_loss`); the actor weights token t by A - b_t.
    """

    def __init__(self, hidden_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.encoder = HashingEncoder(hidden_size=hidden_size, seed=seed + 7)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = nn.Sequential(
                nn.Linear(2 * hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, 1)
            )

    def forward(
        self, observations: Sequence[str], prefixes: Sequence[Sequence[str]]
    ) -> list[torch.Tensor]:
        """``prefixes[b][t]``: the text of utterance b before token t -> B tensors (T_b,)."""
        flat_obs = [obs for obs, row in zip(observations, prefixes, strict=True) for _ in row]
        flat_prefix = [text for row in prefixes for text in row]
        features = torch.cat([self.encoder.encode(flat_obs), self.encoder.encode(flat_prefix)], -1)
        values = self.head(features).squeeze(-1)  # (sum T_b,)
        return list(values.split([len(row) for row in prefixes]))


def baseline_step(
    baseline: TokenBaseline,
    optimizer: torch.optim.Optimizer,
    decode: Callable[..., str | list[str]],
    observations: Sequence[str],
    generations: Sequence[Generation],
    advantages: torch.Tensor,
    max_grad_norm: float,
) -> list[torch.Tensor]:
    """One regression step of ``baseline`` on this actor batch; its detached values per token.

    ``decode`` is the policy tokenizer's ``decode``: the baseline reads the text
    of each utterance before each of its tokens.
    """
    prefixes = [
        [str(decode(g.token_ids[:t], skip_special_tokens=True)) for t in range(len(g.token_ids))]
        for g in generations
    ]
    values = baseline(observations, prefixes)
    loss, _ = token_baseline_loss(values, advantages)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_and_step(optimizer, list(baseline.parameters()), max_grad_norm)
    return [v.detach() for v in values]


__all__ = ["TokenBaseline", "baseline_step"]
