"""A `Policy` backed by a local transformers causal LM, optionally with a LoRA adapter.

Policy-gradient training is only as faithful as the log-probabilities it
multiplies, so this module avoids the public ArCHer code's scoring defects
(docs/algorithm.md, defects 1-4):

- The prompt is ``[bos] + tokenize(render_prompt(observation))``, and an
  utterance is kept as the ids that were sampled; prompt and utterance are
  never re-tokenized together.
- Batches are padded on the left with an explicit attention mask and explicit
  position ids (``cumsum(mask) - 1``), so a row's numbers do not depend on the
  other rows in its batch.
- Generation is our own loop over the KV cache: it samples from exactly the
  distribution whose log-probabilities it returns.
- `LocalPolicy.log_probs` scores exactly the given ids, the end-of-utterance
  token included, in one forward pass with gradients.

Dropout is switched off while generating and while scoring (the model is put
in eval mode for the call and restored afterwards), so `log_probs` returns the
log-probabilities of the same policy that sampled; gradients flow as usual.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
from pydantic import BaseModel, ConfigDict, Field
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from archer_agents.formats.prompts import render_prompt
from archer_agents.policies.eval_mode import eval_mode
from archer_agents.policies.protocol import Generation, SamplingParams, prompt_budget

PROMPT_CACHE_SIZE = 16_384
"""Observations whose prompt ids a policy remembers (a few training iterations' worth)."""

logger = logging.getLogger(__name__)


class LoraSettings(BaseModel):
    """A LoRA adapter to train on top of a frozen base model (applied with PEFT)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    r: int = Field(16, ge=1)
    """Rank of the low-rank update."""
    alpha: int = Field(32, ge=1)
    """Scaling numerator: the update is multiplied by alpha / r."""
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    """Dropout on the adapter's input (only active in train mode, see the module docstring)."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Names of the linear layers that get an adapter."""

    def to_peft(self) -> LoraConfig:
        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            task_type="CAUSAL_LM",
        )


@dataclass
class PromptCache:
    """The keys and values of a prompt's tokens, to continue generating from it later."""

    ids: list[int]
    """The prompt's token ids (bos included) whose keys and values these are."""
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    """Per layer, keys and values of shape (len(ids), heads, head_dim)."""


