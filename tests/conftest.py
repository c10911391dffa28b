"""Shared fixtures: a tiny Llama model built in-process from a fixed corpus, offline.

``tiny_model_dir`` is built once per session ("test" size, about 0.1M
parameters, well under a second); ``tiny_policy`` loads a fresh `LocalPolicy`
from it for each test, so tests may train or wrap it freely.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path

import pytest
import torch

pytest_plugins = ["chat_fixtures"]

# Tiny models gain nothing from intra-op threads, and the suite's processes share two cores.
torch.set_num_threads(1)

TINY_CORPUS: tuple[str, ...] = (
    "Questions:\nIs it an animal? Yes.\nIs it a mammal? No.\nIs it a bird? Yes.\n"
    "Is it a penguin? Yes.\n",
    "Questions:\nIs it an animal? No.\nIs it a fruit? Yes.\nIs it red? No.\n"
    "Is it yellow? Yes.\nIs it a banana? Yes.\n",
    "Questions:\nIs it an animal? No.\nIs it made of metal? Yes.\nIs it bigger than a car? No.\n"
    "Is it used in the kitchen? Yes.\nIs it a spoon? No.\nIs it a fork? Yes.\n",
    "Questions:\nIs it an animal? Yes.\nIs it a mammal? Yes.\nDoes it live in water? Yes.\n"
    "Is it a whale? No.\nIs it a dolphin? Yes.\n",
    "Questions:\nIs it an animal? No.\nIs it a plant? Yes.\nIs it a tree? Yes.\n"
    "Is it an oak? Yes.\n",
    "Questions:\nIs it an animal? No.\nIs it a vehicle? Yes.\nDoes it fly? No.\n"
    "Is it bigger than a car? Yes.\nIs it a truck? Yes.\n",
)
"""A few Twenty-Questions-like games, the text the tiny tokenizer is trained on."""


@pytest.fixture(scope="session")
def tiny_corpus() -> tuple[str, ...]:
    return TINY_CORPUS


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A "test"-size model and its tokenizer saved with `save_pretrained` (read-only: copy it)."""
    from archer_agents.policies.tiny_model import init_model

    return init_model(
        tmp_path_factory.mktemp("tiny") / "model", TINY_CORPUS, size="test", vocab_size=512, seed=0
    )


@pytest.fixture
def tiny_policy(tiny_model_dir: Path):
    """A fresh `LocalPolicy` on the tiny model, sampling with a generator seeded 0."""
    from archer_agents.policies.local_policy import LocalPolicy

    return LocalPolicy.from_pretrained(tiny_model_dir, seed=0)
