"""Behaviour cloning: next-utterance prediction on logged episodes.

Every transition of every episode gives one (observation, utterance) pair; the
loss is the mean negative log-likelihood of the utterance's tokens, the
end-of-utterance token included, given the rendered observation. This is the
starting point of ArCHer in the paper (the policy is initialised by behaviour
cloning) and the plain BC baseline.

Under a launcher (``accelerate launch`` / ``torchrun``, see
`archer_agents.training.distributed`) every process draws the same batches,
scores its share (`shard`: whole episodes when packed) and steps on the
averaged gradient, starting from process 0's weights, so every copy stays
equal and ``batch_size`` keeps its one-process meaning.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from archer_agents.data.schema import Episode, Transition
from archer_agents.policies.protocol import Prompt, policy_prompt
from archer_agents.training.distributed import broadcast_module, process_group, shard
from archer_agents.training.updates import clip_and_step

logger = logging.getLogger(__name__)


class BCConfig(BaseModel):
    """Settings of a behaviour-cloning run."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(1500, ge=1)
    """Optimiser steps."""
    batch_size: int = Field(64, ge=1)
    """(observation, utterance) pairs per step."""
    learning_rate: float = Field(3e-3, gt=0)
    """Adam learning rate (tiny models tolerate a high rate; use ~1e-5 for 7B + LoRA)."""
    warmup_steps: int = Field(50, ge=0)
    """Linear learning-rate warm-up steps, then cosine decay to 10%."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradient-norm clip."""
    only_successful: bool = False
    """Train only on successful episodes (filtered BC)."""
    retokenize: bool = False
    """Ignore the token ids recorded with the episodes (logs another model wrote) and
    tokenize observations and utterances afresh; by default recorded prompt and
    utterance ids (a chat conversation exactly as rendered and sampled) are trained on."""
    packed: bool = False
    """Draw whole episodes (about batch_size utterances a step) and score each episode's turns in
    one packed sequence (`LocalPolicy.log_probs_packed`): the same loss, several times cheaper
    when observations are whole histories."""
    eval_every: int = Field(500, ge=0)
    """Evaluate every this many steps (0: only at the end)."""
    seed: int = 0
    """Seeds batch order."""


@dataclass
class BCResult:
    steps: int
    final_loss: float
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def utterance_pairs(
    episodes: Sequence[Episode], *, only_successful: bool = False
) -> list[tuple[str, str]]:
    """(observation, action) pairs of the episodes, in order."""
    pairs: list[tuple[str, str]] = []
    for episode in episodes:
        if only_successful and not episode.success:
            continue
        pairs.extend((t.observation, t.action) for t in episode.transitions)
    return pairs


def encoded_pairs(
    episodes: Sequence[Episode],
    tokenizer: Any,
    *,
    only_successful: bool = False,
    retokenize: bool = False,
) -> list[tuple[Prompt, list[int]]]:
    """(prompt, utterance ids) pairs of the episodes, in `utterance_pairs`' order.

    A transition's recorded prompt and utterance ids are kept (`policy_prompt`,
    `transition_token_ids`): a chat-format episode is trained on exactly the ids its
    template rendered. Without recorded ids (or with ``retokenize``) the prompt is
    the observation text and the utterance its tokens plus the end-of-utterance token.
    """
    return [
        (
            policy_prompt(t, retokenize=retokenize),
            transition_token_ids(tokenizer, t, retokenize=retokenize),
        )
        for episode in episodes
        if not (only_successful and not episode.success)
        for t in episode.transitions
    ]


def action_token_ids(tokenizer: Any, action: str) -> list[int]:
    """The ids a policy emits for ``action``: its tokens then the end-of-utterance token."""
    return [*tokenizer.encode(action, add_special_tokens=False), tokenizer.eos_token_id]


def transition_token_ids(
    tokenizer: Any, transition: Transition, *, retokenize: bool = False
) -> list[int]:
    """The utterance's ids: exactly as sampled when recorded, else `action_token_ids`.

    ``retokenize`` ignores recorded ids, for logs written by another model.
    """
    if transition.action_token_ids is not None and not retokenize:
        return list(transition.action_token_ids)
    return action_token_ids(tokenizer, transition.action)


