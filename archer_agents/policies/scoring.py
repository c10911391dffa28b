"""Scoring token ids under a `LocalPolicy`: the log-probabilities a loss multiplies.

Policy-gradient training is only as faithful as these numbers, so scoring
takes exactly the ids that were sampled, the end-of-utterance token included,
after the prompt's ids (`LocalPolicy.prompt_ids`: ``[bos] + tokenize(render_prompt(observation))``
for a text observation, a chat conversation's ids as they were rendered); prompt and utterance
are never re-tokenized together (docs/algorithm.md, defects 2 and 3). Batches
are left-padded with explicit position ids (defect 1, `forward`), and the
model is put in eval mode for the call, so the numbers are those of the
policy that sampled (defect 4); gradients flow unless the caller disables
them.

`log_probs` scores each (observation, utterance) pair in its own row.
`log_probs_packed` gives the same numbers but chains the turns of an episode
(`chain_prompts`: each history extends the previous one) into one row, so a
shared history is processed once. `decoding` uses the same chaining to share
prompt caches. The `LocalPolicy` methods of the same names call these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from archer_agents.policies.eval_mode import eval_mode
from archer_agents.policies.forward import forward, left_pad, positions_from_mask
from archer_agents.policies.protocol import Prompt

if TYPE_CHECKING:
    from archer_agents.policies.local_policy import LocalPolicy


def _paired_actions(
    observations: Sequence[Prompt], action_token_ids: Sequence[Sequence[int]]
) -> list[list[int]]:
    """The action ids as int lists, one per observation (a count mismatch is a caller's bug)."""
    if len(observations) != len(action_token_ids):
        raise ValueError(
            f"got {len(observations)} observations but {len(action_token_ids)} actions; "
            "pass one list of action token ids per observation"
        )
    return [[int(i) for i in ids] for ids in action_token_ids]


def log_probs(
    policy: LocalPolicy,
    observations: Sequence[Prompt],
    action_token_ids: Sequence[Sequence[int]],
) -> list[torch.Tensor]:
    """`LocalPolicy.log_probs`: per-token log-probabilities of the given ids, one row per pair."""
    actions = _paired_actions(observations, action_token_ids)
    if not actions:
        return []
    longest = max(len(ids) for ids in actions)
    if longest >= policy.context_length:
        raise ValueError(
            f"an action of {longest} tokens leaves no room for a prompt in a context of "
            f"{policy.context_length} tokens; score shorter utterances"
        )
    prompts = [
        policy.prompt_ids(obs, policy.context_length - len(ids))
        for obs, ids in zip(observations, actions, strict=True)
    ]
    input_ids, mask = left_pad(policy, [p + a for p, a in zip(prompts, actions, strict=True)])
    # Left padding aligns every action's end with the last column, so only the
    # last `longest + 1` positions need logits: position t predicts token t + 1.
    with eval_mode(policy.model):
        out = forward(
            policy,
            input_ids,
            mask,
            positions_from_mask(mask),
            None,
            use_cache=False,
            logits_to_keep=longest + 1,
        )
    logits = out.logits[:, :-1, :].float()  # (B, A, V), A = longest
    targets = input_ids[:, input_ids.shape[1] - longest :]  # (B, A)
    token_logprobs = (
        F.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    )  # (B, A)
    return [token_logprobs[row, longest - len(ids) :] for row, ids in enumerate(actions)]


def log_probs_packed(
    policy: LocalPolicy,
    observations: Sequence[Prompt],
    action_token_ids: Sequence[Sequence[int]],
) -> list[torch.Tensor]:
    """`LocalPolicy.log_probs_packed`: `log_probs`, the turns of one episode in one row."""
    actions = _paired_actions(observations, action_token_ids)
    if not actions:
        return []
    prompts = [policy.prompt_ids(obs) for obs in observations]
    fits = [len(p) + len(a) < policy.context_length for p, a in zip(prompts, actions, strict=True)]
    chains = chain_prompts(observations, prompts, fits)
    results: list[torch.Tensor | None] = [None] * len(observations)
    singles = [i for i, fit in enumerate(fits) if not fit]
    if singles:
        scored = policy.log_probs([observations[i] for i in singles], [actions[i] for i in singles])
        for i, value in zip(singles, scored, strict=True):
            results[i] = value
    if chains:
        for chain, values in zip(
            chains, _score_chains(policy, chains, prompts, actions), strict=True
        ):
            for i, value in zip(chain, values, strict=True):
                results[i] = value
    return [value for value in results if value is not None]


def chain_prompts(
    observations: Sequence[Prompt], prompts: list[list[int]], fits: list[bool]
) -> list[list[int]]:
    """Group pair indices into chains whose prompts strictly extend one another.

    Text histories grow a line per turn, so a chain's last observation is
    looked up among the newline-ended prefixes of each longer observation; a
    match must also be a prefix in token ids (the tokenizer may merge across
    the join). Prompt ids (a chat conversation) are looked up among their own
    prefixes at the lengths where a chain ends.
    """
    order = sorted((i for i, fit in enumerate(fits) if fit), key=lambda i: len(prompts[i]))
    chains: list[list[int]] = []
    open_ends: dict[str | tuple[int, ...], list[int]] = {}  # a chain's last prompt -> chains
    open_lengths: set[int] = set()  # lengths of the id prompts that end chains
    for i in order:
        observation = observations[i]
        if isinstance(observation, str):
            chain_index = _text_chain(observation, prompts, i, chains, open_ends)
            key: str | tuple[int, ...] = observation
        else:
            key = tuple(prompts[i])
            chain_index = _ids_chain(key, open_lengths, open_ends)
            open_lengths.add(len(key))
        if chain_index is None:
            chains.append([i])
            chain_index = len(chains) - 1
        else:
            chains[chain_index].append(i)
        open_ends.setdefault(key, []).append(chain_index)
    return chains


def _text_chain(
    text: str,
    prompts: list[list[int]],
    i: int,
    chains: list[list[int]],
    open_ends: dict[str | tuple[int, ...], list[int]],
) -> int | None:
    """The open chain whose last observation is a line-ended prefix of ``text`` (taken off)."""
    cut = text.rfind("\n", 0, len(text) - 1)
    while cut >= 0:
        waiting = open_ends.get(text[: cut + 1])
        if waiting:
            end = prompts[chains[waiting[-1]][-1]]
            if len(end) < len(prompts[i]) and prompts[i][: len(end)] == end:
                return waiting.pop()
        cut = text.rfind("\n", 0, cut)
    return None


def _ids_chain(
    ids: tuple[int, ...], open_lengths: set[int], open_ends: dict[str | tuple[int, ...], list[int]]
) -> int | None:
    """The open chain whose last prompt ids are the longest strict prefix of ``ids``."""
    for length in sorted((n for n in open_lengths if n < len(ids)), reverse=True):
        waiting = open_ends.get(ids[:length])
        if waiting:
            return waiting.pop()
    return None


def _score_chains(
    policy: LocalPolicy,
    chains: list[list[int]],
    prompts: list[list[int]],
    actions: list[list[int]],
) -> list[list[torch.Tensor]]:
    """One packed row per chain; per chain, the log-probs of each turn's utterance."""
    rows, positions, segments, spans = [], [], [], []
    for chain in chains:
        tokens: list[int] = []
        position: list[int] = []
        segment: list[int] = []
        span: list[tuple[int, int]] = []
        history: list[int] = []
        for turn, index in enumerate(chain):
            prompt, action = prompts[index], actions[index]
            tokens += prompt[len(history) :]
            position += range(len(history), len(prompt))
            segment += [-1] * (len(prompt) - len(history))
            history = prompt
            span.append((len(tokens), len(action)))
            tokens += action
            position += range(len(prompt), len(prompt) + len(action))
            segment += [turn] * len(action)
        rows.append(tokens)
        positions.append(position)
        segments.append(segment)
        spans.append(span)
    width = max(len(row) for row in rows)
    batch = len(rows)
    input_ids = torch.full((batch, width), policy.pad_id, dtype=torch.long)
    position_ids = torch.zeros(batch, width, dtype=torch.long)
    segment_ids = torch.full((batch, width), -2, dtype=torch.long)  # -2 padding, -1 history
    for b, (row, position, segment) in enumerate(zip(rows, positions, segments, strict=True)):
        offset = width - len(row)  # left padding
        input_ids[b, offset:] = torch.tensor(row)
        position_ids[b, offset:] = torch.tensor(position)
        segment_ids[b, offset:] = torch.tensor(segment)
    query = segment_ids[:, :, None]  # (B, T, 1)
    key = segment_ids[:, None, :]  # (B, 1, T)
    causal = torch.ones(width, width, dtype=torch.bool).tril()  # (T, T)
    visible = (key == -1) | ((key == query) & (key >= 0))  # history, or the same utterance
    allowed = causal & visible  # (B, T, T)
    allowed |= torch.eye(width, dtype=torch.bool)  # padding attends to itself (no empty rows)
    dtype = next(policy.model.parameters()).dtype
    mask = torch.zeros(batch, 1, width, width, dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    with eval_mode(policy.model):
        out = policy.model(
            input_ids=input_ids.to(policy.device),
            attention_mask=mask.to(policy.device),
            position_ids=position_ids.to(policy.device),
            use_cache=False,
        )
    # Logits only where an utterance token is predicted: position p - 1 predicts token p.
    rows_index: list[int] = []
    cols_index: list[int] = []
    lengths: list[int] = []
    for b, span in enumerate(spans):
        offset = width - len(rows[b])
        for start, n in span:
            rows_index += [b] * n
            cols_index += range(offset + start, offset + start + n)
            lengths.append(n)
    rows_t = torch.tensor(rows_index, device=policy.device)
    cols_t = torch.tensor(cols_index, device=policy.device)
    logits = out.logits[rows_t, cols_t - 1].float()  # (N, V)
    targets = input_ids.to(policy.device)[rows_t, cols_t]  # (N,)
    flat = F.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)  # (N,)
    pieces = iter(flat.split(lengths))
    return [[next(pieces) for _ in span] for span in spans]
