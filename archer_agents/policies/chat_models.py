"""Tiny local stand-ins for real chat model families, for offline tests and benchmarks.

A test of tool calling, chat rendering or serving needs a model whose
tokenizer and template are those of a real family (Qwen2.5's ChatML with
Hermes tool calls, Llama 3.1's headers and JSON calls), but not its weights.
`build_chat_model` writes such a model in seconds without a network: a
byte-level BPE tokenizer trained in-process on a small corpus, carrying the
family's special tokens (each a single id, never split), its chat template
(`archer_agents.formats.chat_templates`), and a randomly initialised model of
the family's architecture (`Qwen2ForCausalLM`, `LlamaForCausalLM`) in one of
the embedded sizes (`archer_agents.policies.tiny_model.MODEL_SIZES`).

The folder loads like any Hugging Face model (``AutoTokenizer``,
``AutoModelForCausalLM``, `LocalPolicy.from_pretrained`) and renders
conversations with ``tokenizer.apply_chat_template(messages, tools=...)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from archer_agents.formats.chat_templates import CHATML_TOOLS, LLAMA3_JSON_TOOLS
from archer_agents.policies.model_dirs import check_free, save_model_dir
from archer_agents.policies.tiny_model import MAX_POSITION_EMBEDDINGS, MODEL_SIZES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatFamily:
    """What a tiny model copies from a real family: special tokens, template, architecture."""

    architecture: str
    """``"qwen2"`` or ``"llama"``."""
    special_tokens: tuple[str, ...]
    """Added as single, never-split tokens, in this order after the pad token."""
    eos_token: str
    """Ends an assistant turn: generation stops there."""
    pad_token: str
    bos_token: str | None
    chat_template: str
    add_bos: bool = False
    """Whether plain ``tokenizer(text)`` prepends bos (Llama 3's tokenizer does)."""
    non_special: tuple[str, ...] = ()
    """Added tokens that decode as text (Qwen2.5's ``<tool_call>`` tags are not special)."""


CHAT_FAMILIES: dict[str, ChatFamily] = {
    "qwen2": ChatFamily(
        architecture="qwen2",
        special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        non_special=("<tool_call>", "</tool_call>"),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        chat_template=CHATML_TOOLS,
    ),
    "llama3": ChatFamily(
        architecture="llama",
        special_tokens=(
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|finetune_right_pad_id|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eom_id|>",
            "<|eot_id|>",
            "<|python_tag|>",
        ),
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        bos_token="<|begin_of_text|>",
        chat_template=LLAMA3_JSON_TOOLS,
        add_bos=True,
    ),
}
"""The families a tiny chat model can copy, by name."""

CHAT_CORPUS: tuple[str, ...] = (
    "You are a helpful assistant. What is the capital of France? The capital of France is Paris.",
    "What's the weather like in Paris today? Let me check the weather for you.",
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
    '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}',
    '{"output": "22 degrees and sunny"} It is 22 degrees and sunny in Paris.',
    '{"type": "function", "function": {"name": "get_order", "description": "Look up an order.", '
    '"parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, '
    '"required": ["order_id"]}}}',
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n",
    "You are provided with function signatures within <tools></tools> XML tags.",
    "For each function call, return a json object with function name and arguments.",
    "<tool_response>\nOrder #W1 was shipped on Monday.\n</tool_response>",
    "Environment: ipython\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n",
    "Given the following functions, please respond with a JSON for a function call.",
    "Is it an animal? Yes. Is it a bird? No. Is it a fish? Yes.",
)
"""Chat-like text the tiny tokenizers learn their merges from."""


def chat_family(name: str) -> ChatFamily:
    """The family called ``name``; raises ValueError naming the others."""
    try:
        return CHAT_FAMILIES[name]
    except KeyError:
        raise ValueError(
            f"unknown chat family {name!r}; the families are {sorted(CHAT_FAMILIES)}"
        ) from None


def train_chat_tokenizer(
    family: str, texts: Iterable[str] = CHAT_CORPUS, vocab_size: int = 512
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with ``family``'s special tokens and chat template.

    Lossless like the embedded tokenizer (every byte is a token, spaces kept);
    the special tokens are whole tokens that plain text never merges into.
    """
    spec = chat_family(family)
    specials = list(spec.special_tokens)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    if spec.non_special:
        tokenizer.add_tokens(list(spec.non_special))
    if spec.add_bos and spec.bos_token is not None:
        bos_id = tokenizer.token_to_id(spec.bos_token)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{spec.bos_token} $A",
            pair=f"{spec.bos_token} $A {spec.bos_token} $B",
            special_tokens=[(spec.bos_token, bos_id)],
        )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=spec.bos_token,
        eos_token=spec.eos_token,
        pad_token=spec.pad_token,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    wrapped.chat_template = spec.chat_template
    return wrapped


def build_chat_model(
    tokenizer: PreTrainedTokenizerFast, family: str, size: str = "test", seed: int = 0
) -> PreTrainedModel:
    """A randomly initialised fp32 model of ``family``'s architecture for ``tokenizer``."""
    spec = chat_family(family)
    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; the sizes are {sorted(MODEL_SIZES)}")
    shape = MODEL_SIZES[size]
    common = {
        "vocab_size": len(tokenizer),
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_hidden_layers,
        "num_attention_heads": shape.num_attention_heads,
        "num_key_value_heads": shape.num_attention_heads,
        "max_position_embeddings": MAX_POSITION_EMBEDDINGS,
        "tie_word_embeddings": True,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "dtype": "float32",
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec.architecture == "qwen2":
            return Qwen2ForCausalLM(Qwen2Config(**common))
        return LlamaForCausalLM(LlamaConfig(head_dim=shape.head_dim, **common))


def init_chat_model(
    output_dir: str | Path,
    family: str,
    *,
    texts: Iterable[str] = CHAT_CORPUS,
    size: str = "test",
    vocab_size: int = 512,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a tiny ``family`` model and its tokenizer to ``output_dir``; returns the folder.

    Deterministic for a given family, corpus, size, vocabulary size and seed.
    """
    output_dir = Path(output_dir)
    check_free(output_dir, overwrite)
    tokenizer = train_chat_tokenizer(family, texts, vocab_size=vocab_size)
    model = build_chat_model(tokenizer, family, size=size, seed=seed)
    save_model_dir(output_dir, model, tokenizer)
    logger.info(
        "built a tiny %s chat model (%d parameters, vocabulary %d) in %s",
        family,
        sum(p.numel() for p in model.parameters()),
        len(tokenizer),
        output_dir,
    )
    return output_dir