def nll_loss(
    policy: Any,
    observations: Sequence[Prompt],
    token_ids: Sequence[Sequence[int]],
    *,
    packed: bool = False,
) -> torch.Tensor:
    """Mean negative log-likelihood per token of the utterances' ids, eos included.

    ``packed`` scores the turns of one episode in one sequence
    (`LocalPolicy.log_probs_packed`): the same loss, cheaper on whole histories.
    """
    score = policy.log_probs_packed if packed else policy.log_probs
    token_logprobs = score(list(observations), [list(ids) for ids in token_ids])
    return -torch.cat(token_logprobs).mean()


def behaviour_clone(
    policy: Any,
    episodes: Sequence[Episode],
    config: BCConfig,
    *,
    evaluate: Callable[[int], dict[str, float]] | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> BCResult:
    """Train ``policy`` (a `LocalPolicy`) in place on the episodes' utterances.

    ``evaluate(step)`` is called every ``eval_every`` steps and at the end; its
    metrics go into the history. ``on_step(step, metrics)`` reports progress.
    """
    pairs = utterance_pairs(episodes, only_successful=config.only_successful)
    if not pairs:
        raise ValueError(
            "no (observation, utterance) pairs to clone: the episodes are empty"
            + (" or none succeeded (only_successful=True)" if config.only_successful else "")
        )
    encoded = encoded_pairs(
        episodes,
        policy.tokenizer,
        only_successful=config.only_successful,
        retokenize=config.retokenize,
    )
    parameters = [p for p in policy.model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("the policy has no trainable parameters")
    world_size = process_group()[1]
    broadcast_module(policy.model)
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(config))
    rng = random.Random(config.seed)
    order: list[int] = []
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    loss_value = math.nan
    policy.model.train()
    groups = _episode_groups(episodes, config.only_successful) if config.packed else None
    for step in range(1, config.steps + 1):
        if groups is None:
            if len(order) < config.batch_size:
                fresh = list(range(len(encoded)))
                rng.shuffle(fresh)
                order.extend(fresh)
            batch = [encoded[order.pop()] for _ in range(min(config.batch_size, len(encoded)))]
            batch = shard(batch)
            loss = nll_loss(policy, [b[0] for b in batch], [b[1] for b in batch])
        else:
            drawn: list[tuple[int, int]] = []
            count = 0
            while count < min(config.batch_size, len(encoded)) or len(drawn) < world_size:
                if not order:
                    order = list(range(len(groups)))
                    rng.shuffle(order)
                drawn.append(groups[order.pop()])
                count += drawn[-1][1] - drawn[-1][0]
            batch = [pair for first, end in shard(drawn) for pair in encoded[first:end]]
            scored = policy.log_probs_packed([b[0] for b in batch], [b[1] for b in batch])
            loss = -torch.cat(scored).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_and_step(optimizer, parameters, config.max_grad_norm)
        scheduler.step()
        loss_value = float(loss.detach())
        metrics: dict[str, float] = {
            "bc/loss": loss_value,
            "bc/grad_norm": float(grad_norm),
            "bc/lr": float(scheduler.get_last_lr()[0]),
        }
        if evaluate is not None and (
            step == config.steps or (config.eval_every and step % config.eval_every == 0)
        ):
            policy.model.eval()
            metrics.update(evaluate(step))
            policy.model.train()
            history.append({"step": float(step), **metrics})
        if on_step is not None:
            on_step(step, metrics)
    policy.model.eval()
    seconds = time.perf_counter() - start
    logger.info(
        "behaviour cloning: %d steps in %.1fs, final loss %.4f", config.steps, seconds, loss_value
    )
    return BCResult(steps=config.steps, final_loss=loss_value, seconds=seconds, history=history)


def _episode_groups(episodes: Sequence[Episode], only_successful: bool) -> list[tuple[int, int]]:
    """(start, end) of each episode's pairs in `utterance_pairs`' order."""
    groups, start = [], 0
    for episode in episodes:
        if only_successful and not episode.success:
            continue
        if episode.transitions:
            groups.append((start, start + len(episode.transitions)))
            start += len(episode.transitions)
    return groups


def _warmup_cosine(config: BCConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor
