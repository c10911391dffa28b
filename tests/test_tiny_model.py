"""The embedded tiny model: lossless tokenizer, Llama shapes, offline reload, determinism."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

from archer_agents.policies.tiny_model import (
    MAX_POSITION_EMBEDDINGS,
    MODEL_SIZES,
    SUPPORTED_HEAD_DIMS,
    ModelSize,
    build_model,
    init_model,
    train_tokenizer,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_tokenizer_round_trips_any_text(tokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "a  b",
        "Questions:\n\nIs it   red?\n",
        "\t tab\r\n",
        "  leading",
        "trailing  ",
        "é🙂",
    ],
)
def test_tokenizer_keeps_whitespace_and_unicode(tokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_frequent_words_become_single_tokens(tokenizer) -> None:
    for word in [" animal", " Yes", "Questions", " bigger"]:
        assert len(tokenizer.encode(word)) == 1, tokenizer.convert_ids_to_tokens(
            tokenizer.encode(word)
        )


def test_special_tokens_are_set_and_never_added_implicitly(tokenizer) -> None:
    ids = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id}
    assert None not in ids and len(ids) == 3
    text = "Is it an animal?"
    assert tokenizer.bos_token_id not in tokenizer.encode(text)
    assert tokenizer.encode(tokenizer.bos_token + text) == [
        tokenizer.bos_token_id,
        *tokenizer.encode(text),
    ]


def test_saved_model_reloads_offline_as_llama(tiny_model_dir: Path, tokenizer) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert (tiny_model_dir / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = model.config
    assert config.model_type == "llama"
    assert config.head_dim in SUPPORTED_HEAD_DIMS
    assert config.max_position_embeddings == MAX_POSITION_EMBEDDINGS
    assert config.vocab_size == len(tokenizer)
    assert config.eos_token_id == tokenizer.eos_token_id
    assert model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) < 300_000
    ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer.encode("Is it an animal?")]])
    logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


def test_demo_size_has_between_04_and_1M_parameters(tiny_corpus) -> None:
    tokenizer = train_tokenizer(tiny_corpus, vocab_size=512)
    model = build_model(tokenizer, size="demo")
    # The demo size is meant for a real corpus with a 1k vocabulary; count it that way.
    embedding = model.get_input_embeddings().weight
    count = (
        sum(p.numel() for p in model.parameters()) - embedding.numel() + 1024 * embedding.shape[1]
    )
    assert 400_000 <= count <= 1_000_000


def test_init_model_is_deterministic_for_a_seed(tmp_path: Path, tiny_corpus) -> None:
    first = init_model(tmp_path / "a", tiny_corpus, size="test", vocab_size=400, seed=3)
    second = init_model(tmp_path / "b", tiny_corpus, size="test", vocab_size=400, seed=3)
    other = init_model(tmp_path / "c", tiny_corpus, size="test", vocab_size=400, seed=4)
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()
    weights = [AutoModelForCausalLM.from_pretrained(d).state_dict() for d in (first, second, other)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not torch.equal(
        weights[0]["model.embed_tokens.weight"], weights[2]["model.embed_tokens.weight"]
    )


def test_building_a_model_leaves_the_global_rng_alone(tiny_corpus) -> None:
    tokenizer = train_tokenizer(tiny_corpus, vocab_size=300)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(tokenizer, size="test", seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_init_model_refuses_a_non_empty_directory(tmp_path: Path, tiny_corpus) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        init_model(target, tiny_corpus, size="test")
    assert (target / "notes.txt").read_text() == "mine"
    init_model(target, tiny_corpus, size="test", overwrite=True)
    assert not (target / "notes.txt").exists()
    assert (target / "model.safetensors").is_file()


def test_init_model_developer_errors_say_what_and_how(tmp_path: Path, tiny_corpus) -> None:
    with pytest.raises(ValueError, match=r"unknown model size 'huge'.*'demo'"):
        init_model(tmp_path / "a", tiny_corpus, size="huge")
    with pytest.raises(ValueError, match="corpus is empty"):
        init_model(tmp_path / "b", ["", "  \n"], size="test")
    with pytest.raises(ValueError, match="at least 259"):
        init_model(tmp_path / "c", tiny_corpus, size="test", vocab_size=100)
    assert not any(tmp_path.iterdir())


def test_model_sizes_respect_vllm_head_dims() -> None:
    assert {"test", "demo"} <= set(MODEL_SIZES)
    assert all(size.head_dim in SUPPORTED_HEAD_DIMS for size in MODEL_SIZES.values())
    with pytest.raises(ValueError, match="head_dim 16"):
        ModelSize(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)


@pytest.fixture(scope="module")
def line_tokenizer(tiny_corpus):
    return train_tokenizer(tiny_corpus, vocab_size=512, merge_within="line")


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_line_tokenizer_round_trips_any_text(line_tokenizer, text: str) -> None:
    assert line_tokenizer.decode(line_tokenizer.encode(text)) == text


def test_line_tokenizer_makes_frequent_lines_single_tokens(line_tokenizer, tokenizer) -> None:
    for line in ["Questions:\n", "Is it an animal? No.\n", "Is it a vehicle? Yes.\n"]:
        assert len(line_tokenizer.encode(line)) == 1, line_tokenizer.convert_ids_to_tokens(
            line_tokenizer.encode(line)
        )
    history = "Questions:\nIs it an animal? No.\nIs it a vehicle? Yes.\n"
    assert len(line_tokenizer.encode(history)) < len(tokenizer.encode(history)) / 3
    # Merges never cross a line break: a second line is tokenized on its own.
    assert line_tokenizer.encode(history) == [
        *line_tokenizer.encode("Questions:\n"),
        *line_tokenizer.encode("Is it an animal? No.\n"),
        *line_tokenizer.encode("Is it a vehicle? Yes.\n"),
    ]


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(
        st.text(alphabet=st.characters(exclude_characters="\n", codec="utf-8")), max_size=4
    ),
    rest=st.text(),
)
def test_line_tokenizer_keeps_the_tokens_of_a_growing_history(
    line_tokenizer, lines: list[str], rest: str
) -> None:
    history = "".join(line + "\n" for line in lines)
    ids = line_tokenizer.encode(history)
    assert line_tokenizer.encode(history + rest)[: len(ids)] == ids


def test_init_model_records_the_merge_scope_in_the_saved_tokenizer(
    tmp_path: Path, tiny_corpus
) -> None:
    line = init_model(tmp_path / "line", tiny_corpus, size="test", merge_within="line")
    word = init_model(tmp_path / "word", tiny_corpus, size="test")
    reloaded = {d.name: AutoTokenizer.from_pretrained(d) for d in (line, word)}
    text = "Is it an animal? No.\n"
    assert len(reloaded["line"].encode(text)) == 1
    assert len(reloaded["word"].encode(text)) > 1
    with pytest.raises(ValueError, match="merge_within must be one of"):
        init_model(tmp_path / "bad", tiny_corpus, size="test", merge_within="sentence")  # type: ignore[arg-type]
    assert not (tmp_path / "bad").exists()
