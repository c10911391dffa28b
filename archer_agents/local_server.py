"""An OpenAI-compatible server on transformers: the embedded default for CPUs and tests.

It answers the part of vLLM's OpenAI API that the project uses, in vLLM's
shape, so that `ServerPolicy`, adapter deployment and any OpenAI client work
against either server unchanged:

- ``GET /v1/models``: the base model and every loaded LoRA adapter;
- ``POST /v1/completions``: prompts as text or token ids, ``logprobs``,
  ``return_tokens_as_token_ids`` and ``return_token_ids``;
- ``POST /v1/chat/completions``: messages rendered by `chat_prompt_text`;
- ``POST /v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``: adapters by name;
- ``GET /health``.

Requests that arrive together are sampled in one `LocalPolicy.generate_ids`
call when they ask for the same adapter and sampling settings. The model runs
on one worker thread, so an adapter load never races a generation. The
log-probabilities are those of the distribution each token was drawn from
(what `LocalPolicy.generate` returns; vLLM answers the same when started with
``--logprobs-mode processed_logprobs``).

It binds 127.0.0.1 unless told otherwise, checks an optional API key, refuses
bodies over a size limit (413) and more requests in flight than a limit (429),
and answers every bad request with a 4xx and a message. Runtime adapter
loading reads any adapter directory the client names, as vLLM's does: expose
the server beyond this machine only with an API key.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from transformers import PreTrainedModel

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse
except ImportError as exc:  # the serve extra is optional
    raise ImportError(
        "the local server needs FastAPI and uvicorn: pip install 'archer-agents[serve]'"
    ) from exc

from archer_agents.chat_prompt import chat_prompt_text, message_text
from archer_agents.local_policy import LocalPolicy, warped_log_probs
from archer_agents.policy import Generation, SamplingParams
from archer_agents.server_policy import TOKEN_ID_PREFIX

logger = logging.getLogger(__name__)

MAX_LOGPROBS = 20
"""Most alternatives per position, as in vLLM's default and OpenAI's limit."""
MIN_TEMPERATURE = 0.01
"""Smallest temperature above 0 (greedy); vLLM raises smaller ones to this."""


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


class APIError(Exception):
    """A request the server refuses, answered with ``status`` and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


# -- request bodies ---------------------------------------------------------------


class _Request(BaseModel):
    """Fields shared by both endpoints; unknown fields are refused so typos surface."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str
    temperature: float = Field(1.0, ge=0.0, le=100.0)
    """0 samples greedily; otherwise at least `MIN_TEMPERATURE` (vLLM raises smaller ones to it)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=-1)
    """0 or -1 keeps every token (vLLM accepts both)."""
    n: int = Field(1, ge=1)
    seed: int | None = None
    stream: Literal[False] = False
    stop: str | list[str] | None = None
    """Only empty: utterances end with the model's eos token."""
    presence_penalty: float = Field(0.0, ge=0.0, le=0.0)
    frequency_penalty: float = Field(0.0, ge=0.0, le=0.0)
    user: str | None = None
    return_tokens_as_token_ids: bool = False
    """Write tokens as ``token_id:<id>`` in the logprobs (exact, unlike decoded strings)."""
    return_token_ids: bool = False
    """Add the prompt's and the completion's token ids to the answer (vLLM's fields)."""

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float) -> float:
        if 0.0 < value < MIN_TEMPERATURE:
            raise ValueError(
                f"must be 0 (greedy) or at least {MIN_TEMPERATURE}: smaller temperatures overflow"
            )
        return value

    def sampling(self, max_tokens: int) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=max_tokens,
            temperature=self.temperature,
            top_k=max(self.top_k, 0),
            top_p=self.top_p,
        )


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: Literal[False] = False


class _ContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)


class LoadAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lora_name: str = Field(min_length=1, max_length=200)
    lora_path: str = Field(min_length=1)


class UnloadAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lora_name: str = Field(min_length=1)


# -- the model and its adapters --------------------------------------------------------


@dataclass
class SampledRow:
    """One sampled completion and, when asked for, the top alternatives at each position."""

    generation: Generation
    top: list[list[tuple[int, float]]] | None = None


