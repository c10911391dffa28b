"""An OpenAI-compatible server on transformers: the embedded default for CPUs and tests.

It answers the part of vLLM's OpenAI API that the project uses, in vLLM's
shape, so that `ServerPolicy`, adapter deployment and any OpenAI client work
against either server unchanged:

- ``GET /v1/models``: the base model and every loaded LoRA adapter;
- ``POST /v1/completions``: prompts as text or token ids, ``logprobs``,
  ``return_tokens_as_token_ids`` and ``return_token_ids``;
- ``POST /v1/chat/completions``: messages rendered by `chat_prompt_text`; with
  ``tools`` (or tool calls in the history), rendered and answered in the
  training format with OpenAI ``tool_calls`` (`chat_tools`);
- ``POST /v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``: adapters by name;
- ``GET /health``.

Requests that arrive together are sampled in one `LocalPolicy.generate_ids`
call when they ask for the same adapter and sampling settings
(`model_engine`); request bodies and answers live in `openai_protocol`. The
log-probabilities are those of the distribution each token was drawn from
(what `LocalPolicy.generate` returns; vLLM answers the same when started with
``--logprobs-mode processed_logprobs``).

It binds 127.0.0.1 unless told otherwise, checks an optional API key, refuses
bodies over a size limit (413) and more requests in flight than a limit (429),
and answers every bad request with a 4xx and a message in OpenAI's error shape:
bodies are parsed as strict JSON and validated field by field
(`openai_protocol.parse_request`), so no client input reaches the model
unchecked. A 500 means a bug in the server: it is logged once, with its
traceback, and answered in the same shape (`_ErrorBoundary`). Runtime adapter
loading reads any adapter directory the client names, as vLLM's does: expose
the server beyond this machine only with an API key.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse
except ImportError as exc:  # the serve extra is optional
    raise ImportError(
        "the local server needs FastAPI and uvicorn: pip install 'archer-agents[serve]'"
    ) from exc

from archer_agents.formats.chat_prompt import (
    chat_prompt_text,
    message_text,
    observation_prompt_text,
)
from archer_agents.formats.chat_templates import has_tool_support
from archer_agents.formats.tool_formats import family_for
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.serving.chat_tools import (
    reply_message,
    template_prompt_text,
    tool_choice,
    tool_observation,
    tool_specs,
    uses_tools,
)
from archer_agents.serving.model_engine import Batcher, ModelEngine
from archer_agents.serving.openai_protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    LoadAdapterRequest,
    SamplingRequest,
    UnloadAdapterRequest,
    chat_response,
    completion_response,
    parse_request,
)

logger = logging.getLogger(__name__)


class ServerSettings(BaseModel):
    """Limits and access control of the local server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: str | None = None
    """When set, every /v1 request must send ``Authorization: Bearer <api_key>``."""
    max_request_bytes: int = Field(1_000_000, ge=1024)
    """Largest request body accepted; larger ones get 413."""
    max_concurrency: int = Field(64, ge=1)
    """Most generation requests in flight at once; more get 429."""
    max_batch_size: int = Field(64, ge=1)
    """Most sequences sampled in one generate call."""
    batch_wait_ms: float = Field(2.0, ge=0.0)
    """How long the first request of a batch waits for others to join it."""
    max_prompts: int = Field(256, ge=1)
    """Most prompts (times ``n``) in one completions request."""
    max_n: int = Field(16, ge=1)
    """Most completions per prompt."""
    seed: int | None = None
    """Seeds the sampling generator, for reproducible runs."""


_Body = TypeVar("_Body", bound=BaseModel)


