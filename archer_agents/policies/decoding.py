"""Sampling utterances from a `LocalPolicy`: the decoding loop and its prompt caches.

Generation is our own loop over the KV cache, so it samples from exactly the
distribution whose log-probabilities it returns (docs/algorithm.md, defect 4):
`warped_log_probs` is that distribution (temperature, then top-k, then top-p),
and a server sampling for the same policy uses it too. The sampled ids are
kept as they were drawn, eos included, so scoring sees the same ids (defects
2 and 3).

Prompt caches (`PromptCache`) hold the keys and values of a prompt so that the
next turn of an episode, whose history extends it, only computes its new text;
`prefix_caches` cuts the caches of several turns from one pass over the
longest history. None of this changes what is sampled.

The `LocalPolicy` methods of the same names are the public entry points; they
call these functions, which put the model in eval mode for the call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from archer_agents.policies.eval_mode import eval_mode
from archer_agents.policies.forward import forward, left_pad, positions_from_mask
from archer_agents.policies.protocol import Generation, Prompt, SamplingParams, prompt_budget
from archer_agents.policies.scoring import chain_prompts

if TYPE_CHECKING:
    from archer_agents.policies.local_policy import LocalPolicy


@dataclass
class PromptCache:
    """The keys and values of a prompt's tokens, to continue generating from it later."""

    ids: list[int]
    """The prompt's token ids (bos included) whose keys and values these are."""
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    """Per layer, keys and values of shape (len(ids), heads, head_dim)."""


def generate(
    policy: LocalPolicy, observations: Sequence[Prompt], sampling: SamplingParams | None
) -> list[Generation]:
    """`LocalPolicy.generate`: render and tokenize the observations, then `generate_ids`."""
    sampling = sampling or SamplingParams()
    if not observations:
        return []
    budget = prompt_budget(policy.context_length, sampling)
    return policy.generate_ids([policy.prompt_ids(obs, budget) for obs in observations], sampling)


def generate_ids(
    policy: LocalPolicy, prompts: Sequence[Sequence[int]], sampling: SamplingParams | None
) -> list[Generation]:
    """`LocalPolicy.generate_ids`: one utterance per prompt of token ids, in one batch."""
    sampling = sampling or SamplingParams()
    rows = [[int(i) for i in prompt] for prompt in prompts]
    if not rows:
        return []
    longest = max(len(row) for row in rows)
    if min(len(row) for row in rows) == 0 or (
        longest + sampling.max_new_tokens > policy.context_length
    ):
        raise ValueError(
            f"prompts must hold 1 to {policy.context_length - sampling.max_new_tokens} tokens "
            f"so that max_new_tokens {sampling.max_new_tokens} fits the context of "
            f"{policy.context_length}; got {longest} (or an empty prompt); shorten the prompts"
        )
    with eval_mode(policy.model), torch.no_grad():
        tokens, logprobs, lengths, finished = _sample(policy, rows, sampling)
    return _generations(policy, rows, tokens, logprobs, lengths, finished)


def generate_cached(
    policy: LocalPolicy,
    observations: Sequence[Prompt],
    caches: Sequence[PromptCache | None],
    sampling: SamplingParams | None,
) -> tuple[list[Generation], list[PromptCache]]:
    """`LocalPolicy.generate_cached`: `generate` on top of the caches that still apply."""
    sampling = sampling or SamplingParams()
    if len(observations) != len(caches):
        raise ValueError(
            f"got {len(observations)} observations but {len(caches)} caches; pass one "
            "cache (or None) per observation"
        )
    if not observations:
        return [], []
    budget = prompt_budget(policy.context_length, sampling)
    prompts = [policy.prompt_ids(obs, budget) for obs in observations]
    reused = [
        cache
        if cache is not None
        and len(cache.ids) < len(prompt)
        and prompt[: len(cache.ids)] == cache.ids
        else None
        for cache, prompt in zip(caches, prompts, strict=True)
    ]
    with eval_mode(policy.model), torch.no_grad():
        out, mask, positions, new_caches = _prefill(policy, prompts, reused)
        tokens, logprobs, lengths, finished = _decode(policy, out, mask, positions, sampling)
    return _generations(policy, prompts, tokens, logprobs, lengths, finished), new_caches


def generate_shared(
    policy: LocalPolicy, observations: Sequence[Prompt], sampling: SamplingParams | None
) -> list[Generation]:
    """`LocalPolicy.generate_shared`: `prefix_caches`, then `generate_cached`."""
    sampling = sampling or SamplingParams()
    caches = policy.prefix_caches(observations, policy.context_length - sampling.max_new_tokens)
    return policy.generate_cached(observations, caches, sampling)[0]