class ModelEngine:
    """The served model and its LoRA adapters. Not thread-safe: call it from one thread."""

    def __init__(self, policy: LocalPolicy, seed: int | None = None) -> None:
        from peft import PeftModel

        if isinstance(policy.model, PeftModel):
            raise ValueError(
                "the server was given a policy that already carries a LoRA adapter; serve the "
                "base model and load adapters by name (--lora NAME=PATH or /v1/load_lora_adapter)"
            )
        self.tokenizer = policy.tokenizer
        self._base: PreTrainedModel = policy.model
        self._base.eval()
        self._peft: Any = None
        self._generator = policy.generator
        if seed is not None:
            self._generator = torch.Generator(device=policy.device).manual_seed(seed)
        self.policy = self._policy_for(self._base)
        self.adapters: dict[str, str] = {}
        """Loaded adapters: name -> directory."""

    @property
    def context_length(self) -> int:
        return self.policy.context_length

    @property
    def vocab_size(self) -> int:
        return int(self._base.config.vocab_size)

    def _policy_for(self, model: Any) -> LocalPolicy:
        policy = LocalPolicy(model, self.tokenizer)
        policy.generator = self._generator
        return policy

    def load_adapter(self, name: str, path: str | Path) -> None:
        from peft import PeftConfig, PeftModel

        directory = Path(path)
        if not (directory / "adapter_config.json").is_file():
            raise APIError(
                400,
                f"{directory} holds no adapter_config.json, so it is not a LoRA adapter "
                "directory; pass a directory written by LocalPolicy.save or save_pretrained",
            )
        try:
            config = PeftConfig.from_pretrained(str(directory))
            if self._peft is None:
                self._peft = PeftModel(self._base, config, adapter_name=name)
                self.policy = self._policy_for(self._peft)
            self._peft.load_adapter(str(directory), adapter_name=name, is_trainable=False)
        except Exception as exc:  # any broken file or config is the client's adapter's fault
            self._drop(name)
            raise APIError(400, f"could not load adapter {name!r} from {directory}: {exc}") from exc
        self._peft.eval()
        self.adapters[name] = str(directory)
        logger.info("loaded adapter %s from %s", name, directory)

    def unload_adapter(self, name: str) -> None:
        if name not in self.adapters:
            raise APIError(404, f"the adapter {name!r} is not loaded", "NotFoundError")
        del self.adapters[name]
        self._drop(name)
        logger.info("unloaded adapter %s", name)

    def _drop(self, name: str) -> None:
        """Remove an adapter's layers; with none left, go back to the plain base model."""
        if self._peft is None:
            return
        if name in self._peft.peft_config:
            if len(self._peft.peft_config) > 1:
                others = [other for other in self._peft.peft_config if other != name]
                self._peft.set_adapter(others[0])  # deleting the active adapter warns
                self._peft.delete_adapter(name)
            else:
                self._base = self._peft.unload()
                self._peft = None
                self.policy = self._policy_for(self._base)

    @contextmanager
    def _adapter(self, adapter: str | None) -> Iterator[None]:
        if adapter is None:
            if self._peft is None:
                yield
            else:
                with self._peft.disable_adapter():
                    yield
            return
        if adapter not in self.adapters:
            raise APIError(404, f"the adapter {adapter!r} is not loaded", "NotFoundError")
        self._peft.set_adapter(adapter)
        yield

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingParams,
        *,
        adapter: str | None = None,
        seed: int | None = None,
        top_logprobs: Sequence[int] = (),
    ) -> list[SampledRow]:
        """Sample one completion per prompt; ``top_logprobs[i]`` alternatives for row i."""
        with self._adapter(adapter):
            policy = self.policy
            if seed is not None:
                policy.generator = torch.Generator(device=policy.device).manual_seed(seed)
            try:
                generations = policy.generate_ids(prompts, sampling)
            finally:
                policy.generator = self._generator
            rows = [SampledRow(generation) for generation in generations]
            for row, k in zip(rows, top_logprobs, strict=False):
                if k > 0:
                    row.top = self._top_logprobs(row.generation, sampling, k)
        return rows

    def _top_logprobs(
        self, generation: Generation, sampling: SamplingParams, k: int
    ) -> list[list[tuple[int, float]]]:
        """The k most likely tokens at each sampled position, under the sampled distribution."""
        ids = generation.prompt_token_ids + generation.token_ids
        n = len(generation.token_ids)
        with torch.no_grad():
            out = self.policy.model(
                input_ids=torch.tensor([ids], device=self.policy.device), logits_to_keep=n + 1
            )
        logits = out.logits[0, :-1].float()  # (n, V)
        dist = F.log_softmax(logits, -1) if sampling.greedy else warped_log_probs(logits, sampling)
        values, indices = dist.topk(min(k, dist.shape[-1]), dim=-1)  # (n, k)
        return [list(zip(indices[t].tolist(), values[t].tolist(), strict=True)) for t in range(n)]


# -- batching ------------------------------------------------------------------------------


@dataclass
class _Job:
    prompts: list[list[int]]
    sampling: SamplingParams
    adapter: str | None
    seed: int | None
    top_logprobs: int
    future: asyncio.Future[list[SampledRow]]
    rows: list[SampledRow] = field(default_factory=list)


class Batcher:
    """Collects concurrent requests and samples those that fit together in one call.

    Jobs that share the adapter and sampling settings (and carry no seed of
    their own) are concatenated, up to ``max_batch_size`` sequences a call;
    while one call runs, new requests queue up and form the next batch.
    """

    def __init__(self, engine: ModelEngine, executor: ThreadPoolExecutor, settings: ServerSettings):
        self.engine = engine
        self.executor = executor
        self.max_rows = settings.max_batch_size
        self.wait_s = settings.batch_wait_ms / 1000
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.batches = 0
        """Generate calls made so far (tests read it to see batching happen)."""

    async def submit(
        self,
        prompts: list[list[int]],
        sampling: SamplingParams,
        *,
        adapter: str | None,
        seed: int | None,
        top_logprobs: int,
    ) -> list[SampledRow]:
        future: asyncio.Future[list[SampledRow]] = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(prompts, sampling, adapter, seed, top_logprobs, future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            deadline = loop.time() + self.wait_s
            while sum(len(job.prompts) for job in jobs) < self.max_rows:
                try:
                    jobs.append(self.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            for group in _groups(jobs):
                await self._run_group(group)

    async def _run_group(self, jobs: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        first = jobs[0]
        rows = [(job, prompt) for job in jobs for prompt in job.prompts]
        try:
            for start in range(0, len(rows), self.max_rows):
                chunk = rows[start : start + self.max_rows]
                call = functools.partial(
                    self.engine.generate,
                    [prompt for _, prompt in chunk],
                    first.sampling,
                    adapter=first.adapter,
                    seed=first.seed,
                    top_logprobs=[job.top_logprobs for job, _ in chunk],
                )
                sampled = await loop.run_in_executor(self.executor, call)
                self.batches += 1
                for (job, _), row in zip(chunk, sampled, strict=True):
                    job.rows.append(row)
        except Exception as exc:  # one bad batch fails its requests, never the server
            if not isinstance(exc, APIError):
                logger.exception("generation failed")
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        for job in jobs:
            if not job.future.done():
                job.future.set_result(job.rows)


def _groups(jobs: list[_Job]) -> list[list[_Job]]:
    """Jobs that may share a generate call; a seeded job runs alone so its seed holds."""
    groups: dict[Any, list[_Job]] = {}
    for index, job in enumerate(jobs):
        key = (job.adapter, job.sampling) if job.seed is None else ("seeded", index)
        groups.setdefault(key, []).append(job)
    return list(groups.values())


# -- the application ----------------------------------------------------------------------------


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
    batcher = Batcher(engine, executor, settings)
    in_flight = 0
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

    def error(status: int, message: str, kind: str) -> JSONResponse:
        body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
        return JSONResponse(body, status_code=status)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return error(exc.status, exc.message, exc.kind)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("request %s %s failed", request.method, request.url.path)
        return error(500, f"the server failed on this request: {exc}", "InternalServerError")

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

    async def read(request: Request, model: type[_Body]) -> _Body:
        body = await _read_body(request, settings.max_request_bytes)
        try:
            return model.model_validate_json(body)
        except ValidationError as exc:
            raise APIError(400, _describe(exc)) from None

    @contextmanager
    def slot() -> Iterator[None]:
        nonlocal in_flight
        if in_flight >= settings.max_concurrency:
            raise APIError(
                429,
                f"{in_flight} requests are in flight, the server's limit; retry later or start "
                "the server with a higher --max-concurrency",
                "TooManyRequests",
            )
        in_flight += 1
        try:
            yield
        finally:
            in_flight -= 1

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

    def check_common(req: _Request, rows: int) -> None:
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
            return _completion_response(req, rows, engine)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> dict[str, Any]:
        with slot():
            req = await read(request, ChatCompletionRequest)
            adapter = resolve(req.model)
            if req.top_logprobs is not None and not req.logprobs:
                raise APIError(400, "top_logprobs needs logprobs: true")
            messages = [
                {"role": m.role, "content": message_text([p.model_dump() for p in m.content])}
                if isinstance(m.content, list)
                else {"role": m.role, "content": m.content or ""}
                for m in req.messages
            ]
            text = chat_prompt_text(messages, engine.tokenizer)
            prompt = list(engine.tokenizer(text, add_special_tokens=False)["input_ids"])
            max_tokens = req.max_completion_tokens or req.max_tokens or 16
            check_common(req, req.n)
            check_prompts([prompt], max_tokens)
            rows = await batcher.submit(
                [prompt] * req.n,
                req.sampling(max_tokens),
                adapter=adapter,
                seed=req.seed,
                top_logprobs=req.top_logprobs or 0,
            )
            return _chat_response(req, prompt, rows, engine)

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


def _describe(exc: ValidationError) -> str:
    """A validation error in one line: each wrong field and what is wrong with it."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "invalid request: " + "; ".join(parts)


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


def _token(engine: ModelEngine, token_id: int, as_id: bool) -> str:
    if as_id:
        return f"{TOKEN_ID_PREFIX}{token_id}"
    return str(engine.tokenizer.decode([token_id]))


def _completion_response(
    req: CompletionRequest, rows: list[SampledRow], engine: ModelEngine
) -> dict[str, Any]:
    as_id = req.return_tokens_as_token_ids
    choices = []
    for index, row in enumerate(rows):
        gen = row.generation
        choice: dict[str, Any] = {
            "index": index,
            "text": gen.text,
            "logprobs": None,
            "finish_reason": "stop" if gen.finished else "length",
            "stop_reason": None,
        }
        if req.logprobs is not None:
            tokens = [_token(engine, i, as_id) for i in gen.token_ids]
            offsets, at = [], 0
            for token_id in gen.token_ids:
                offsets.append(at)
                at += len(engine.tokenizer.decode([token_id], skip_special_tokens=True))
            top = None
            if req.logprobs > 0:
                top = [
                    {
                        **{_token(engine, i, as_id): lp for i, lp in alternatives},
                        tokens[t]: gen.logprobs[t],
                    }
                    for t, alternatives in enumerate(row.top or [])
                ]
            choice["logprobs"] = {
                "text_offset": offsets,
                "token_logprobs": list(gen.logprobs),
                "tokens": tokens,
                "top_logprobs": top,
            }
        if req.return_token_ids:
            choice["prompt_token_ids"] = list(gen.prompt_token_ids)
            choice["token_ids"] = list(gen.token_ids)
        choices.append(choice)
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": choices,
        "usage": _usage(rows),
    }


def _chat_response(
    req: ChatCompletionRequest, prompt: list[int], rows: list[SampledRow], engine: ModelEngine
) -> dict[str, Any]:
    as_id = req.return_tokens_as_token_ids

    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        token = _token(engine, token_id, as_id)
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    choices = []
    for index, row in enumerate(rows):
        gen = row.generation
        choice: dict[str, Any] = {
            "index": index,
            "message": {"role": "assistant", "content": gen.text},
            "logprobs": None,
            "finish_reason": "stop" if gen.finished else "length",
            "stop_reason": None,
        }
        if req.logprobs:
            content = []
            for t, (token_id, logprob) in enumerate(zip(gen.token_ids, gen.logprobs, strict=True)):
                alternatives = row.top[t] if row.top else []
                content.append(
                    {**entry(token_id, logprob), "top_logprobs": [entry(*a) for a in alternatives]}
                )
            choice["logprobs"] = {"content": content}
        if req.return_token_ids:
            choice["token_ids"] = list(gen.token_ids)
        choices.append(choice)
    answer: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": choices,
        "usage": _usage(rows),
    }
    if req.return_token_ids:
        answer["prompt_token_ids"] = prompt
    return answer


def _usage(rows: list[SampledRow]) -> dict[str, int]:
    prompt = sum(len(row.generation.prompt_token_ids) for row in rows)
    completion = sum(len(row.generation.token_ids) for row in rows)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


# -- running it ---------------------------------------------------------------------------------


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
) -> None:
    """Load ``model`` and serve it in the foreground until interrupted."""
    import uvicorn

    policy = LocalPolicy.from_pretrained(model)
    app = create_app(policy, served_model_name or str(model), settings, adapters=adapters)
    uvicorn.run(app, host=host, port=port, log_level="info")
