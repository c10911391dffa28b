"""Play many environments at once and log every episode.

The collector keeps ``num_envs`` environments running side by side. Each turn,
the observations of every running episode go to the actor together, so a
language-model policy does one batched generation per turn, not one per
environment. Finished episodes are written to the episode log as soon as they
end (one fsynced JSONL line each) and a fresh episode starts in their slot.

Actors:
- `PolicyActor`: a `Policy` (local model or server); sampled token ids and
  log-probabilities travel with each transition for token-faithful training.
- `ScriptedActor`: the environment's own scripted agents (expert, weak, random).
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym

from archer_agents.data.episode_log import EpisodeWriter
from archer_agents.data.schema import Episode, Transition
from archer_agents.environments.base import TextEnv
from archer_agents.policies.protocol import Generation, Policy, SamplingParams

logger = logging.getLogger(__name__)


class Actor(Protocol):
    """Chooses the next utterance for several running episodes at once."""

    def begin(self, slot: int, env: TextEnv, observation: str, info: dict[str, Any]) -> None:
        """A new episode starts in ``slot``."""
        ...

    def act(self, slots: Sequence[int], observations: Sequence[str]) -> list[Generation]:
        """One utterance per slot, in order."""
        ...


class PolicyActor:
    """Acts by sampling from a policy, one batched call per turn."""

    def __init__(self, policy: Policy, sampling: SamplingParams | None = None) -> None:
        self.policy = policy
        self.sampling = sampling or SamplingParams()

    def begin(self, slot: int, env: TextEnv, observation: str, info: dict[str, Any]) -> None:
        return None

    def act(self, slots: Sequence[int], observations: Sequence[str]) -> list[Generation]:
        return self.policy.generate(list(observations), self.sampling)


class ScriptedActor:
    """Acts with the environment's scripted agent of one kind (one agent per slot)."""

    def __init__(self, kind: str, seed: int = 0) -> None:
        self.kind = kind
        self.seed = seed
        self._agents: dict[int, Any] = {}
        self._episodes = 0

    def begin(self, slot: int, env: TextEnv, observation: str, info: dict[str, Any]) -> None:
        agent = self._agents.get(slot)
        if agent is None:
            agent = env.make_scripted_agent(self.kind, seed=self.seed + slot)
            self._agents[slot] = agent
        agent.reset(observation, info)
        self._episodes += 1

    def act(self, slots: Sequence[int], observations: Sequence[str]) -> list[Generation]:
        return [
            Generation(text=self._agents[slot].act(obs), token_ids=[], logprobs=[])
            for slot, obs in zip(slots, observations, strict=True)
        ]


@dataclass
class _Slot:
    env: gym.Env[str, str]
    episode: Episode | None = None
    observation: str = ""
    last_info: dict[str, Any] = field(default_factory=dict)


@dataclass
class CollectResult:
    episodes: list[Episode]
    seconds: float
    generated_tokens: int

    @property
    def episodes_per_second(self) -> float:
        return len(self.episodes) / self.seconds if self.seconds else float("inf")

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds else float("inf")


EnvFactory = Callable[[], gym.Env[str, str]]


def make_env_factory(env_id: str, **env_kwargs: Any) -> EnvFactory:
    """A factory for a registered id, or ``module:id`` (the module is imported first).

    The ``module:id`` form is Gymnasium's: importing ``module`` registers ``id``
    (`archer_agents.environments.register_tool_env` in a module of your own), so
    an environment of yours works wherever an archer id does. An unknown id
    raises with the registered ids; a module that fails to import raises with
    one line naming it. ``env_kwargs`` go to the environment's constructor.
    """
    import archer_agents.environments  # noqa: F401  (registers the archer ids)

    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except Exception as exc:  # any failure of the user's module is reported the same way
            reason = str(exc).splitlines()[0] if str(exc) else ""
            raise ValueError(
                f"cannot import module {module!r} named in {env_id!r}: {type(exc).__name__}"
                f"{': ' + reason if reason else ''}; make it importable (pip install it, or "
                "put its folder on PYTHONPATH)"
            ) from exc
    if name not in gym.registry:
        known = ", ".join(sorted(i for i in gym.registry if i.startswith("archer/")))
        where = (
            f"importing {module!r} did not register {name!r}"
            if module
            else f"unknown environment {env_id!r}"
        )
        raise ValueError(
            f"{where}; registered archer ids: {known}; an environment of your own is "
            "'your_module:your/Env-v0' (the module registers it on import)"
        )
    return functools.partial(gym.make, name, **env_kwargs)