def prefix_caches(
    policy: LocalPolicy, observations: Sequence[Prompt], max_tokens: int | None
) -> list[PromptCache | None]:
    """`LocalPolicy.prefix_caches`: per observation, the cache of its prompt but the last token."""
    if not observations:
        return []
    prompts = [policy.prompt_ids(obs, max_tokens) for obs in observations]
    chains = chain_prompts(observations, prompts, [True] * len(prompts))
    longest = [prompts[chain[-1]][:-1] for chain in chains]
    rows = [i for i, ids in enumerate(longest) if ids]
    caches: list[PromptCache | None] = [None] * len(observations)
    if not rows:
        return caches
    with eval_mode(policy.model), torch.no_grad():
        input_ids, mask = left_pad(policy, [longest[i] for i in rows])  # (R, T)
        out = forward(
            policy,
            input_ids,
            mask,
            positions_from_mask(mask),
            None,
            use_cache=True,
            logits_to_keep=1,
        )
    cache = getattr(out, policy.cache_name)
    # (R, T, H, d) views: a turn's cache is a slice of its chain's row, shared, not copied.
    per_layer = [
        (layer.keys.transpose(1, 2), layer.values.transpose(1, 2)) for layer in cache.layers
    ]
    width = input_ids.shape[1]
    for row, chain_index in enumerate(rows):
        start = width - len(longest[chain_index])  # left padding
        for i in chains[chain_index]:
            n = len(prompts[i]) - 1
            if n < 1:
                continue
            layers = [(k[row, start : start + n], v[row, start : start + n]) for k, v in per_layer]
            caches[i] = PromptCache(ids=prompts[i][:-1], layers=layers)
    return caches