def create_app(
    policy: LocalPolicy,
    model_name: str,
    settings: ServerSettings | None = None,
    *,
    adapters: dict[str, str | Path] | None = None,
) -> FastAPI:
    """The FastAPI application serving ``policy``'s model as ``model_name``.

    ``adapters`` (name -> directory) are loaded at start-up, like vLLM's
    ``--lora-modules``.
    """
    settings = settings or ServerSettings()
    engine = ModelEngine(policy, seed=settings.seed)
    for name, path in (adapters or {}).items():
        engine.load_adapter(name, path)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archer-model")
    batcher = Batcher(engine, executor, settings.max_batch_size, settings.batch_wait_ms / 1000)
    in_flight = InFlight()
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        task = asyncio.create_task(batcher.run())
        try:
            yield
        finally:
            task.cancel()
            executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="archer-agents local server", lifespan=lifespan, docs_url=None)
    app.state.engine = engine
    app.state.batcher = batcher
    app.state.in_flight = in_flight
    error = _error

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return error(exc.status, exc.message, exc.kind)

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return error(404, f"no route {request.method} {request.url.path}", "NotFoundError")

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc: Exception) -> JSONResponse:
        return error(405, f"{request.method} is not allowed on {request.url.path}", "BadRequest")

    @app.middleware("http")
    async def check_api_key(request: Request, call_next: Any) -> Any:
        if settings.api_key and request.url.path.startswith("/v1"):
            sent = request.headers.get("authorization", "")
            expected = f"Bearer {settings.api_key}"
            if not hmac.compare_digest(sent.encode(), expected.encode()):
                return error(
                    401,
                    "missing or wrong API key: send 'Authorization: Bearer <key>'",
                    "Unauthorized",
                )
        return await call_next(request)

    # Added last, so outermost: it sees whatever the routes and middleware above raise.
    app.add_middleware(_ErrorBoundary)

    async def read(request: Request, model: type[_Body]) -> _Body:
        return parse_request(await _read_body(request, settings.max_request_bytes), model)

    def slot() -> Any:
        return in_flight.slot(settings.max_concurrency)

    def resolve(name: str) -> str | None:
        """The adapter a model name selects (None for the base model)."""
        if name == model_name:
            return None
        if name in engine.adapters:
            return name
        raise APIError(404, f"The model `{name}` does not exist.", "NotFoundError")

    def check_prompts(prompts: list[list[int]], max_tokens: int) -> None:
        if not prompts:
            raise APIError(400, "the request holds no prompt")
        for prompt in prompts:
            if not prompt:
                raise APIError(400, "a prompt is empty: it must hold at least one token")
            bad = [i for i in prompt if not 0 <= i < engine.vocab_size]
            if bad:
                raise APIError(
                    400, f"token id {bad[0]} is outside the vocabulary [0, {engine.vocab_size})"
                )
            if len(prompt) + max_tokens > engine.context_length:
                raise APIError(
                    400,
                    f"This model's maximum context length is {engine.context_length} tokens. "
                    f"However, you requested {len(prompt) + max_tokens} tokens ({len(prompt)} in "
                    f"the prompt, {max_tokens} for the completion). Please reduce the length "
                    "of the prompt or max_tokens.",
                )

    def check_common(req: SamplingRequest, rows: int) -> None:
        if req.stop:
            raise APIError(400, "stop sequences are not supported; utterances end with eos")
        if req.n > settings.max_n:
            raise APIError(400, f"n={req.n} exceeds the server's limit of {settings.max_n}")
        if rows > settings.max_prompts:
            raise APIError(
                400,
                f"{rows} sequences requested (prompts times n), over the server's limit of "
                f"{settings.max_prompts}; split the request",
            )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"object": "model", "created": created, "owned_by": "archer-agents"}
        data = [
            {
                **card,
                "id": model_name,
                "root": model_name,
                "parent": None,
                "max_model_len": engine.context_length,
            }
        ]
        for name, path in list(engine.adapters.items()):
            data.append({**card, "id": name, "root": path, "parent": model_name})
        return {"object": "list", "data": data}

    @app.post("/v1/completions")
    async def completions(request: Request) -> dict[str, Any]:
        with slot():
            req = await read(request, CompletionRequest)
            adapter = resolve(req.model)
            prompts = _completion_prompts(req.prompt, engine)
            check_common(req, len(prompts) * req.n)
            check_prompts(prompts, req.max_tokens)
            rows = await batcher.submit(
                [prompt for prompt in prompts for _ in range(req.n)],
                req.sampling(req.max_tokens),
                adapter=adapter,
                seed=req.seed,
                top_logprobs=req.logprobs or 0,
            )
            return completion_response(req, rows, engine.tokenizer)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> dict[str, Any]:
        with slot():
            req = await read(request, ChatCompletionRequest)
            adapter = resolve(req.model)
            if req.top_logprobs is not None and not req.logprobs:
                raise APIError(400, "top_logprobs needs logprobs: true")
            reply = None
            if uses_tools(req):
                specs, choice = tool_specs(req), tool_choice(req)  # a bad choice: 400, no sampling
                # A model with its own tool-calling template reads the conversation in it and
                # writes calls in its family's format; the embedded model reads training's.
                tool_format = None
                if has_tool_support(getattr(engine.tokenizer, "chat_template", None)):
                    text = template_prompt_text(req, engine.tokenizer, specs)
                    tool_format = family_for(engine.tokenizer)
                else:
                    text = observation_prompt_text(tool_observation(req), engine.tokenizer)

                def reply(utterance: str) -> tuple[dict[str, Any], bool]:
                    return reply_message(utterance, specs, choice, tool_format)

            else:
                messages = [
                    {"role": m.role, "content": message_text([p.model_dump() for p in m.content])}
                    if isinstance(m.content, list)
                    else {"role": m.role, "content": m.content or ""}
                    for m in req.messages
                ]
                text = chat_prompt_text(messages, engine.tokenizer)
            prompt = list(engine.tokenizer(text, add_special_tokens=False)["input_ids"])
            # Unset, a chat answer may fill the context, as with vLLM and OpenAI.
            max_tokens = (
                req.max_completion_tokens
                or req.max_tokens
                or max(1, engine.context_length - len(prompt))
            )
            check_common(req, req.n)
            check_prompts([prompt], max_tokens)
            rows = await batcher.submit(
                [prompt] * req.n,
                req.sampling(max_tokens),
                adapter=adapter,
                seed=req.seed,
                top_logprobs=req.top_logprobs or 0,
            )
            return chat_response(req, prompt, rows, engine.tokenizer, reply)

    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(request: Request) -> PlainTextResponse:
        req = await read(request, LoadAdapterRequest)
        if req.lora_name == model_name or req.lora_name in engine.adapters:
            raise APIError(
                400,
                f"The lora adapter '{req.lora_name}' has already been loaded. Unload it first, "
                "or load the new weights under a new name.",
            )
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(executor, engine.load_adapter, req.lora_name, req.lora_path)
        return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' added successfully.")

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(request: Request) -> PlainTextResponse:
        req = await read(request, UnloadAdapterRequest)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(executor, engine.unload_adapter, req.lora_name)
        return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' removed successfully.")

    return app


