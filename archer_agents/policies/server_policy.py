"""A `Policy` that samples from an OpenAI-compatible server: vLLM, or the local server.

Rollouts on a server are only useful for training if they carry exactly what
was sampled, so every request

- sends the prompt as token ids, ``[bos] + ids(render_prompt(observation))``,
  the same ids `LocalPolicy.prompt_ids` builds (a text prompt would be
  re-tokenized by the server, without bos for the embedded tokenizer);
- asks for ``logprobs=0`` (the sampled token's log-probability),
  ``return_tokens_as_token_ids`` and ``return_token_ids``, and reads the
  sampled ids and their log-probabilities back, the end-of-utterance token
  included.

The server must report the log-probabilities of the distribution it sampled
from: vLLM started with ``--logprobs-mode processed_logprobs`` (as
`vllm_server` does) or the local server.

Observations are sent in batches of ``batch_size`` prompts per request, with
up to ``max_concurrency`` requests in flight. The adapter is chosen by model
name: `route` switches new rollouts to another version. Given an adapter
``registry`` (`archer_agents.policies.adapters`) instead of a model name, the policy
follows the registry's active version: before each call it checks whether
``registry.json`` changed (one ``stat``) and, if so, reads the active version
again, so a promotion made anywhere (another process, ``archer deploy``) reaches
it on its next call. A call that meets a just-unloaded name (404) re-reads the
registry once and is retried under the new name. Every `Generation` names the
served model that sampled it. Gradients are always computed locally, so
`log_probs` is not available here.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from archer_agents.formats.prompts import render_prompt
from archer_agents.policies.adapters import AdapterRegistry
from archer_agents.policies.prompt_ids import prompt_token_ids
from archer_agents.policies.protocol import Generation, Prompt, SamplingParams, prompt_budget

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

TOKEN_ID_PREFIX = "token_id:"
"""How a token is written when ``return_tokens_as_token_ids`` is set (vLLM's form)."""
_RETRY_STATUS = (429, 502, 503, 504)


class ServerError(RuntimeError):
    """The server refused a request or answered in an unexpected shape."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status the server answered with (None when it never answered)."""


class ServerPolicy:
    """Samples utterances from ``model`` (a base model or adapter name) on a server at ``base_url``.

    ``tokenizer`` (an object, or a directory or hub id to load one from) must
    be the served model's: it builds the prompt ids and decodes the text.
    ``registry`` (an `AdapterRegistry` or its directory), given instead of
    ``model``, makes the policy follow the registry's active version; the
    tokenizer then defaults to the one saved with that version.
    ``context_length`` defaults to the ``max_model_len`` the server reports.
    """

    thread_safe = True
    """Callers may sample from several threads at once (the server batches them)."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        tokenizer: PreTrainedTokenizerBase | str | Path | None = None,
        *,
        registry: AdapterRegistry | str | Path | None = None,
        api_key: str | None = None,
        batch_size: int = 16,
        max_concurrency: int = 8,
        timeout: float = 300.0,
        retries: int = 3,
        context_length: int | None = None,
    ) -> None:
        if batch_size < 1 or max_concurrency < 1:
            raise ValueError(
                f"batch_size ({batch_size}) and max_concurrency ({max_concurrency}) must be at "
                "least 1"
            )
        self.registry: AdapterRegistry | None = None
        """The registry whose active version this policy follows (None: a fixed model)."""
        self._stamp: tuple[int, int, int] | None = None
        self._route_lock = threading.Lock()
        if registry is not None:
            if model is not None:
                raise ValueError(
                    f"model={model!r} and registry were both given, but a policy that follows a "
                    "registry always samples from its active version; pass one of them"
                )
            if not isinstance(registry, AdapterRegistry):
                registry = AdapterRegistry.open(registry)
            self.registry = registry
            self._stamp = _stamp(self.registry.state_path)
            active = self.registry.active
            if active is None:
                raise ValueError(
                    f"the adapter registry {self.registry.root} has no active version to follow; "
                    f"promote one: archer deploy promote VERSION --registry {self.registry.root}"
                )
            model = self.registry.served_name(active)
            tokenizer = active.path if tokenizer is None else tokenizer
        if model is None or tokenizer is None:
            raise ValueError(
                "a ServerPolicy needs the served model's name and its tokenizer (a directory or "
                "hub id), e.g. ServerPolicy(url, 'tiny', 'runs/model'), or registry=DIR to follow "
                "an adapter registry's active version"
            )
        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
        if tokenizer.eos_token_id is None:
            raise ValueError(
                "the tokenizer has no eos token, so an utterance could never end; pass the "
                "served model's tokenizer"
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.version = model
        self.tokenizer = tokenizer
        self.eos_id: int = tokenizer.eos_token_id
        self.bos_id: int | None = tokenizer.bos_token_id
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.retries = retries
        self._context_length = context_length
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_concurrency),
        )

    # -- routing ---------------------------------------------------------------------
    def route(self, model: str) -> None:
        """Send new rollouts to ``model`` (an adapter version's served name, or the base)."""
        logger.info("routing rollouts from %s to %s", self.model, model)
        self.model = model
        self.version = model

    def current_model(self, *, refresh: bool = False) -> str:
        """The name the next call sends: a followed registry's active version, re-read if changed.

        The registry is read again only when ``registry.json`` changed since the
        last read (or with ``refresh``); otherwise this costs one ``stat``.
        """
        if self.registry is None:
            return self.model
        stamp = _stamp(self.registry.state_path)
        with self._route_lock:
            if refresh or stamp != self._stamp:
                self._stamp = stamp
                history = self.registry.history
                if history:
                    name = self.registry.served_name(history[-1])
                    if name != self.model:
                        self.route(name)
            return self.model

    @property
    def context_length(self) -> int:
        """Most tokens (prompt plus utterance): as given, else the server's max_model_len."""
        if self._context_length is None:
            models = self._request("GET", "/v1/models")["data"]
            lengths = [m.get("max_model_len") for m in models if m.get("max_model_len")]
            self._context_length = int(lengths[0]) if lengths else 2048
        return self._context_length

    # -- prompts -------------------------------------------------------------------------
    def prompt_ids(self, observation: Prompt, max_tokens: int | None = None) -> list[int]:
        """The ids sent to the server: those `LocalPolicy.prompt_ids` gives for the tokenizer."""
        return prompt_token_ids(observation, self._encode, self.bos_id, max_tokens)[0]

    def _encode(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(render_prompt(text), add_special_tokens=False)["input_ids"]
        return ids

    # -- sampling -------------------------------------------------------------------------
    def generate(
        self, observations: Sequence[Prompt], sampling: SamplingParams | None = None
    ) -> list[Generation]:
        """Sample one utterance per observation: batched requests, several in flight."""
        sampling = sampling or SamplingParams()
        if not observations:
            return []
        budget = prompt_budget(self.context_length, sampling)
        prompts = [self.prompt_ids(obs, budget) for obs in observations]
        model = self.current_model()
        try:
            return self._sample(prompts, sampling, model)
        except ServerError as exc:
            if exc.status != 404 or self.registry is None:
                raise
            # A promotion may have unloaded ``model`` between the registry check and the call.
            fresh = self.current_model(refresh=True)
            if fresh == model:
                raise ServerError(
                    f"{exc}; {model} is the active version of {self.registry.root} but the server "
                    "does not have it loaded: load it again with `archer deploy promote "
                    f"{self.registry.version_of(model)} --registry {self.registry.root}`",
                    exc.status,
                ) from exc
            logger.info("%s was unloaded from the server; retrying with %s", model, fresh)
            return self._sample(prompts, sampling, fresh)

    def _sample(
        self, prompts: list[list[int]], sampling: SamplingParams, model: str
    ) -> list[Generation]:
        chunks = [
            prompts[start : start + self.batch_size]
            for start in range(0, len(prompts), self.batch_size)
        ]
        if len(chunks) == 1:
            return self._complete(chunks[0], sampling, model)
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(chunks))) as pool:
            results = list(pool.map(lambda chunk: self._complete(chunk, sampling, model), chunks))
        return [generation for result in results for generation in result]

    def _complete(
        self, prompts: list[list[int]], sampling: SamplingParams, model: str
    ) -> list[Generation]:
        body: dict[str, Any] = {
            "model": model,
            "prompt": prompts,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "logprobs": 0,
            "return_tokens_as_token_ids": True,
            "return_token_ids": True,
        }
        if sampling.top_k:
            body["top_k"] = sampling.top_k
        answer = self._request("POST", "/v1/completions", body)
        choices = sorted(answer.get("choices", []), key=lambda choice: choice["index"])
        if len(choices) != len(prompts):
            raise ServerError(
                f"sent {len(prompts)} prompts to {self.base_url} but got {len(choices)} choices"
            )
        pairs = zip(prompts, choices, strict=True)
        return [self._generation(prompt, choice, model) for prompt, choice in pairs]

    def _generation(self, prompt: list[int], choice: dict[str, Any], model: str) -> Generation:
        logprobs = choice.get("logprobs") or {}
        token_logprobs = logprobs.get("token_logprobs")
        ids = choice.get("token_ids")
        if ids is None and logprobs.get("tokens") is not None:
            ids = [_token_id(token) for token in logprobs["tokens"]]
        if ids is None or token_logprobs is None or len(ids) != len(token_logprobs):
            raise ServerError(
                f"the server at {self.base_url} returned no sampled token ids with their "
                "logprobs; it must support logprobs and return_tokens_as_token_ids (vLLM or "
                "archer's local server)"
            )
        if None in token_logprobs:
            raise ServerError("the server left a sampled token without its logprob")
        finished = choice.get("finish_reason") == "stop"
        text_ids = ids[:-1] if finished and ids and ids[-1] == self.eos_id else ids
        return Generation(
            text=str(self.tokenizer.decode(text_ids, skip_special_tokens=True)),
            token_ids=[int(i) for i in ids],
            logprobs=[float(lp) for lp in token_logprobs],
            prompt_token_ids=list(choice.get("prompt_token_ids") or prompt),
            finished=finished,
            policy_version=model,
        )

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One call, retried with back-off on connection errors, 429 and 5xx gateway errors."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self.client.request(method, path, json=body)
            except httpx.TransportError as exc:
                if last:
                    raise ServerError(
                        f"cannot reach the server at {self.base_url} ({exc}); is it running? "
                        "Start one with `archer serve`"
                    ) from exc
            else:
                if response.status_code < 400:
                    return response.json()
                if response.status_code not in _RETRY_STATUS or last:
                    raise ServerError(
                        f"{method} {path} on {self.base_url} failed with "
                        f"{response.status_code}: {_message(response)}",
                        response.status_code,
                    )
            time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    # -- scoring ----------------------------------------------------------------------------
    def log_probs(
        self, observations: Sequence[Prompt], action_token_ids: Sequence[Sequence[int]]
    ) -> list[torch.Tensor]:
        raise NotImplementedError(
            "a ServerPolicy only samples: gradients are computed locally. Score the sampled "
            "token ids with LocalPolicy.log_probs on the weights being trained (the ids and "
            "sampling-time logprobs come back with every Generation)"
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> ServerPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is replaced or rewritten: inode, mtime, size (None: missing)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _token_id(token: str) -> int:
    if not token.startswith(TOKEN_ID_PREFIX):
        raise ServerError(
            f"token {token!r} is not in the token_id:<id> form; the server ignored "
            "return_tokens_as_token_ids"
        )
    return int(token[len(TOKEN_ID_PREFIX) :])


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        if "message" in body:
            return str(body["message"])
    return response.text[:500]