def warped_log_probs(logits: torch.Tensor, sampling: SamplingParams) -> torch.Tensor:
    """Log-probabilities (B, V) of the distribution sampled from.

    Logits are divided by the temperature, then all but the top-k tokens (ties
    kept) and then all but the smallest set holding ``top_p`` of the mass are
    removed, and the rest renormalised. With the defaults this is the model's
    own log-softmax.
    """
    if sampling.temperature not in (0.0, 1.0):
        logits = logits / sampling.temperature
    vocab = logits.shape[-1]
    if 0 < sampling.top_k < vocab:
        kth = logits.topk(sampling.top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    logprobs = F.log_softmax(logits, dim=-1)  # (B, V)
    if sampling.top_p < 1.0:
        sorted_logprobs, order = logprobs.sort(dim=-1, descending=True)  # (B, V)
        probs = sorted_logprobs.exp()
        # Drop a token when the mass strictly before it already reaches top_p.
        drop_sorted = probs.cumsum(dim=-1) - probs >= sampling.top_p  # (B, V)
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logprobs = F.log_softmax(logprobs.masked_fill(drop, float("-inf")), dim=-1)
    return logprobs


def _generations(
    policy: LocalPolicy,
    prompts: Sequence[list[int]],
    tokens: torch.Tensor,
    logprobs: torch.Tensor,
    lengths: torch.Tensor,
    finished: torch.Tensor,
) -> list[Generation]:
    """One `Generation` per prompt from a sampled batch (eos kept in the ids, not the text)."""
    generations = []
    for row, prompt in enumerate(prompts):
        n = int(lengths[row])
        ids = tokens[row, :n].tolist()
        text_ids = ids[:-1] if finished[row] else ids
        generations.append(
            Generation(
                text=str(policy.tokenizer.decode(text_ids, skip_special_tokens=True)),
                token_ids=ids,
                logprobs=logprobs[row, :n].tolist(),
                prompt_token_ids=list(prompt),
                finished=bool(finished[row]),
            )
        )
    return generations


def _prefill(
    policy: LocalPolicy, prompts: list[list[int]], caches: list[PromptCache | None]
) -> tuple[Any, torch.Tensor, torch.Tensor, list[PromptCache]]:
    """One forward pass over each prompt's uncached tail, on top of its cached head.

    Row i holds its cached keys (left-padded to the longest cache) then its
    new tokens (left-padded to the longest tail); the mask hides both kinds
    of padding and explicit position ids continue each row's own count.
    """
    batch = len(prompts)
    cached = [0 if c is None else len(c.ids) for c in caches]
    tails = [prompt[n:] for prompt, n in zip(prompts, cached, strict=True)]
    width_c, width_n = max(cached), max(len(t) for t in tails)
    input_ids = torch.full((batch, width_n), policy.pad_id, dtype=torch.long)
    mask = torch.zeros(batch, width_c + width_n, dtype=torch.long)
    positions = torch.zeros(batch, width_n, dtype=torch.long)
    for i, (tail, n) in enumerate(zip(tails, cached, strict=True)):
        input_ids[i, width_n - len(tail) :] = torch.tensor(tail)
        positions[i, width_n - len(tail) :] = torch.arange(n, n + len(tail))
        mask[i, width_c - n : width_c] = 1
        mask[i, width_c + width_n - len(tail) :] = 1
    past = None
    if width_c:
        rows = [c for c in caches if c is not None]
        # (B, Lc): where row i's cache goes, on the device its keys are on
        cached_slots = mask[:, :width_c].bool().to(rows[0].layers[0][0].device)
        layers = []
        for layer in range(len(rows[0].layers)):
            pair = []
            for part in (0, 1):  # keys, values
                flat = torch.cat([c.layers[layer][part] for c in rows])  # (sum n_i, H, d)
                padded = flat.new_zeros(batch, width_c, *flat.shape[1:])  # (B, Lc, H, d)
                padded[cached_slots] = flat
                pair.append(padded.transpose(1, 2))  # (B, H, Lc, d)
            layers.append((pair[0], pair[1]))
        past = DynamicCache(ddp_cache_data=layers)
    mask, positions, input_ids = (
        mask.to(policy.device),
        positions.to(policy.device),
        input_ids.to(policy.device),
    )
    out = forward(policy, input_ids, mask, positions, past, use_cache=True, logits_to_keep=1)
    cache = getattr(out, policy.cache_name)
    # Each row keeps its cached head and its new tail: exactly where the mask is 1.
    kept = mask.bool()  # (B, Lc + Ln)
    lengths = [len(prompt) for prompt in prompts]
    pieces = [
        (
            layer.keys.transpose(1, 2)[kept].split(lengths),  # per row (L_i, H, d)
            layer.values.transpose(1, 2)[kept].split(lengths),
        )
        for layer in cache.layers
    ]
    new_caches = [
        PromptCache(ids=list(prompt), layers=[(keys[i], values[i]) for keys, values in pieces])
        for i, prompt in enumerate(prompts)
    ]
    return out, mask, positions, new_caches


def _sample(
    policy: LocalPolicy, prompts: list[list[int]], sampling: SamplingParams
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The decoding loop; returns tokens, logprobs (B, N), lengths and finished (B,)."""
    input_ids, mask = left_pad(policy, prompts)  # (B, T)
    positions = positions_from_mask(mask)  # (B, T)
    out = forward(policy, input_ids, mask, positions, None, use_cache=True, logits_to_keep=1)
    return _decode(policy, out, mask, positions, sampling)


def _decode(
    policy: LocalPolicy,
    out: Any,
    mask: torch.Tensor,
    positions: torch.Tensor,
    sampling: SamplingParams,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample from the prompts' last logits in ``out`` on; mask (B, T), positions (B, *)."""
    batch, steps = mask.shape[0], sampling.max_new_tokens
    tokens = torch.full((batch, steps), policy.pad_id, dtype=torch.long, device=policy.device)
    logprobs = torch.zeros(batch, steps, device=policy.device)
    lengths = torch.zeros(batch, dtype=torch.long, device=policy.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=policy.device)
    for step in range(steps):
        logits = out.logits[:, -1, :].float()  # (B, V)
        token, logprob = _choose(policy, logits, sampling)  # (B,), (B,)
        alive = ~finished
        tokens[:, step] = torch.where(alive, token, policy.pad_id)
        logprobs[:, step] = torch.where(alive, logprob, 0.0)
        lengths += alive.long()
        finished |= alive & (token == policy.eos_id)
        if bool(finished.all()) or step == steps - 1:
            break
        # Feed every row its token (finished rows are discarded); one new position each.
        mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)  # (B, T + step + 1)
        positions = positions[:, -1:] + 1  # (B, 1)
        cache = getattr(out, policy.cache_name)
        out = forward(
            policy, token[:, None], mask, positions, cache, use_cache=True, logits_to_keep=1
        )
    return tokens, logprobs, lengths, finished


def _choose(
    policy: LocalPolicy, logits: torch.Tensor, sampling: SamplingParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row and its log-probability, from logits (B, V)."""
    if sampling.greedy:
        token = logits.argmax(dim=-1)  # (B,)
        logprob = F.log_softmax(logits, dim=-1).gather(-1, token[:, None])
        return token, logprob.squeeze(-1)
    dist = warped_log_probs(logits, sampling)  # (B, V)
    token = torch.multinomial(dist.exp(), 1, generator=policy.generator)  # (B, 1)
    return token.squeeze(-1), dist.gather(-1, token).squeeze(-1)
