"""The project's embedded default models, built locally from the environments' text.

Nothing is downloaded: a byte-level BPE tokenizer is trained on the text the
environments produce and a small, randomly initialised Llama model is built on
top of it. The tokenizer's merges stay within a word (``merge_within="word"``,
as in the tokenizers of real LLMs: frequent words become single tokens) or
within a line (``"line"``: frequent whole lines, such as a game's questions
and its answered-question lines, become single tokens, so a game's history is
several times shorter; the main job's choice, `archer_agents.cli.quickstart`).
Llama rather than GPT-2 because vLLM serves LoRA adapters on Llama. Sizes are chosen for a CPU: the
"demo" size (about 0.6M parameters) learns to ask valid Twenty Questions
questions within a minute of behaviour cloning; a 3.2M-parameter model was five
times slower per step and no better per step. Heads are 32 wide, one of the
head sizes vLLM's CPU attention supports.

The result is an ordinary Hugging Face directory (safetensors weights, a fast
tokenizer), loadable offline with ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from archer_agents.policies.model_dirs import check_free, save_model_dir

logger = logging.getLogger(__name__)

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
"""Ends an utterance: the policy stops sampling when it emits this token."""
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN)

SUPPORTED_HEAD_DIMS = (32, 64)
"""Head sizes vLLM's CPU attention supports."""
MAX_POSITION_EMBEDDINGS = 4096
DEFAULT_VOCAB_SIZE = 1024
"""Upper bound; a small corpus may yield fewer tokens (BPE stops when no pair repeats)."""
_MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
"""Every byte must be a token for the tokenizer to be lossless."""

MergeScope = Literal["word", "line"]
MERGE_SCOPES: tuple[MergeScope, ...] = ("word", "line")
_LINE = Regex("[^\n]*\n?")
"""One line with its newline: a line-scoped tokenizer never merges across a line break."""


@dataclass(frozen=True)
class ModelSize:
    """Shape of a Llama model; the vocabulary size comes from the tokenizer."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}; pick sizes that divide"
            )
        if self.head_dim not in SUPPORTED_HEAD_DIMS:
            raise ValueError(
                f"head_dim {self.head_dim} is not one of {SUPPORTED_HEAD_DIMS}, the sizes vLLM's "
                "CPU attention supports; change hidden_size or num_attention_heads"
            )


MODEL_SIZES: dict[str, ModelSize] = {
    # About 0.1M parameters with a 1k vocabulary; built in well under a second (tests).
    "test": ModelSize(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
    ),
    # About 0.6M parameters with a 1k vocabulary (demos, CPU training).
    "demo": ModelSize(
        hidden_size=128, num_hidden_layers=3, num_attention_heads=4, intermediate_size=256
    ),
}


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    merge_within: MergeScope = "word",
) -> PreTrainedTokenizerFast:
    """Train a lossless byte-level BPE tokenizer on ``texts``.

    Every byte is in the vocabulary, there is no normaliser and spaces are kept
    as they are, so ``decode(encode(x)) == x`` for any string. The tokenizer adds
    no special tokens by itself; ``bos_token + text`` encodes to ``[bos] + encode(text)``.
    Merges stay within a word (``"word"``) or within a line (``"line"``); with
    ``"line"``, a text that ends with a newline encodes to a prefix of the
    encoding of any text it begins (a growing history keeps its tokens).
    """
    if vocab_size < _MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size {vocab_size} is too small: a byte-level tokenizer needs the 256 bytes "
            f"plus {len(SPECIAL_TOKENS)} special tokens; use at least {_MIN_VOCAB_SIZE}"
        )
    if merge_within not in MERGE_SCOPES:
        raise ValueError(
            f"merge_within must be one of {list(MERGE_SCOPES)}, not {merge_within!r}: 'word' keeps "
            "merges inside words, 'line' lets whole lines become tokens"
        )
    tokenizer = Tokenizer(models.BPE())
    if merge_within == "word":
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(_LINE, behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def build_model(
    tokenizer: PreTrainedTokenizerFast, size: str = "demo", seed: int = 0
) -> LlamaForCausalLM:
    """A randomly initialised fp32 Llama model of a named size for ``tokenizer``."""
    shape = _size(size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_attention_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=MAX_POSITION_EMBEDDINGS,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        dtype="float32",
    )
    # Seed a forked RNG so that building a model leaves the caller's global state alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def init_model(
    output_dir: str | Path,
    texts: Iterable[str],
    size: str = "demo",
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    seed: int = 0,
    overwrite: bool = False,
    merge_within: MergeScope = "word",
) -> Path:
    """Train a tokenizer on ``texts``, build a model of ``size`` and save both to ``output_dir``.

    ``merge_within`` is the tokenizer's (`train_tokenizer`). Deterministic for a
    given corpus, size, vocabulary size, merge scope and seed. Returns the
    directory, ready for ``AutoModelForCausalLM.from_pretrained``.
    """
    output_dir = Path(output_dir)
    _size(size)
    check_free(output_dir, overwrite)
    corpus = [text for text in texts if text.strip()]
    if not corpus:
        raise ValueError(
            "the corpus is empty (no non-blank text), so there is nothing to train the tokenizer "
            "on; pass the environments' observations and actions as texts"
        )

    tokenizer = train_tokenizer(corpus, vocab_size=vocab_size, merge_within=merge_within)
    model = build_model(tokenizer, size=size, seed=seed)
    save_model_dir(output_dir, model, tokenizer)
    logger.info(
        "built a %s model (%d parameters, vocabulary %d) in %s",
        size,
        sum(p.numel() for p in model.parameters()),
        len(tokenizer),
        output_dir,
    )
    return output_dir


def _size(name: str) -> ModelSize:
    try:
        return MODEL_SIZES[name]
    except KeyError:
        raise ValueError(
            f"unknown model size {name!r}; the embedded sizes are {sorted(MODEL_SIZES)}. "
            "Pick one of them, or pass your own model directory or hub id where a model is expected"
        ) from None
