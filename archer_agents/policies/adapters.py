"""Adapter versions: a registry on disk, and their deployment to a running server.

Online training improves a LoRA adapter while a server keeps producing
rollouts. Each adapter worth serving is saved as a new numbered version
(``v0001``, ``v0002``, ...) in a registry directory; deploying a version loads
it into the running server under a versioned name (``archer-v0002``), routes
new rollouts to it and unloads older versions. Names are never reused, so a
rollout's ``policy_version`` always names the weights that produced it, and a
request can never reach half-replaced weights.

Layout of a registry::

    <root>/registry.json        {"name": ..., "history": ["v0001", "v0003"]}
    <root>/versions/v0001/      adapter files (LocalPolicy.save) + version.json

``history`` is the stack of promotions; its top is the active version.
`Deployment.rollback` pops it, so repeated rollbacks walk back in time. Writes
are atomic (a version directory appears whole, registry.json is replaced), so a
crash never leaves a half-written version behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from archer_agents.policies.local_policy import LocalPolicy
    from archer_agents.policies.server_policy import ServerPolicy

logger = logging.getLogger(__name__)

_VERSION = re.compile(r"^v?0*(\d+)$")


class AdapterVersion(BaseModel):
    """One saved adapter: its number, where it lies and what is known about it."""

    model_config = ConfigDict(extra="forbid")

    version: str
    """``v`` and four or more digits, e.g. ``v0003``."""
    path: Path
    """The adapter directory, loadable by LocalPolicy.from_pretrained and vLLM."""
    created_at: datetime
    base_model: str | None = None
    """The base model the adapter was trained on, as its config records it."""
    note: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    """Evaluation figures recorded with the version (success rate, return, step)."""

    @property
    def number(self) -> int:
        return _number(self.version)


def _number(version: str) -> int:
    match = _VERSION.match(version.strip())
    if match is None:
        raise ValueError(f"{version!r} is not a version: use v0003, v3 or 3")
    return int(match.group(1))


def _version(number: int) -> str:
    return f"v{number:04d}"


class AdapterRegistry:
    """Numbered adapter versions under ``root``; ``name`` prefixes their served names."""

    def __init__(self, root: str | Path, name: str = "archer") -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(
                f"registry name {name!r} must be letters, digits, '.', '_' or '-' (it prefixes "
                "the adapters' served names)"
            )
        self.root = Path(root)
        self.name = name
        self.versions_dir = self.root / "versions"
        state = self._state()
        if state.get("name", name) != name:
            raise ValueError(
                f"{self.root} is the registry {state['name']!r}, not {name!r}; open it with "
                f"name={state['name']!r}"
            )

    @classmethod
    def open(cls, root: str | Path) -> AdapterRegistry:
        """The registry at ``root`` under the name it was created with (``archer`` if new)."""
        path = Path(root) / "registry.json"
        name = json.loads(path.read_text()).get("name", "archer") if path.is_file() else "archer"
        return cls(root, name=name)

    @property
    def state_path(self) -> Path:
        """``registry.json``: replaced whole on every promotion or rollback."""
        return self.root / "registry.json"

    # -- reading ----------------------------------------------------------------------
    def versions(self) -> list[AdapterVersion]:
        """Every saved version, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        found = []
        for directory in self.versions_dir.iterdir():
            meta = directory / "version.json"
            if directory.is_dir() and _VERSION.match(directory.name) and meta.is_file():
                data = json.loads(meta.read_text())
                found.append(AdapterVersion(**{**data, "path": directory}))
        return sorted(found, key=lambda v: v.number)

    def get(self, version: str) -> AdapterVersion:
        """A version by name (``v0003``, ``v3`` or ``3``)."""
        wanted = _number(version)
        for candidate in self.versions():
            if candidate.number == wanted:
                return candidate
        known = ", ".join(v.version for v in self.versions()) or "none yet"
        raise KeyError(f"no adapter version {version!r} in {self.root} (versions: {known})")

    def served_name(self, version: str | AdapterVersion) -> str:
        """The model name a server knows the version by, e.g. ``archer-v0003``."""
        label = version.version if isinstance(version, AdapterVersion) else version
        return f"{self.name}-{_version(_number(label))}"

    def version_of(self, served_name: str) -> str | None:
        """The version behind a served name of this registry, None for other names."""
        prefix = f"{self.name}-"
        if not served_name.startswith(prefix):
            return None
        try:
            return _version(_number(served_name[len(prefix) :]))
        except ValueError:
            return None

    @property
    def history(self) -> list[str]:
        """Promoted versions, oldest first; the last is active."""
        return list(self._state().get("history", []))

    @property
    def active(self) -> AdapterVersion | None:
        history = self.history
        return self.get(history[-1]) if history else None

    # -- writing --------------------------------------------------------------------------
    def save(
        self,
        policy: LocalPolicy,
        *,
        note: str | None = None,
        metrics: dict[str, float] | None = None,
    ) -> AdapterVersion:
        """Save ``policy``'s LoRA adapter as the next version (not yet active)."""
        from peft import PeftModel

        if not isinstance(policy.model, PeftModel):
            raise ValueError(
                "the policy has no LoRA adapter, so there is no adapter version to save; "
                "train with LocalPolicy.from_pretrained(..., lora=LoraSettings()) or save the "
                "full model with policy.save(path)"
            )
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.versions_dir))
        try:
            policy.save(staging)
            config = json.loads((staging / "adapter_config.json").read_text())
            for _ in range(1000):  # another writer may claim a number first
                number = max((v.number for v in self.versions()), default=0) + 1
                record = AdapterVersion(
                    version=_version(number),
                    path=self.versions_dir / _version(number),
                    created_at=datetime.now(timezone.utc),
                    base_model=config.get("base_model_name_or_path"),
                    note=note,
                    metrics=dict(metrics or {}),
                )
                (staging / "version.json").write_text(
                    record.model_dump_json(exclude={"path"}, indent=2)
                )
                try:
                    staging.rename(record.path)
                except OSError:
                    if record.path.exists():
                        continue
                    raise
                logger.info("saved adapter version %s in %s", record.version, record.path)
                return record
            raise RuntimeError(f"could not claim a version number in {self.versions_dir}")
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def set_active(self, version: str) -> AdapterVersion:
        """Push ``version`` on the promotion history (it becomes active)."""
        record = self.get(version)
        state = self._state()
        history = [*state.get("history", []), record.version]
        self._write_state({**state, "history": history})
        return record

    def pop_active(self) -> AdapterVersion:
        """Drop the active version from the history; the one before becomes active."""
        state = self._state()
        history = list(state.get("history", []))
        if len(history) < 2:
            raise ValueError(
                "there is no earlier promoted version to roll back to "
                f"(history: {history or 'empty'}); promote a version instead"
            )
        history.pop()
        self._write_state({**state, "history": history})
        return self.get(history[-1])

    def _state(self) -> dict[str, Any]:
        path = self.state_path
        if not path.is_file():
            return {}
        return dict(json.loads(path.read_text()))

    def _write_state(self, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        state = {**state, "name": self.name}
        fd, tmp = tempfile.mkstemp(prefix=".registry-", dir=self.root)
        with os.fdopen(fd, "w") as handle:
            json.dump(state, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.state_path)


@dataclass
class Promotion:
    """What a promotion or rollback did."""

    version: AdapterVersion
    served_name: str
    load_seconds: float
    """Time to load the adapter into the server (0 when it was already loaded)."""
    unloaded: list[str] = field(default_factory=list)
    """Served names taken off the server."""


class Deployment:
    """Registry versions on a running OpenAI-compatible server (vLLM or the local server).

    ``keep`` earlier versions stay loaded next to the active one, so that a
    rollback needs no load; older ones are unloaded.
    """

    def __init__(
        self,
        registry: AdapterRegistry,
        base_url: str,
        *,
        api_key: str | None = None,
        keep: int = 1,
        timeout: float = 120.0,
    ) -> None:
        if keep < 0:
            raise ValueError(f"keep must be 0 or more (earlier versions left loaded), not {keep}")
        self.registry = registry
        self.keep = keep
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def base_model(self) -> str:
        """The server's name for its base model: the first listed that is no version here."""
        data = self._call("GET", "/v1/models")["data"]
        names = [m["id"] for m in data if self.registry.version_of(m["id"]) is None]
        if not names:
            raise RuntimeError(f"the server at {self.client.base_url} lists no base model")
        return str(names[0])

    def loaded(self) -> list[str]:
        """Served names of this registry's versions that the server has loaded."""
        data = self._call("GET", "/v1/models")["data"]
        return [m["id"] for m in data if self.registry.version_of(m["id"]) is not None]

    def load(self, version: str) -> tuple[str, float]:
        """Load a version under its served name (no-op if loaded); the name and seconds taken."""
        record = self.registry.get(version)
        name = self.registry.served_name(record)
        if name in self.loaded():
            return name, 0.0
        started = time.perf_counter()
        self._call(
            "POST",
            "/v1/load_lora_adapter",
            {"lora_name": name, "lora_path": str(record.path.resolve())},
        )
        seconds = time.perf_counter() - started
        logger.info("loaded %s into the server in %.3fs", name, seconds)
        return name, seconds

    def unload(self, served_name: str) -> None:
        self._call("POST", "/v1/unload_lora_adapter", {"lora_name": served_name})
        logger.info("unloaded %s from the server", served_name)

    def promote(self, version: str, policies: Sequence[ServerPolicy] = ()) -> Promotion:
        """Load ``version``, make it active, route ``policies`` to it, unload old versions.

        Promoting the version that is already active loads it if the server lost
        it (a restart) and routes ``policies``, without a second history entry.
        """
        name, seconds = self.load(version)
        history = self.registry.history
        record = self.registry.get(version)
        if not history or history[-1] != record.version:
            record = self.registry.set_active(version)
        return self._finish(record, name, seconds, policies)

    def rollback(self, policies: Sequence[ServerPolicy] = ()) -> Promotion:
        """Make the previously promoted version active again (loading it if it was unloaded)."""
        history = self.registry.history
        if len(history) < 2:
            raise ValueError(
                f"there is no earlier promoted version to roll back to (history: "
                f"{history or 'empty'}); promote a version instead"
            )
        name, seconds = self.load(history[-2])
        record = self.registry.pop_active()
        return self._finish(record, name, seconds, policies)

    def _finish(
        self,
        record: AdapterVersion,
        name: str,
        seconds: float,
        policies: Sequence[ServerPolicy],
    ) -> Promotion:
        for policy in policies:
            policy.route(name)
        history = self.registry.history
        wanted = {self.registry.served_name(v) for v in history[-(self.keep + 1) :]}
        unloaded = []
        for loaded in self.loaded():
            if loaded not in wanted:
                self.unload(loaded)
                unloaded.append(loaded)
        return Promotion(record, name, seconds, unloaded)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self.client.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise ConnectionError(
                f"cannot reach the server at {self.client.base_url} ({exc}); start it with "
                "`archer serve` or pass the right --server"
            ) from exc
        if response.status_code >= 400:
            raise RuntimeError(
                f"{method} {path} failed with {response.status_code}: {response.text[:500]}"
            )
        content_type = response.headers.get("content-type", "")
        return response.json() if "json" in content_type else response.text

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