class LocalPolicy:
    """A causal LM that samples utterances and scores token ids on this machine.

    ``seed`` seeds ``generator``, the `torch.Generator` used for sampling; with
    no seed, sampling draws from torch's global generator.
    """

    def __init__(
        self,
        model: PreTrainedModel | PeftModel,
        tokenizer: PreTrainedTokenizerBase,
        version: str = "0",
        *,
        seed: int | None = None,
    ) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError(
                "the tokenizer has no eos token, so an utterance could never end; set "
                "tokenizer.eos_token to the token that ends an utterance"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.version = version
        self.eos_id: int = tokenizer.eos_token_id
        self.bos_id: int | None = tokenizer.bos_token_id
        self.pad_id: int = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        )
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._cache_name = _cache_argument_name(model)
        self._warned_truncation = False
        # A rollout's observations are tokenised again by the critic's and the actor's
        # steps; the tokenizer never changes, so remember the most recent ones.
        self._encode_prompt = lru_cache(maxsize=PROMPT_CACHE_SIZE)(self._encode_prompt_uncached)

    # -- construction and saving -----------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        lora: LoraSettings | None = None,
        adapter_path: str | Path | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        version: str = "0",
        seed: int | None = None,
    ) -> LocalPolicy:
        """Load a model directory or hub id, optionally with a new or saved LoRA adapter.

        ``name_or_path`` may also be a directory written by `save` for an adapter;
        its base model is then read from the adapter's config. ``lora`` adds a
        fresh adapter; ``adapter_path`` loads a trained one (trainable).
        """
        if lora is not None and adapter_path is not None:
            raise ValueError(
                "both lora and adapter_path were given: lora creates a new adapter while "
                "adapter_path loads a trained one (with its own settings); pass only one"
            )
        base_path: str | Path = name_or_path
        tokenizer_path: str | Path = name_or_path
        if _is_adapter_dir(name_or_path):
            if adapter_path is not None:
                raise ValueError(
                    f"{name_or_path} is itself an adapter directory and adapter_path was also "
                    "given; pass the base model as name_or_path, or drop adapter_path"
                )
            adapter_path = name_or_path
            base_path = PeftConfig.from_pretrained(str(name_or_path)).base_model_name_or_path or ""
            if not base_path:
                raise ValueError(
                    f"the adapter in {name_or_path} does not record its base model; load it with "
                    f"LocalPolicy.from_pretrained(<base model>, adapter_path={str(name_or_path)!r})"
                )
            if not (Path(name_or_path) / "tokenizer_config.json").is_file():
                tokenizer_path = base_path
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path))
        model: PreTrainedModel | PeftModel = AutoModelForCausalLM.from_pretrained(
            str(base_path), dtype=dtype
        )
        torch.nn.Module.to(model, device)  # in place
        if adapter_path is not None:
            model = PeftModel.from_pretrained(model, str(adapter_path), is_trainable=True)
        elif lora is not None:
            model = get_peft_model(model, lora.to_peft())
        return cls(model, tokenizer, version=version, seed=seed)

    def save(self, path: str | Path) -> Path:
        """Write the tokenizer and the weights: only the adapter when there is one."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(path), safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        return path

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters an optimiser should update (only the adapter's under LoRA)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def context_length(self) -> int:
        """Most tokens (prompt plus utterance) the model attends to."""
        config = self.model.config
        return int(getattr(config, "max_position_embeddings", None) or 2048)

    # -- prompts -----------------------------------------------------------------
    def prompt_ids(self, observation: str, max_tokens: int | None = None) -> list[int]:
        """``[bos] + ids`` of the rendered prompt, at most ``max_tokens`` long.

        A longer prompt keeps bos and its most recent tokens. With the embedded
        tokenizer, the text ``bos_token + render_prompt(observation)`` encodes to
        the same ids, which is what a server should be sent.
        """
        ids = list(self._encode_prompt(observation))
        head = [] if self.bos_id is None else [self.bos_id]
        if not head and not ids:
            raise ValueError(
                "the observation is empty and the tokenizer has no bos token, so the first "
                "utterance token would have nothing to condition on; give the tokenizer a "
                "bos_token or pass a non-empty observation"
            )
        if max_tokens is not None and len(head) + len(ids) > max_tokens:
            keep = max(max_tokens - len(head), 0)
            if not self._warned_truncation:
                logger.warning(
                    "a prompt of %d tokens exceeds the %d available; keeping its most recent "
                    "tokens (this warning is shown once per policy)",
                    len(head) + len(ids),
                    max_tokens,
                )
                self._warned_truncation = True
            ids = ids[len(ids) - keep :] if keep else []
        return head + ids

    def _encode_prompt_uncached(self, observation: str) -> tuple[int, ...]:
        encoded = self.tokenizer(render_prompt(observation), add_special_tokens=False)
        return tuple(encoded["input_ids"])

    # -- sampling ------------------------------------------------------------------
    def generate(
        self, observations: Sequence[str], sampling: SamplingParams | None = None
    ) -> list[Generation]:
        """Sample one utterance per observation, in one batch.

        The returned log-probabilities are those of the distribution each token
        was drawn from: with temperature 1, top_k 0 and top_p 1 (the defaults)
        the model's own log-softmax; otherwise the distribution after dividing
        the logits by the temperature and keeping the top-k tokens, then the top-p
        nucleus, renormalised. Greedy decoding (temperature 0) returns the
        model's own log-softmax of the chosen token.
        """
        sampling = sampling or SamplingParams()
        if not observations:
            return []
        budget = prompt_budget(self.context_length, sampling)
        return self.generate_ids([self.prompt_ids(obs, budget) for obs in observations], sampling)

    def generate_ids(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingParams | None = None
    ) -> list[Generation]:
        """Sample one utterance per prompt given as token ids (bos included), in one batch.

        `generate` renders and tokenizes observations and calls this; a server that
        receives token ids calls it directly. Prompts plus ``max_new_tokens`` must
        fit the context.
        """
        sampling = sampling or SamplingParams()
        rows = [[int(i) for i in prompt] for prompt in prompts]
        if not rows:
            return []
        longest = max(len(row) for row in rows)
        if min(len(row) for row in rows) == 0 or (
            longest + sampling.max_new_tokens > self.context_length
        ):
            raise ValueError(
                f"prompts must hold 1 to {self.context_length - sampling.max_new_tokens} tokens "
                f"so that max_new_tokens {sampling.max_new_tokens} fits the context of "
                f"{self.context_length}; got {longest} (or an empty prompt); shorten the prompts"
            )
        with eval_mode(self.model), torch.no_grad():
            tokens, logprobs, lengths, finished = self._sample(rows, sampling)
        return self._generations(rows, tokens, logprobs, lengths, finished)

    def _generations(
        self,
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
                    text=str(self.tokenizer.decode(text_ids, skip_special_tokens=True)),
                    token_ids=ids,
                    logprobs=logprobs[row, :n].tolist(),
                    prompt_token_ids=list(prompt),
                    finished=bool(finished[row]),
                )
            )
        return generations

    def generate_cached(
        self,
        observations: Sequence[str],
        caches: Sequence[PromptCache | None],
        sampling: SamplingParams | None = None,
    ) -> tuple[list[Generation], list[PromptCache]]:
        """`generate`, reusing each prompt's cached keys and values where they still apply.

        ``caches[i]`` holds the keys and values of an earlier prompt (or None);
        when its ids start observation i's prompt, only the rest of the prompt is
        computed. The samples are distributed exactly as `generate`'s. Returns
        the generations and, per observation, the cache of its whole prompt
        (not of the utterance), ready for the next turn of the same episode,
        whose history extends this prompt. Turn by turn this costs the new text
        of each turn instead of the whole history.
        """
        sampling = sampling or SamplingParams()
        if len(observations) != len(caches):
            raise ValueError(
                f"got {len(observations)} observations but {len(caches)} caches; pass one "
                "cache (or None) per observation"
            )
        if not observations:
            return [], []
        budget = prompt_budget(self.context_length, sampling)
        prompts = [self.prompt_ids(obs, budget) for obs in observations]
        reused = [
            cache
            if cache is not None
            and len(cache.ids) < len(prompt)
            and prompt[: len(cache.ids)] == cache.ids
            else None
            for cache, prompt in zip(caches, prompts, strict=True)
        ]
        with eval_mode(self.model), torch.no_grad():
            out, mask, positions, new_caches = self._prefill(prompts, reused)
            tokens, logprobs, lengths, finished = self._decode(out, mask, positions, sampling)
        return self._generations(prompts, tokens, logprobs, lengths, finished), new_caches

    def generate_shared(
        self, observations: Sequence[str], sampling: SamplingParams | None = None
    ) -> list[Generation]:
        """`generate`, computing each history shared by several observations once.

        Observations that are turns of one episode (each history extends the
        previous one) are chained as in `log_probs_packed`; each chain's
        longest prompt is run once and every turn's prompt cache is cut from it
        (`prefix_caches`), so only the last prompt token of each observation
        and the sampled tokens are computed per row. Distributed exactly as
        `generate`.
        """
        sampling = sampling or SamplingParams()
        caches = self.prefix_caches(observations, self.context_length - sampling.max_new_tokens)
        return self.generate_cached(observations, caches, sampling)[0]

    def prefix_caches(
        self, observations: Sequence[str], max_tokens: int | None = None
    ) -> list[PromptCache | None]:
        """Per observation, the cache of its prompt but the last token, from one pass per chain.

        Prompts are cut to ``max_tokens`` as in `prompt_ids`; a prompt of one
        token gets None.
        """
        if not observations:
            return []
        prompts = [self.prompt_ids(obs, max_tokens) for obs in observations]
        chains = _chain_prompts(observations, prompts, [True] * len(prompts))
        longest = [prompts[chain[-1]][:-1] for chain in chains]
        rows = [i for i, ids in enumerate(longest) if ids]
        caches: list[PromptCache | None] = [None] * len(observations)
        if not rows:
            return caches
        with eval_mode(self.model), torch.no_grad():
            input_ids, mask = self._left_pad([longest[i] for i in rows])  # (R, T)
            out = self._forward(
                input_ids, mask, _positions(mask), None, use_cache=True, logits_to_keep=1
            )
        cache = getattr(out, self._cache_name)
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
                layers = [
                    (k[row, start : start + n], v[row, start : start + n]) for k, v in per_layer
                ]
                caches[i] = PromptCache(ids=prompts[i][:-1], layers=layers)
        return caches

    def _prefill(
        self, prompts: list[list[int]], caches: list[PromptCache | None]
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
        input_ids = torch.full((batch, width_n), self.pad_id, dtype=torch.long)
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
            mask.to(self.device),
            positions.to(self.device),
            input_ids.to(self.device),
        )
        out = self._forward(input_ids, mask, positions, past, use_cache=True, logits_to_keep=1)
        cache = getattr(out, self._cache_name)
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
        self, prompts: list[list[int]], sampling: SamplingParams
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoding loop; returns tokens, logprobs (B, N), lengths and finished (B,)."""
        input_ids, mask = self._left_pad(prompts)  # (B, T)
        positions = _positions(mask)  # (B, T)
        out = self._forward(input_ids, mask, positions, None, use_cache=True, logits_to_keep=1)
        return self._decode(out, mask, positions, sampling)

    def _decode(
        self, out: Any, mask: torch.Tensor, positions: torch.Tensor, sampling: SamplingParams
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample from the prompts' last logits in ``out`` on; mask (B, T), positions (B, *)."""
        batch, steps = mask.shape[0], sampling.max_new_tokens
        tokens = torch.full((batch, steps), self.pad_id, dtype=torch.long, device=self.device)
        logprobs = torch.zeros(batch, steps, device=self.device)
        lengths = torch.zeros(batch, dtype=torch.long, device=self.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=self.device)
        for step in range(steps):
            logits = out.logits[:, -1, :].float()  # (B, V)
            token, logprob = self._choose(logits, sampling)  # (B,), (B,)
            alive = ~finished
            tokens[:, step] = torch.where(alive, token, self.pad_id)
            logprobs[:, step] = torch.where(alive, logprob, 0.0)
            lengths += alive.long()
            finished |= alive & (token == self.eos_id)
            if bool(finished.all()) or step == steps - 1:
                break
            # Feed every row its token (finished rows are discarded); one new position each.
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)  # (B, T + step + 1)
            positions = positions[:, -1:] + 1  # (B, 1)
            cache = getattr(out, self._cache_name)
            out = self._forward(
                token[:, None], mask, positions, cache, use_cache=True, logits_to_keep=1
            )
        return tokens, logprobs, lengths, finished

    def _choose(
        self, logits: torch.Tensor, sampling: SamplingParams
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per row and its log-probability, from logits (B, V)."""
        if sampling.greedy:
            token = logits.argmax(dim=-1)  # (B,)
            logprob = F.log_softmax(logits, dim=-1).gather(-1, token[:, None])
            return token, logprob.squeeze(-1)
        dist = warped_log_probs(logits, sampling)  # (B, V)
        token = torch.multinomial(dist.exp(), 1, generator=self.generator)  # (B, 1)
        return token.squeeze(-1), dist.gather(-1, token).squeeze(-1)

    # -- scoring -------------------------------------------------------------------
    def log_probs(
        self, observations: Sequence[str], action_token_ids: Sequence[Sequence[int]]
    ) -> list[torch.Tensor]:
        """Per-token log-probabilities of exactly the given ids, one 1-D tensor per pair.

        One batched forward pass; gradients flow unless the caller disables them.
        The end-of-utterance token, when present in the ids, gets its log-probability.
        """
        if len(observations) != len(action_token_ids):
            raise ValueError(
                f"got {len(observations)} observations but {len(action_token_ids)} actions; "
                "pass one list of action token ids per observation"
            )
        if not observations:
            return []
        actions = [[int(i) for i in ids] for ids in action_token_ids]
        longest = max(len(ids) for ids in actions)
        if longest >= self.context_length:
            raise ValueError(
                f"an action of {longest} tokens leaves no room for a prompt in a context of "
                f"{self.context_length} tokens; score shorter utterances"
            )
        prompts = [
            self.prompt_ids(obs, self.context_length - len(ids))
            for obs, ids in zip(observations, actions, strict=True)
        ]
        input_ids, mask = self._left_pad([p + a for p, a in zip(prompts, actions, strict=True)])
        # Left padding aligns every action's end with the last column, so only the
        # last `longest + 1` positions need logits: position t predicts token t + 1.
        with eval_mode(self.model):
            out = self._forward(
                input_ids, mask, _positions(mask), None, use_cache=False, logits_to_keep=longest + 1
            )
        logits = out.logits[:, :-1, :].float()  # (B, A, V), A = longest
        targets = input_ids[:, input_ids.shape[1] - longest :]  # (B, A)
        token_logprobs = (
            F.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
        )  # (B, A)
        return [token_logprobs[row, longest - len(ids) :] for row, ids in enumerate(actions)]

    def log_probs_packed(
        self, observations: Sequence[str], action_token_ids: Sequence[Sequence[int]]
    ) -> list[torch.Tensor]:
        """What `log_probs` returns, with the turns of one episode scored in one sequence.

        When the observation is the whole history, the prompt of turn t + 1
        extends the prompt of turn t. Such pairs (in any order) are chained and
        packed into one row: the history once, each turn's utterance right
        after its own prompt. A custom attention mask hides every utterance
        from all later tokens and position ids skip it, so each utterance token
        sees exactly the ids `log_probs` would give it (equal up to float
        rounding) while the history is processed once instead of once per
        turn. Pairs that chain with nothing, or whose prompt would be
        truncated, are scored as by `log_probs`.
        """
        if len(observations) != len(action_token_ids):
            raise ValueError(
                f"got {len(observations)} observations but {len(action_token_ids)} actions; "
                "pass one list of action token ids per observation"
            )
        if not observations:
            return []
        actions = [[int(i) for i in ids] for ids in action_token_ids]
        prompts = [self.prompt_ids(obs) for obs in observations]
        fits = [
            len(p) + len(a) < self.context_length for p, a in zip(prompts, actions, strict=True)
        ]
        chains = _chain_prompts(observations, prompts, fits)
        results: list[torch.Tensor | None] = [None] * len(observations)
        singles = [i for i, fit in enumerate(fits) if not fit]
        if singles:
            scored = self.log_probs(
                [observations[i] for i in singles], [actions[i] for i in singles]
            )
            for i, value in zip(singles, scored, strict=True):
                results[i] = value
        if chains:
            for chain, values in zip(
                chains, self._score_chains(chains, prompts, actions), strict=True
            ):
                for i, value in zip(chain, values, strict=True):
                    results[i] = value
        return [value for value in results if value is not None]

    def _score_chains(
        self, chains: list[list[int]], prompts: list[list[int]], actions: list[list[int]]
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
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
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
        dtype = next(self.model.parameters()).dtype
        mask = torch.zeros(batch, 1, width, width, dtype=dtype)
        mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
        with eval_mode(self.model):
            out = self.model(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=position_ids.to(self.device),
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
        rows_t = torch.tensor(rows_index, device=self.device)
        cols_t = torch.tensor(cols_index, device=self.device)
        logits = out.logits[rows_t, cols_t - 1].float()  # (N, V)
        targets = input_ids.to(self.device)[rows_t, cols_t]  # (N,)
        flat = F.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)  # (N,)
        pieces = iter(flat.split(lengths))
        return [[next(pieces) for _ in span] for span in spans]

    # -- helpers -------------------------------------------------------------------
    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, both (B, T), padded on the left."""
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):
            if row:
                input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
                mask[i, width - len(row) :] = 1
        return input_ids.to(self.device), mask.to(self.device)

    def _forward(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: Any,
        use_cache: bool,
        logits_to_keep: int,
    ) -> Any:
        return self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **{self._cache_name: cache},
        )


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


