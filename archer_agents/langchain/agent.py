"""The trained agent in one line: a LangChain runnable from a policy directory or a server.

`load_chat_model` builds an `ArcherChatModel` from wherever the policy lives;
`load_agent` puts it in LangChain's standard agent loop
(`langchain.agents.create_agent`) with the given tools. The result is a
LangGraph `Runnable`: ``invoke``, ``batch``, ``stream`` and their async forms,
composable with LCEL, taking and returning ``{"messages": [...]}``::

    agent = load_agent("runs/bc/policy", tools=[make_twenty_questions_tool("dog")])
    agent.invoke({"messages": [("user", "Find the secret object.")]})

A source is one of:

- a policy directory written by `LocalPolicy.save` (``archer bc --out``, the
  trainers' saved policies, a LoRA adapter directory with its base recorded),
  a training run directory (``archer train --out``: the policy saved inside
  it), or a hub id of an open model (`archer_agents.policies.loading`, the
  loader the command line uses too);
- the URL of an OpenAI-compatible server (``http://127.0.0.1:8000``, with or
  without the ``/v1`` suffix OpenAI clients use), with
  ``model=`` naming the served model or adapter version and ``tokenizer=`` the
  served model's tokenizer (`archer_agents.policies.server_policy.ServerPolicy`); or
  with ``registry=`` an adapter registry directory, whose active version the
  agent then follows: a version promoted later, by any process, answers the
  agent's next call (the tokenizer defaults to the one saved with the version);
- a `Policy` object already built.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool

from archer_agents.langchain.chat_model import ArcherChatModel
from archer_agents.policies.protocol import Policy, SamplingParams

logger = logging.getLogger(__name__)

SERVE_PIP = "pip install 'archer-agents[serve]'"


def load_policy(
    source: str | Path | Policy,
    *,
    model: str | None = None,
    tokenizer: str | Path | None = None,
    api_key: str | None = None,
    registry: str | Path | None = None,
) -> Policy:
    """The `Policy` a source names (see the module docstring).

    ``model``, ``tokenizer`` (the served model's: a directory or hub id),
    ``api_key`` and ``registry`` (an adapter registry to follow) apply to a
    server URL only.
    """
    server_only = {
        "model": model,
        "tokenizer": tokenizer,
        "api_key": api_key,
        "registry": registry,
    }
    text = str(source)
    if isinstance(source, str) and text.startswith(("http://", "https://")):
        return _server_policy(text, model, tokenizer, api_key, registry)
    given = sorted(name for name, value in server_only.items() if value is not None)
    if given:
        raise ValueError(
            f"{', '.join(given)} only apply to a server URL (the served model, its tokenizer, "
            f"its key), not to {text!r}; drop them or pass the server's URL"
        )
    if isinstance(source, Policy):
        return source
    from archer_agents.policies.loading import load_policy as load_saved_policy

    return load_saved_policy(source)


def load_chat_model(
    source: str | Path | Policy,
    *,
    model: str | None = None,
    tokenizer: str | Path | None = None,
    api_key: str | None = None,
    registry: str | Path | None = None,
    sampling: SamplingParams | None = None,
    critic: Any = None,
    num_candidates: int = 1,
) -> ArcherChatModel:
    """An `ArcherChatModel` over the policy at ``source``.

    Args:
        source: a policy directory, a hub id, a server URL or a `Policy`.
        model: the served model or adapter version (server URLs only).
        tokenizer: the served model's tokenizer, a directory or hub id (server URLs only).
        api_key: the server's API key, if it wants one (server URLs only).
        registry: an adapter registry directory whose active version to follow,
            instead of ``model`` (server URLs only).
        sampling: how utterances are sampled (default: the chat model's).
        critic: a `DoubleCritic` ranking ``num_candidates`` candidates per call.
        num_candidates: candidates sampled per call when a critic is given.
    """
    policy = load_policy(
        source, model=model, tokenizer=tokenizer, api_key=api_key, registry=registry
    )
    settings: dict[str, Any] = {"critic": critic, "num_candidates": num_candidates}
    if sampling is not None:
        settings["sampling"] = sampling
    return ArcherChatModel(policy=policy, model_name=model or "archer", **settings)


def load_agent(
    source: str | Path | Policy,
    tools: Sequence[BaseTool | Callable[..., Any]] = (),
    *,
    system_prompt: str | None = None,
    model: str | None = None,
    tokenizer: str | Path | None = None,
    api_key: str | None = None,
    registry: str | Path | None = None,
    sampling: SamplingParams | None = None,
    critic: Any = None,
    num_candidates: int = 1,
    callbacks: Sequence[BaseCallbackHandler] = (),
) -> Runnable[Any, Any]:
    """The trained agent as a runnable LangChain agent over ``tools``.

    ``callbacks`` (e.g. an `EpisodeRecorder`) are attached to every run.
    Other arguments are `load_chat_model`'s.
    """
    from langchain.agents import create_agent

    chat_model = load_chat_model(
        source,
        model=model,
        tokenizer=tokenizer,
        api_key=api_key,
        registry=registry,
        sampling=sampling,
        critic=critic,
        num_candidates=num_candidates,
    )
    agent: Runnable[Any, Any] = create_agent(
        chat_model, list(tools), system_prompt=system_prompt, name="archer_agent"
    )
    if callbacks:
        agent = agent.with_config(callbacks=list(callbacks))
    return agent


def _server_policy(
    url: str,
    model: str | None,
    tokenizer: str | Path | None,
    api_key: str | None,
    registry: str | Path | None,
) -> Policy:
    if registry is not None:
        if model is not None:
            raise ValueError(
                f"model={model!r} and registry were both given; an agent following a registry "
                "always uses its active version: pass one of them"
            )
        if not Path(registry).is_dir():
            raise FileNotFoundError(
                f"no adapter registry at {registry}; save versions with AdapterRegistry.save "
                "(or `archer train --server URL --registry DIR`)"
            )
    elif model is None or tokenizer is None:
        raise ValueError(
            f"a server URL needs the served model (or adapter version) and its tokenizer: "
            f"load_agent({url!r}, model='<name from /v1/models>', tokenizer='<model directory>'), "
            "or registry='<adapter registry>' to follow its active version"
        )
    try:
        from archer_agents.policies.server_policy import ServerPolicy
    except ImportError as exc:
        raise ImportError(f"a server URL needs httpx and the serving layer: {SERVE_PIP}") from exc
    root = url.rstrip("/").removesuffix("/v1")  # ServerPolicy adds the /v1 paths itself
    policy: Policy = ServerPolicy(root, model, tokenizer, api_key=api_key, registry=registry)
    return policy
