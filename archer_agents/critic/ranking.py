"""Ranking candidate utterances by a critic's min(Q1, Q2): how CHAI acts and how a
deployed agent can choose among sampled candidates."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from archer_agents.critic.model import DoubleCritic
from archer_agents.policies.eval_mode import eval_mode


def candidate_values(
    critic: DoubleCritic, observations: Sequence[str], candidates: Sequence[Sequence[str]]
) -> list[torch.Tensor]:
    """min(Q1, Q2)(s, a) of every candidate, one 1-D tensor per observation.

    ``candidates[i]`` are the utterances proposed for ``observations[i]``; rows may
    differ in length but none may be empty. All pairs go through the critic in
    one batch, without gradients and with dropout off.
    """
    if len(observations) != len(candidates):
        raise ValueError(
            f"got {len(observations)} observations but {len(candidates)} candidate lists; "
            "pass one list of candidate utterances per observation"
        )
    for index, row in enumerate(candidates):
        if not row:
            raise ValueError(
                f"observation {index} has no candidates; propose at least one utterance for each"
            )
    pair_obs = [obs for obs, row in zip(observations, candidates, strict=True) for _ in row]
    pair_act = [action for row in candidates for action in row]
    if not pair_obs:
        return []
    with eval_mode(critic), torch.no_grad():
        values = critic.q(pair_obs, pair_act).min(dim=-1).values  # (M,)
    return list(values.cpu().split([len(row) for row in candidates]))


def rank_candidates(
    critic: DoubleCritic, observations: Sequence[str], candidates: Sequence[Sequence[str]]
) -> list[int]:
    """Per observation, the index of the candidate with the highest min(Q1, Q2).

    Ties go to the earliest candidate. CHAI passes its target critic.
    """
    return [int(row.argmax()) for row in candidate_values(critic, observations, candidates)]
