"""The served model, its LoRA adapters, and the batching of concurrent requests.

`ModelEngine` owns a base model and any number of named PEFT adapters, and
samples with `LocalPolicy.generate_ids` under the adapter a request names.
`Batcher` gathers requests that arrive together into one generate call. The
engine is driven from one worker thread, so an adapter load never races a
generation.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from archer_agents.policies.decoding import warped_log_probs
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import Generation, SamplingParams
from archer_agents.serving.openai_protocol import APIError

logger = logging.getLogger(__name__)


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
        try:
            is_adapter = (directory / "adapter_config.json").is_file()
        except (OSError, ValueError):  # a path the OS refuses (too long, NUL byte)
            is_adapter = False
        if not is_adapter:
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
    their own) are concatenated, up to ``max_rows`` sequences a call;
    while one call runs, new requests queue up and form the next batch.
    """

    def __init__(
        self, engine: ModelEngine, executor: ThreadPoolExecutor, max_rows: int, wait_s: float
    ) -> None:
        self.engine = engine
        self.executor = executor
        self.max_rows = max_rows
        self.wait_s = wait_s
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.batches = 0
        """Generate calls made so far (tests read it to see batching happen)."""
        self.gathered = 0
        """Requests taken off the queue into a closed batch so far (tests wait on it)."""

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
            self.gathered += len(jobs)
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
            # Each request re-raises it; the server's error boundary logs it once.
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
