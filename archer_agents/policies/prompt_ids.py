"""Turning a `Prompt` into the token ids a policy conditions on, for local and served policies.

A text observation becomes ``[bos] + tokenize(render_prompt(observation))``; prompt
ids (a conversation the model's chat template rendered, turn by turn) are used as
they are. Either way a prompt longer than the room left keeps its most recent
tokens (and bos, for text), so the newest turns survive.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from archer_agents.policies.protocol import Prompt


def prompt_token_ids(
    prompt: Prompt,
    encode: Callable[[str], Sequence[int]],
    bos_id: int | None,
    max_tokens: int | None = None,
) -> tuple[list[int], bool]:
    """The ids of ``prompt``, and whether they were cut to ``max_tokens``.

    ``encode`` tokenises rendered text without special tokens. Raises
    `ValueError` for a prompt that would leave nothing to condition on.
    """
    if isinstance(prompt, str):
        head = [] if bos_id is None else [bos_id]
        ids = list(encode(prompt))
    else:
        head, ids = [], [int(i) for i in prompt]
    if not head and not ids:
        raise ValueError(
            "the prompt is empty (and the tokenizer has no bos token), so the first utterance "
            "token would have nothing to condition on; pass a non-empty observation or prompt"
        )
    if max_tokens is None or len(head) + len(ids) <= max_tokens:
        return head + ids, False
    keep = max(max_tokens - len(head), 0)
    return head + (ids[len(ids) - keep :] if keep else []), True


__all__ = ["prompt_token_ids"]