def _chain_prompts(
    observations: Sequence[str], prompts: list[list[int]], fits: list[bool]
) -> list[list[int]]:
    """Group pair indices into chains whose prompts strictly extend one another.

    Histories grow a line per turn, so a chain's last observation is looked up
    among the newline-ended prefixes of each longer observation; a match must
    also be a prefix in token ids (the tokenizer may merge across the join).
    """
    order = sorted((i for i, fit in enumerate(fits) if fit), key=lambda i: len(prompts[i]))
    chains: list[list[int]] = []
    open_ends: dict[str, list[int]] = {}  # observation text -> chains ending there
    for i in order:
        text = observations[i]
        chain_index = None
        cut = text.rfind("\n", 0, len(text) - 1)
        while cut >= 0 and chain_index is None:
            waiting = open_ends.get(text[: cut + 1])
            if waiting:
                candidate = waiting[-1]
                end = prompts[chains[candidate][-1]]
                if len(end) < len(prompts[i]) and prompts[i][: len(end)] == end:
                    chain_index = waiting.pop()
            cut = text.rfind("\n", 0, cut)
        if chain_index is None:
            chains.append([i])
            chain_index = len(chains) - 1
        else:
            chains[chain_index].append(i)
        open_ends.setdefault(text, []).append(chain_index)
    return chains


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids (B, T) counting only real tokens; padding gets 0 (it is masked anyway)."""
    return (mask.cumsum(dim=-1) - 1).clamp(min=0)


def _cache_argument_name(model: torch.nn.Module) -> str:
    """The KV cache argument: ``cache`` in recent transformers, ``past_key_values`` before."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _is_adapter_dir(name_or_path: str | Path) -> bool:
    path = Path(name_or_path)
    return (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()
