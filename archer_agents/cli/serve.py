"""`archer serve` and `archer deploy`: serve a model, and manage its adapter versions.

``archer serve MODEL`` runs the local transformers server (the default, for
CPUs and tests) or vLLM's server from its own environment
(``--backend vllm``); both answer the same OpenAI-compatible API. ``archer
deploy`` lists a registry's adapter versions and promotes or rolls them back
on a running server.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.table import Table

from archer_agents.cli.common import UserError, console, run_command

if TYPE_CHECKING:
    from archer_agents.policies.adapters import AdapterRegistry, Promotion

T = TypeVar("T")

deploy_app = typer.Typer(
    no_args_is_help=True, help="List, promote and roll back adapter versions on a server."
)

ApiKey = Annotated[
    str | None,
    typer.Option(envvar="ARCHER_API_KEY", help="API key clients must send (env ARCHER_API_KEY)."),
]


def _lora_modules(items: list[str]) -> dict[str, str]:
    modules = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--lora takes NAME=PATH, not {item!r}")
        if not (Path(path) / "adapter_config.json").is_file():
            raise UserError(f"--lora {item}: {path} is not an adapter directory")
        modules[name] = path
    return modules


def serve_command(
    model: Annotated[str, typer.Argument(help="Base model directory or hub id.")],
    backend: Annotated[str, typer.Option(help="local (transformers) or vllm.")] = "local",
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 exposes it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    served_model_name: Annotated[
        str | None, typer.Option(help="Name clients use for the base model (default: MODEL).")
    ] = None,
    lora: Annotated[
        list[str] | None, typer.Option(help="Adapter to load at start, NAME=PATH; repeatable.")
    ] = None,
    registry: Annotated[
        Path | None, typer.Option(help="Adapter registry whose active version to load.")
    ] = None,
    api_key: ApiKey = None,
    max_concurrency: Annotated[int, typer.Option(help="local: requests in flight.")] = 64,
    max_request_bytes: Annotated[int, typer.Option(help="local: largest body.")] = 1_000_000,
    seed: Annotated[int | None, typer.Option(help="local: sampling seed.")] = None,
    threads: Annotated[int, typer.Option(help="local: torch threads (0: torch's default).")] = 1,
    vllm_python: Annotated[
        str | None,
        typer.Option(envvar="ARCHER_VLLM_PYTHON", help="vllm: Python of vLLM's environment."),
    ] = None,
    dtype: Annotated[str, typer.Option(help="vllm: float32 on a CPU, auto on a GPU.")] = "auto",
    max_model_len: Annotated[int | None, typer.Option(help="vllm: context length.")] = None,
    max_lora_rank: Annotated[int, typer.Option(help="vllm: largest adapter rank.")] = 64,
    tool_call_parser: Annotated[
        str,
        typer.Option(
            help="vllm: --tool-call-parser for OpenAI tool_calls (hermes, llama3_json, ...); "
            "auto reads it from the model's chat template, none turns it off."
        ),
    ] = "auto",
) -> None:
    """Serve a model over an OpenAI-compatible API, with LoRA adapters loadable by name."""

    def run() -> None:
        modules = _lora_modules(lora or [])
        if registry is not None:
            from archer_agents.policies.adapters import AdapterRegistry

            store = AdapterRegistry(registry)
            active = store.active
            if active is None:
                raise UserError(f"{registry} has no active version; `archer deploy promote` one")
            modules[store.served_name(active)] = str(active.path)
        if backend == "local":
            from archer_agents.serving.local_server import ServerSettings, serve

            settings = ServerSettings(
                api_key=api_key,
                max_concurrency=max_concurrency,
                max_request_bytes=max_request_bytes,
                seed=seed,
            )
            console.print(f"local server for {model} on http://{host}:{port}")
            serve(
                model,
                host=host,
                port=port,
                served_model_name=served_model_name,
                adapters=dict(modules),
                settings=settings,
                threads=threads or None,
            )
        elif backend == "vllm":
            from archer_agents.serving.vllm_server import VLLMNotInstalled, VLLMSettings, serve_vllm

            settings_v = VLLMSettings(
                served_model_name=served_model_name,
                host=host,
                port=port,
                api_key=api_key,
                dtype=dtype,
                max_model_len=max_model_len,
                max_lora_rank=max_lora_rank,
                lora_modules=modules,
                tool_call_parser=None if tool_call_parser == "none" else tool_call_parser,
            )
            console.print(f"vLLM for {model} on http://{host}:{port}")
            try:
                serve_vllm(model, settings_v, python=vllm_python)
            except VLLMNotInstalled as exc:
                raise UserError(str(exc)) from None
        else:
            raise UserError(f"--backend must be local or vllm, not {backend!r}")

    run_command(run)


RegistryOption = Annotated[Path, typer.Option(help="Adapter registry directory.")]
ServerOption = Annotated[str, typer.Option(help="Server URL.")]


@deploy_app.command("list")
def deploy_list(
    registry: RegistryOption,
    server: Annotated[
        str | None, typer.Option(help="Server URL, to show what it has loaded.")
    ] = None,
    api_key: ApiKey = None,
) -> None:
    """List adapter versions: which is active, which the server has loaded."""

    def run() -> None:
        from archer_agents.policies.adapters import Deployment

        store = _open_registry(registry)
        loaded: set[str] = set()
        if server is not None:
            with Deployment(store, server, api_key=api_key) as deployment:
                loaded = set(_on_server(deployment.loaded))
        active = store.active
        table = Table(title=f"adapter versions in {registry}")
        for column in ("version", "served name", "created", "state", "metrics", "note"):
            table.add_column(column)
        for version in store.versions():
            name = store.served_name(version)
            state = []
            if active is not None and version.version == active.version:
                state.append("active")
            if name in loaded:
                state.append("loaded")
            table.add_row(
                version.version,
                name,
                version.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                ", ".join(state),
                ", ".join(f"{k}={v:g}" for k, v in version.metrics.items()),
                version.note or "",
            )
        console.print(table)

    run_command(run)


@deploy_app.command("promote")
def deploy_promote(
    version: Annotated[str, typer.Argument(help="Version to make active (v0003, v3 or 3).")],
    registry: RegistryOption,
    server: ServerOption = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    keep: Annotated[int, typer.Option(help="Earlier versions left loaded for rollback.")] = 1,
) -> None:
    """Load a version into the server and make it the active one; unload older ones."""

    def run() -> None:
        from archer_agents.policies.adapters import Deployment

        store = _open_registry(registry)
        with Deployment(store, server, api_key=api_key, keep=keep) as deployment:
            result = _on_server(lambda: deployment.promote(version))
        _report("promoted", result)

    run_command(run)


@deploy_app.command("rollback")
def deploy_rollback(
    registry: RegistryOption,
    server: ServerOption = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    keep: Annotated[int, typer.Option(help="Earlier versions left loaded for rollback.")] = 1,
) -> None:
    """Make the previously promoted version active again."""

    def run() -> None:
        from archer_agents.policies.adapters import Deployment

        store = _open_registry(registry)
        with Deployment(store, server, api_key=api_key, keep=keep) as deployment:
            result = _on_server(deployment.rollback)
        _report("rolled back to", result)

    run_command(run)


def _open_registry(path: Path) -> AdapterRegistry:
    from archer_agents.policies.adapters import AdapterRegistry

    if not path.is_dir():
        raise UserError(f"no adapter registry at {path}; save versions with AdapterRegistry.save")
    try:
        return AdapterRegistry(path)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _on_server(call: Callable[[], T]) -> T:
    """Run a deployment call, turning server and registry problems into one-line errors."""
    try:
        return call()
    except (ConnectionError, RuntimeError, KeyError, ValueError) as exc:
        raise UserError(str(exc).strip("'\"")) from None


def _report(action: str, result: Promotion) -> None:
    loaded = f" (loaded in {result.load_seconds:.2f}s)" if result.load_seconds else ""
    console.print(f"{action} [bold]{result.version.version}[/] as {result.served_name}{loaded}")
    if result.unloaded:
        console.print(f"unloaded {', '.join(result.unloaded)}")


def register(app: typer.Typer) -> None:
    """Add ``archer serve`` and the ``archer deploy`` group to ``app``."""
    app.command("serve")(serve_command)
    app.add_typer(deploy_app, name="deploy")
