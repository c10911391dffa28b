"""`EpisodeRecorder`: any LangChain or LangGraph agent's runs as training episodes.

Attach the recorder as a callback (``agent.invoke(inputs, config={"callbacks":
[recorder]})`` or ``agent.with_config(callbacks=[recorder])``) and each
top-level run becomes one `Episode` (``source="langchain"``, ``episode_id`` =
the run id) with one transition per model call (built by
`archer_agents.langchain.transitions`):

- ``observation``: what the model saw, rendered by `prompts.render_messages`
  (with the tools it was offered), the text format training uses;
- ``action``: what it said, `prompts.render_action` (tool calls included);
- ``next_observation``: the next model call's observation when it continues
  this conversation, else this one with the action and the tool outputs after it;
- token ids, log-probabilities and prompt ids when the model reports them
  (`ArcherChatModel`, vLLM with ``return_tokens_as_token_ids``), and the policy version.

Rewards come later: ``recorder.feedback(run_or_episode_id, reward, success)``
puts the reward on the last transition and writes the episode. Until then it
waits in memory; `flush` and `close` write waiting episodes as they are, marked
``metadata["reward_pending"]`` (offline training leaves them out). Feedback for
an episode already written writes it again, ``metadata["revision"]`` one
higher (`archer_agents.data.episode_log.latest_revisions` keeps the newest).
With ``wait_for_feedback=False`` an episode is written as soon as its run ends.

``redact`` (str -> str, e.g. `archer_agents.langchain.redaction.redact_patterns`)
masks personal data in every text before anything is written, dropping the
token ids of any text it changes (they spell the original).

The recorder never raises into the agent: a failing callback is logged. A
write that fails (a full disk, a read-only folder, a log handle closed
underneath) raises into none of the host's calls (callbacks, `feedback`,
`flush`, `close`): the episode is kept in memory, up to ``max_unwritten``
episodes (beyond that the oldest are dropped, counted in `dropped` and logged
as a warning), and written by a later `flush` or `close` once the disk takes it
again. A failed write leaves no partial line in the log (`EpisodeWriter` cuts
the fragment off, or the next writer does), so the lines after it stay readable
and every kept episode lands exactly once. A slow disk only slows the call
that writes (``fsync=False`` shortens it); it raises nothing.

A run whose parent the recorder never saw is an episode of its own; a run that
calls no model is none.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from archer_agents.data.episode_log import EpisodeWriter, TornWrite
from archer_agents.data.schema import Episode
from archer_agents.langchain.redaction import Redactor, redact_episode
from archer_agents.langchain.transitions import ModelCall, episode_transitions, with_reward

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def _guarded(method: F) -> F:
    """Log, never raise: a recorder must not break the agent it watches."""

    @functools.wraps(method)
    def wrapper(self: EpisodeRecorder, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception:
            logger.exception("EpisodeRecorder.%s failed; the agent goes on", method.__name__)
            return None

    return wrapper  # type: ignore[return-value]


@dataclass
class _Trace:
    """A top-level run being recorded."""

    root: uuid.UUID
    name: str | None
    tags: list[str]
    metadata: dict[str, Any]
    started_at: datetime
    calls: list[ModelCall] = field(default_factory=list)
    failed_calls: int = 0


class EpisodeRecorder(BaseCallbackHandler):
    """Records LangChain runs as episodes in a JSONL log (see the module docstring).

    Args:
        path: the episode log to append to.
        env_id: ``Episode.env_id`` of the recorded episodes (name the agent or task).
        redact: masks personal data in every text before it is written.
        wait_for_feedback: keep finished episodes in memory until their reward
            arrives (or `flush`); False writes each one when its run ends.
        max_waiting: most finished episodes kept waiting; the oldest is then
            written without its reward.
        fsync: fsync the log after each episode (`EpisodeWriter`).
        max_unwritten: most episodes kept in memory while writes fail; beyond it the
            oldest are dropped (counted in `dropped`, logged as a warning).
    """

    raise_error = False
    run_inline = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        env_id: str = "langchain",
        redact: Redactor | None = None,
        wait_for_feedback: bool = True,
        max_waiting: int = 1000,
        fsync: bool = True,
        max_unwritten: int = 10_000,
    ) -> None:
        if max_waiting < 1:
            raise ValueError(f"max_waiting must be at least 1, got {max_waiting}")
        if max_unwritten < 1:
            raise ValueError(f"max_unwritten must be at least 1, got {max_unwritten}")
        self.path = os.fspath(path)
        self.env_id = env_id
        self.redact = redact
        self.wait_for_feedback = wait_for_feedback
        self.max_waiting = max_waiting
        self.max_unwritten = max_unwritten
        self._fsync = fsync
        self._torn: TornWrite | None = None
        self._failing = False
        self._lock = threading.RLock()
        self._writer: EpisodeWriter | None = None
        self._root_of: dict[uuid.UUID, uuid.UUID] = {}
        self._traces: dict[uuid.UUID, _Trace] = {}
        self._calls: dict[uuid.UUID, ModelCall] = {}
        self._tool_call_ids: dict[uuid.UUID, str] = {}
        self._early_feedback: dict[uuid.UUID, tuple[float, bool | None]] = {}
        self._waiting: OrderedDict[str, Episode] = OrderedDict()
        self._written: OrderedDict[str, Episode] = OrderedDict()
        self._unwritten: OrderedDict[str, Episode] = OrderedDict()
        self.last_episode_id: str | None = None
        """Id of the episode whose run ended last."""
        self.dropped = 0
        """Episodes given up because more than ``max_unwritten`` could not be written."""

    # -- what the recorder holds ----------------------------------------------------
    @property
    def waiting(self) -> list[str]:
        """Ids of finished episodes waiting for their reward."""
        with self._lock:
            return list(self._waiting)

    @property
    def unwritten(self) -> list[str]:
        """Ids of episodes whose write failed, kept (oldest first) for `flush` to retry."""
        with self._lock:
            return list(self._unwritten)

    def episode_id_for(self, run_id: str | uuid.UUID) -> str:
        """The episode a run (the top-level run or any run inside it) belongs to."""
        with self._lock:
            return self._resolve(run_id)

    # -- rewards and writing ---------------------------------------------------------
    def feedback(
        self, run_or_episode_id: str | uuid.UUID, reward: float, success: bool | None = None
    ) -> str:
        """Give an episode its reward (on its last transition); returns the episode id.

        The episode is written at once (a failed write is kept for `flush`). Feedback
        for a run still going is applied when it ends.
        """
        reward = float(reward)
        if not math.isfinite(reward):
            raise ValueError(f"reward must be a finite number, got {reward}")
        with self._lock:
            episode_id = self._resolve(run_or_episode_id)
            root = uuid.UUID(episode_id)
            if root in self._traces:
                self._early_feedback[root] = (reward, success)
                return episode_id
            if episode_id in self._waiting:
                episode = self._waiting.pop(episode_id)
            elif episode_id in self._unwritten:
                episode = self._unwritten.pop(episode_id)
            else:
                episode = self._written[episode_id].model_copy(deep=True)
            self._write(with_reward(episode, reward, success))
        return episode_id

    def flush(self) -> int:
        """Write every waiting episode (without reward) and retry failed writes.

        Returns how many episodes were written. Never raises: if the log still cannot
        be written, the rest stay in memory (`unwritten`, oldest first) for a later call.
        """
        with self._lock:
            written = 0
            while self._unwritten or self._waiting:
                source = self._unwritten if self._unwritten else self._waiting
                _, episode = source.popitem(last=False)
                if not self._write(episode):
                    # The log still fails: keep the rest, in order, without trying each.
                    for rest in list(self._waiting.values()):
                        self._keep(rest)
                    self._waiting.clear()
                    break
                written += 1
            return written

    def close(self) -> None:
        """Flush, then close the log. Never raises; episodes still failing stay in
        `unwritten`, and a later `flush` (which reopens the log) can still write them."""
        with self._lock:
            self.flush()
            self._close_writer()

    def __enter__(self) -> EpisodeRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- LangChain callbacks ------------------------------------------------------------
    @_guarded
    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name")
        self._register(run_id, parent_run_id, name, tags, metadata)

    @_guarded
    def on_chain_end(
        self, outputs: Any, *, run_id: uuid.UUID, parent_run_id: uuid.UUID | None = None, **_: Any
    ) -> None:
        self._end(run_id, error=None)

    @_guarded
    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        **_: Any,
    ) -> None:
        self._end(run_id, error=error)

    @_guarded
    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        tools = list((kwargs.get("invocation_params") or {}).get("tools") or [])
        name = kwargs.get("name") or (serialized or {}).get("name")
        trace = self._register(run_id, parent_run_id, name, tags, metadata)
        call = ModelCall(str(run_id), list(messages[0]) if messages else [], None, tools, name)
        with self._lock:
            self._calls[run_id] = call
            trace.calls.append(call)

    @_guarded
    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name")
        trace = self._register(run_id, parent_run_id, name, tags, metadata)
        call = ModelCall(str(run_id), None, prompts[0] if prompts else "", [], name)
        with self._lock:
            self._calls[run_id] = call
            trace.calls.append(call)

    @_guarded
    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        **_: Any,
    ) -> None:
        with self._lock:
            call = self._calls.pop(run_id, None)
            if call is None:
                return
            generation = response.generations[0][0] if response.generations else None
            if isinstance(generation, ChatGeneration) and isinstance(generation.message, AIMessage):
                call.answer = generation.message
            elif generation is not None:
                call.text = generation.text
            call.generation_info = dict(generation.generation_info or {}) if generation else {}
        self._end(run_id, error=None)

    @_guarded
    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        **_: Any,
    ) -> None:
        with self._lock:
            call = self._calls.pop(run_id, None)
            trace = self._traces.get(self._root_of.get(run_id, run_id))
            if call is not None and trace is not None:
                trace.calls.remove(call)
                trace.failed_calls += 1
        self._end(run_id, error=error)

    @_guarded
    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name")
        self._register(run_id, parent_run_id, name, tags, metadata)
        if kwargs.get("tool_call_id"):
            with self._lock:
                self._tool_call_ids[run_id] = str(kwargs["tool_call_id"])

    @_guarded
    def on_tool_end(
        self,
        output: Any,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(output, BaseMessage):
            message = output
        else:
            text = output if isinstance(output, str) else json.dumps(output, default=str)
            message = self._tool_message(run_id, text, kwargs.get("name"))
        self._after_call(run_id, message)
        self._end(run_id, error=None)

    @_guarded
    def on_tool_error(
        self,
        error: BaseException,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        **kwargs: Any,
    ) -> None:
        text = f"Error: {type(error).__name__}: {error}"
        self._after_call(run_id, self._tool_message(run_id, text, kwargs.get("name")))
        self._end(run_id, error=None)

    # -- bookkeeping ------------------------------------------------------------------------
    def _register(
        self,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None,
        name: str | None,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
    ) -> _Trace:
        with self._lock:
            root = self._root_of.get(parent_run_id) if parent_run_id is not None else None
            if root is None or root not in self._traces:
                root = run_id
                self._traces[root] = _Trace(
                    root=root,
                    name=name,
                    tags=list(tags or []),
                    metadata=json.loads(json.dumps(dict(metadata or {}), default=str)),
                    started_at=datetime.now(timezone.utc),
                )
            self._root_of[run_id] = root
            return self._traces[root]

    def _tool_message(self, run_id: uuid.UUID, text: str, name: str | None) -> ToolMessage:
        with self._lock:
            call_id = self._tool_call_ids.get(run_id, "")
        return ToolMessage(content=text, tool_call_id=call_id, name=name)

    def _after_call(self, run_id: uuid.UUID, message: BaseMessage) -> None:
        with self._lock:
            trace = self._traces.get(self._root_of.get(run_id, run_id))
            if trace is not None and trace.calls:
                trace.calls[-1].after.append(message)

    def _end(self, run_id: uuid.UUID, error: BaseException | None) -> None:
        with self._lock:
            self._tool_call_ids.pop(run_id, None)
            trace = self._traces.get(run_id)
            if trace is None:
                return  # not a top-level run
            del self._traces[run_id]
            for child in [r for r, root in self._root_of.items() if root == run_id]:
                del self._root_of[child]
                self._calls.pop(child, None)
            if not trace.calls and not trace.failed_calls:
                logger.debug("run %s called no model; nothing to record", run_id)
                return
            episode = self._episode(trace, error)
            self.last_episode_id = episode.episode_id
            early = self._early_feedback.pop(trace.root, None)
            if early is not None:
                self._write(with_reward(episode, *early))
            elif self.wait_for_feedback:
                self._waiting[episode.episode_id] = episode
                while len(self._waiting) > self.max_waiting:
                    _, oldest = self._waiting.popitem(last=False)
                    logger.info(
                        "%d episodes wait for feedback (max_waiting); writing %s without reward",
                        len(self._waiting) + 1,
                        oldest.episode_id,
                    )
                    self._write(oldest)
            else:
                self._write(episode)

    def _episode(self, trace: _Trace, error: BaseException | None) -> Episode:
        transitions = episode_transitions(trace.calls, ended_with_error=error is not None)
        metadata: dict[str, Any] = {
            "run_name": trace.name,
            "tags": trace.tags,
            "run_metadata": trace.metadata,
            "reward_pending": True,
        }
        if trace.failed_calls:
            metadata["failed_model_calls"] = trace.failed_calls
        if error is not None:
            metadata["error"] = f"{type(error).__name__}: {error}"
        return Episode(
            episode_id=str(trace.root),
            env_id=self.env_id,
            source="langchain",
            transitions=transitions,
            started_at=trace.started_at,
            ended_at=datetime.now(timezone.utc),
            metadata=metadata,
        )

    def _resolve(self, key: str | uuid.UUID) -> str:
        text = str(key)
        if text in self._waiting or text in self._written or text in self._unwritten:
            return text
        try:
            run_id = uuid.UUID(text)
        except ValueError:
            run_id = None
        if run_id is not None:
            if run_id in self._traces:
                return str(run_id)
            if run_id in self._root_of:
                return str(self._root_of[run_id])
            for episode in (
                *self._waiting.values(),
                *self._unwritten.values(),
                *self._written.values(),
            ):
                if text in {t.info.get("run_id") for t in episode.transitions}:
                    return episode.episode_id
        raise KeyError(
            f"no recorded run or episode {text!r}: pass the id of a run this recorder saw (e.g. "
            "config={'run_id': ...} given to invoke, or recorder.last_episode_id); written "
            f"episodes are remembered for feedback up to max_waiting={self.max_waiting}"
        )

    def _write(self, episode: Episode) -> bool:
        """Redact and append ``episode``; on failure keep it (`_keep`). True if written.

        Never raises. A writer that fails is closed; the next attempt opens a fresh one
        (once at once, so a handle closed underneath costs nothing).
        """
        with self._lock:
            revision = int(episode.metadata.get("revision", 0)) + 1
            stored = episode.model_copy(deep=True)
            stored.metadata["revision"] = revision
            try:
                clean = redact_episode(stored, self.redact) if self.redact is not None else stored
            except Exception:
                logger.exception(
                    "could not write episode %s: redaction failed; kept in memory, call "
                    "flush() to retry",
                    episode.episode_id,
                )
                self._keep(episode)
                return False
            error: Exception | None = None
            for _ in range(2):
                reopened = self._writer is None
                try:
                    if self._writer is None:
                        self._writer = EpisodeWriter(
                            self.path, fsync=self._fsync, repair=self._torn
                        )
                        self._torn = None
                    self._writer.write(clean)
                    error = None
                    break
                except Exception as exc:  # OSError; anything else is a bug, still not raised
                    error = exc
                    self._close_writer()
                    if reopened:
                        break
            if error is not None:
                self._keep(episode)
                if not self._failing:
                    self._failing = True
                    logger.error(
                        "could not write episode %s to %s (%s: %s); it is kept in memory "
                        "(%d unwritten, at most %d) and written by the next flush() or close()",
                        episode.episode_id,
                        self.path,
                        type(error).__name__,
                        error,
                        len(self._unwritten),
                        self.max_unwritten,
                    )
                else:
                    logger.debug("episode %s kept in memory: %s", episode.episode_id, error)
                return False
            if self._failing:
                self._failing = False
                logger.info("%s takes episodes again", self.path)
            self._written[episode.episode_id] = stored
            while len(self._written) > self.max_waiting:
                self._written.popitem(last=False)
            return True

    def _keep(self, episode: Episode) -> None:
        """Hold an unwritten episode (the newest last); past ``max_unwritten`` drop the oldest."""
        self._unwritten.pop(episode.episode_id, None)
        self._unwritten[episode.episode_id] = episode
        while len(self._unwritten) > self.max_unwritten:
            _, lost = self._unwritten.popitem(last=False)
            self.dropped += 1
            logger.warning(
                "dropped episode %s: %d episodes could not be written to %s and at most "
                "max_unwritten=%d are kept in memory (%d dropped so far)",
                lost.episode_id,
                self.max_unwritten + 1,
                self.path,
                self.max_unwritten,
                self.dropped,
            )

    def _close_writer(self) -> None:
        """Close the log (never raises), keeping where a failed write's fragment sits."""
        writer, self._writer = self._writer, None
        if writer is not None:
            if writer.torn_write is not None:
                self._torn = writer.torn_write
            writer.close()