class InFlight:
    """Generation requests in flight, refused with 429 beyond a limit (``app.state.in_flight``).

    Only the event loop's thread touches it, so a plain counter is enough.
    """

    def __init__(self) -> None:
        self.count = 0

    @contextmanager
    def slot(self, limit: int) -> Iterator[None]:
        if self.count >= limit:
            raise APIError(
                429,
                f"{self.count} requests are in flight, the server's limit; retry later or start "
                "the server with a higher --max-concurrency",
                "TooManyRequests",
            )
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1


def _error(status: int, message: str, kind: str) -> JSONResponse:
    """An answer with OpenAI's error body (vLLM's too)."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return JSONResponse(body, status_code=status)


class _ErrorBoundary:
    """ASGI layer turning any exception a request raises into one log record and a 500.

    Starlette's own handler for ``Exception`` answers and then re-raises, so
    uvicorn logged each failure a second time; this layer answers and stops.
    A failed batch hands one exception to each of its requests: it is logged
    only once, with the first of them.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if not getattr(exc, "_archer_logged", False):
                logger.exception("request %s %s failed", scope.get("method"), scope.get("path"))
                with suppress(AttributeError):  # an exception type with __slots__
                    exc._archer_logged = True  # type: ignore[attr-defined]
            if not started:  # once the answer has begun, the connection can only be closed
                message = f"the server failed on this request ({type(exc).__name__}: {exc})"
                await _error(500, message, "InternalServerError")(scope, receive, send)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    too_large = APIError(
        413,
        f"the request body exceeds the server's limit of {limit} bytes; send fewer or shorter "
        "prompts per request, or start the server with a higher --max-request-bytes",
        "RequestTooLarge",
    )
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise APIError(400, f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _completion_prompts(
    prompt: str | list[str] | list[int] | list[list[int]], engine: ModelEngine
) -> list[list[int]]:
    """Token ids of each prompt; text is tokenized as vLLM does (the tokenizer's defaults)."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if prompt and all(isinstance(p, int) for p in prompt):
        return [list(prompt)]  # type: ignore[arg-type]
    prompts: list[list[int]] = []
    for item in prompt:
        if isinstance(item, str):
            prompts.append(list(engine.tokenizer(item)["input_ids"]))
        elif isinstance(item, list):
            prompts.append(list(item))
    return prompts


class LocalServer:
    """Runs an app under uvicorn on a background thread: for tests, benchmarks and notebooks.

    ``port=0`` picks a free port; `url` tells which. Use as a context manager,
    or call `start` and `stop`.
    """

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.log_level = log_level
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> LocalServer:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level=self.log_level, lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name="archer-server"
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the local server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    model: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    served_model_name: str | None = None,
    adapters: dict[str, str | Path] | None = None,
    settings: ServerSettings | None = None,
    threads: int | None = 1,
) -> None:
    """Load ``model`` and serve it in the foreground until interrupted.

    ``threads`` sets torch's threads for this process (None keeps torch's
    choice). One, as vLLM also uses on a CPU, leaves a core to the HTTP side;
    on the 2-core development machine under load, two threads made batched
    sampling 20 times slower than one (OpenMP threads wait on each other).
    """
    import torch
    import uvicorn

    if threads is not None:
        torch.set_num_threads(threads)
    policy = LocalPolicy.from_pretrained(model)
    app = create_app(policy, served_model_name or str(model), settings, adapters=adapters)
    uvicorn.run(app, host=host, port=port, log_level="info")