def split_task_ids(env_factory: EnvFactory, split: str) -> list[str]:
    """Every task id of ``split``, in the environment's order (for evaluations that sweep it)."""
    probe = env_factory()
    try:
        return list(probe.unwrapped.task_ids(split))  # type: ignore[attr-defined]
    finally:
        probe.close()


def collect(
    env_factory: EnvFactory,
    actor: Actor,
    num_episodes: int,
    *,
    num_envs: int = 16,
    split: str = "train",
    task_ids: Sequence[str] | None = None,
    seed: int = 0,
    writer: EpisodeWriter | None = None,
    policy_version: str | None = None,
    env_id: str | None = None,
    on_episode: Callable[[Episode], None] | None = None,
) -> CollectResult:
    """Play ``num_episodes`` episodes with ``num_envs`` environments side by side.

    Episode ``k`` is reset with ``seed + k``; with ``task_ids`` it plays
    ``task_ids[k % len(task_ids)]`` (so an evaluation can sweep a whole split),
    otherwise a task drawn from the split by that seed. ``policy_version`` is
    recorded on transitions whose generation does not name its own weights (a
    `ServerPolicy` names the served adapter that sampled each one).
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be at least 1, got {num_episodes}")
    num_envs = max(1, min(num_envs, num_episodes))
    slots = [_Slot(env=env_factory()) for _ in range(num_envs)]
    name = env_id or _env_name(slots[0].env)
    episodes: list[Episode] = []
    started = 0
    generated_tokens = 0
    start_time = time.perf_counter()

    def start(index: int) -> None:
        nonlocal started
        slot = slots[index]
        options: dict[str, Any] = {"split": split}
        if task_ids:
            options["task_id"] = task_ids[started % len(task_ids)]
        episode_seed = seed + started
        observation, info = slot.env.reset(seed=episode_seed, options=options)
        slot.episode = Episode(
            env_id=name,
            task_id=str(info.get("task_id")) if info.get("task_id") is not None else None,
            seed=episode_seed,
            source="environment",
            metadata={"split": split},
        )
        slot.observation = observation
        actor.begin(index, slot.env.unwrapped, observation, info)  # type: ignore[arg-type]
        started += 1

    for index in range(num_envs):
        start(index)
    running = list(range(num_envs))
    while running:
        generations = actor.act(running, [slots[i].observation for i in running])
        still_running = []
        for index, generation in zip(running, generations, strict=True):
            slot = slots[index]
            assert slot.episode is not None
            next_observation, reward, terminated, truncated, info = slot.env.step(generation.text)
            generated_tokens += len(generation.token_ids)
            slot.episode.transitions.append(
                Transition(
                    observation=slot.observation,
                    action=generation.text,
                    reward=float(reward),
                    next_observation=next_observation,
                    terminated=bool(terminated),
                    truncated=bool(truncated),
                    info=_jsonable(info),
                    prompt_token_ids=generation.prompt_token_ids or None,
                    action_token_ids=generation.token_ids or None,
                    action_logprobs=generation.logprobs or None,
                    policy_version=generation.policy_version or policy_version,
                )
            )
            slot.observation = next_observation
            if not (terminated or truncated):
                still_running.append(index)
                continue
            episode = slot.episode.finalize(success=bool(info.get("success", False)))
            episodes.append(episode)
            if writer is not None:
                writer.write(episode)
            if on_episode is not None:
                on_episode(episode)
            if started < num_episodes:
                start(index)
                still_running.append(index)
        running = still_running
    for slot in slots:
        slot.env.close()
    seconds = time.perf_counter() - start_time
    logger.debug("collected %d episodes in %.2fs", len(episodes), seconds)
    return CollectResult(episodes=episodes, seconds=seconds, generated_tokens=generated_tokens)


def _env_name(env: gym.Env[str, str]) -> str:
    spec = env.spec
    return spec.id if spec is not None else type(env.unwrapped).__name__


def _jsonable(info: dict[str, Any]) -> dict[str, Any]:
    """Keep ``info`` JSON-serialisable (values that are not become strings).

    Binary values (a browser's ``screenshot`` PNG) are not episode data: the log keeps
    only their size, ``"<PNG, 48213 bytes>"``, instead of megabytes of escaped bytes.
    """
    if any(isinstance(value, bytes | bytearray) for value in info.values()):
        info = {
            key: _binary_note(value) if isinstance(value, bytes | bytearray) else value
            for key, value in info.items()
        }
    try:
        json.dumps(info)
        return dict(info)
    except (TypeError, ValueError):
        return json.loads(json.dumps(info, default=str))


def _binary_note(value: bytes | bytearray) -> str:
    kind = "PNG, " if bytes(value[:8]) == b"\x89PNG\r\n\x1a\n" else ""
    return f"<{kind}{len(value)} bytes>"
