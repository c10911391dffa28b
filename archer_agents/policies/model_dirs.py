"""Writing a model folder whole or not at all, for every model the project builds or converts.

`init-model` builds the embedded model, tiny chat models and converted base
models; each is written into a folder beside the target and swapped in, so an
interrupted or failed write never leaves half a model where a user's policy
is expected, and an occupied folder is never mixed with a new model.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any


def check_free(output_dir: Path, overwrite: bool) -> None:
    """Refuse an existing, non-empty ``output_dir`` unless ``overwrite``."""
    occupied = output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir()))
    if occupied and not overwrite:
        raise FileExistsError(
            f"{output_dir} already exists and is not an empty directory; refusing to mix a new "
            "model with its contents. Choose another directory or pass overwrite=True "
            "(which replaces it)"
        )


def save_model_dir(output_dir: Path, model: Any, tokenizer: Any) -> Path:
    """``save_pretrained`` the model (safetensors) and tokenizer into ``output_dir``, atomically."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-", dir=output_dir.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if output_dir.is_dir():
            shutil.rmtree(output_dir)
        elif output_dir.exists():
            output_dir.unlink()
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir
