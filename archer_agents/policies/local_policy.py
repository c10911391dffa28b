"""A `Policy` backed by a local transformers causal LM, optionally with a LoRA adapter.

This module holds what makes a `LocalPolicy`: loading it (`from_pretrained`,
a fresh LoRA adapter from `LoraSettings` or a trained adapter), saving it,
and turning an observation into prompt ids. Its sampling and scoring methods
are thin entry points, with the public docstrings, into two modules:

- `archer_agents.policies.decoding`: the decoding loop, prompt caches and the
  sampled distribution (`warped_log_probs`, `PromptCache`);
- `archer_agents.policies.scoring`: `log_probs` and `log_probs_packed`, which
  chains the turns of an episode into one row;

and `archer_agents.policies.forward` holds the padded model call both share.

Policy-gradient training is only as faithful as the log-probabilities it
multiplies, so these modules avoid the public ArCHer code's scoring defects
(docs/algorithm.md, defects 1-4):

- The prompt is ``[bos] + tokenize(render_prompt(observation))`` (`prompt_ids`
  below), and an utterance is kept as the ids that were sampled; prompt and
  utterance are never re-tokenized together.
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

import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
from pydantic import BaseModel, ConfigDict, Field
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from archer_agents.formats.prompts import render_prompt
from archer_agents.policies import decoding, scoring
from archer_agents.policies.forward import cache_argument_name
from archer_agents.policies.prompt_ids import prompt_token_ids
from archer_agents.policies.protocol import Generation, Prompt, SamplingParams

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
        self.cache_name = cache_argument_name(model)
        """The keyword the model takes its KV cache by (it changed across transformers)."""
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
    def prompt_ids(self, observation: Prompt, max_tokens: int | None = None) -> list[int]:
        """The ids the policy conditions on, at most ``max_tokens`` long.

        A text observation gives ``[bos] + ids`` of the rendered prompt (with the
        embedded tokenizer, the text ``bos_token + render_prompt(observation)``
        encodes to the same ids, which is what a server should be sent); prompt ids
        (a conversation in the model's chat template) are used as they are. A
        longer prompt keeps bos and its most recent tokens
        (`archer_agents.policies.prompt_ids`).
        """
        ids, cut = prompt_token_ids(observation, self._encode_prompt, self.bos_id, max_tokens)
        if cut and not self._warned_truncation:
            logger.warning(
                "a prompt exceeds the %d tokens available; keeping its most recent tokens "
                "(this warning is shown once per policy)",
                max_tokens,
            )
            self._warned_truncation = True
        return ids

    def _encode_prompt_uncached(self, observation: str) -> tuple[int, ...]:
        encoded = self.tokenizer(render_prompt(observation), add_special_tokens=False)
        return tuple(encoded["input_ids"])

    # -- sampling (archer_agents.policies.decoding) -------------------------------
    def generate(
        self, observations: Sequence[Prompt], sampling: SamplingParams | None = None
    ) -> list[Generation]:
        """Sample one utterance per observation, in one batch.

        The returned log-probabilities are those of the distribution each token
        was drawn from: with temperature 1, top_k 0 and top_p 1 (the defaults)
        the model's own log-softmax; otherwise the distribution after dividing
        the logits by the temperature and keeping the top-k tokens, then the top-p
        nucleus, renormalised. Greedy decoding (temperature 0) returns the
        model's own log-softmax of the chosen token.
        """
        return decoding.generate(self, observations, sampling)

    def generate_ids(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingParams | None = None
    ) -> list[Generation]:
        """Sample one utterance per prompt given as token ids (bos included), in one batch.

        `generate` renders and tokenizes observations and calls this; a server that
        receives token ids calls it directly. Prompts plus ``max_new_tokens`` must
        fit the context.
        """
        return decoding.generate_ids(self, prompts, sampling)

    def generate_cached(
        self,
        observations: Sequence[Prompt],
        caches: Sequence[decoding.PromptCache | None],
        sampling: SamplingParams | None = None,
    ) -> tuple[list[Generation], list[decoding.PromptCache]]:
        """`generate`, reusing each prompt's cached keys and values where they still apply.

        ``caches[i]`` holds the keys and values of an earlier prompt (or None);
        when its ids start observation i's prompt, only the rest of the prompt is
        computed. The samples are distributed exactly as `generate`'s. Returns
        the generations and, per observation, the cache of its whole prompt
        (not of the utterance), ready for the next turn of the same episode,
        whose history extends this prompt. Turn by turn this costs the new text
        of each turn instead of the whole history.
        """
        return decoding.generate_cached(self, observations, caches, sampling)

    def generate_shared(
        self, observations: Sequence[Prompt], sampling: SamplingParams | None = None
    ) -> list[Generation]:
        """`generate`, computing each history shared by several observations once.

        Observations that are turns of one episode (each history extends the
        previous one) are chained as in `log_probs_packed`; each chain's
        longest prompt is run once and every turn's prompt cache is cut from it
        (`prefix_caches`), so only the last prompt token of each observation
        and the sampled tokens are computed per row. Distributed exactly as
        `generate`.
        """
        return decoding.generate_shared(self, observations, sampling)

    def prefix_caches(
        self, observations: Sequence[Prompt], max_tokens: int | None = None
    ) -> list[decoding.PromptCache | None]:
        """Per observation, the cache of its prompt but the last token, from one pass per chain.

        Prompts are cut to ``max_tokens`` as in `prompt_ids`; a prompt of one
        token gets None.
        """
        return decoding.prefix_caches(self, observations, max_tokens)

    # -- scoring (archer_agents.policies.scoring) ---------------------------------
    def log_probs(
        self, observations: Sequence[Prompt], action_token_ids: Sequence[Sequence[int]]
    ) -> list[torch.Tensor]:
        """Per-token log-probabilities of exactly the given ids, one 1-D tensor per pair.

        One batched forward pass; gradients flow unless the caller disables them.
        The end-of-utterance token, when present in the ids, gets its log-probability.
        """
        return scoring.log_probs(self, observations, action_token_ids)

    def log_probs_packed(
        self, observations: Sequence[Prompt], action_token_ids: Sequence[Sequence[int]]
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
        return scoring.log_probs_packed(self, observations, action_token_ids)


def _is_adapter_dir(name_or_path: str | Path) -> bool:
    path = Path(name_or_path)
    return (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()
