"""Session fixtures: tiny models of real chat families, and the converted SmolLM2.

``qwen2_chat_dir`` and ``llama3_chat_dir`` are tiny random models (seconds to
build) whose tokenizers carry the Qwen2.5 and Llama 3.1 special tokens and
tool-calling templates. ``smollm2_dir`` is the real SmolLM2-135M-Instruct,
written once per session through ``archer init-model --base`` (the command a
user runs); ``smollm2_init`` also holds what that command printed, so the CLI
test checks the same run instead of converting twice. Tests that use them
are marked ``slow``. All are read-only: copy a folder before changing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def qwen2_chat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2-architecture model with the Qwen2.5 (Hermes) tool template."""
    from archer_agents.policies.chat_models import init_chat_model

    return init_chat_model(tmp_path_factory.mktemp("qwen2") / "model", "qwen2")


@pytest.fixture(scope="session")
def llama3_chat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama-architecture model with the Llama 3.1 JSON tool template."""
    from archer_agents.policies.chat_models import init_chat_model

    return init_chat_model(tmp_path_factory.mktemp("llama3") / "model", "llama3")


@dataclass(frozen=True)
class ModelInit:
    """One ``archer init-model`` run: the folder it wrote and what it printed."""

    path: Path
    exit_code: int
    output: str


@pytest.fixture(scope="session")
def smollm2_init(tmp_path_factory: pytest.TempPathFactory) -> ModelInit:
    """``archer init-model DIR --base smollm2-135m-instruct``, run once per session."""
    from typer.testing import CliRunner

    from archer_agents.cli.app import full_app

    path = tmp_path_factory.mktemp("smollm2") / "model"
    result = CliRunner().invoke(
        full_app(), ["init-model", str(path), "--base", "smollm2-135m-instruct"]
    )
    return ModelInit(path=path, exit_code=result.exit_code, output=result.output)


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_init: ModelInit) -> Path:
    """The converted SmolLM2-135M-Instruct folder (float32, tool-calling ChatML template)."""
    assert smollm2_init.exit_code == 0, smollm2_init.output
    return smollm2_init.path
