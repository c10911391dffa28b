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
puts the reward on the last transition and hands the episode to the writer.
Until then it waits in memory; `flush` and `close` write waiting episodes as
they are, marked ``metadata["reward_pending"]`` (offline training leaves them
out). Feedback for an episode already handed over writes it again,
``metadata["revision"]`` one higher (`archer_agents.data.episode_log.latest_revisions`
keeps the newest). With ``wait_for_feedback=False`` an episode is handed over
as soon as its run ends.

Writing happens on a background thread, in the order the episodes were handed
over, so no host call waits for the disk: the callbacks and `feedback` only
queue. `drain` waits until the queued episodes are written, `flush` also writes
the waiting ones, and `close` does both and closes the log; each takes a
``timeout`` (seconds; None waits for the writer) and returns once it passes,
leaving the rest to the writer. A process that exits without `close` closes
its recorders at exit (waiting at most `EXIT_TIMEOUT` seconds in all), so the
episodes already queued still land. Read the log after `drain`, `flush` or
`close`, not straight after `feedback`.

``redact`` (str -> str, e.g. `archer_agents.langchain.redaction.redact_patterns`)
masks personal data in every text before anything is written, dropping the
token ids of any text it changes (they spell the original).

The recorder never raises into the agent: a failing callback is logged. A full
disk, a read-only folder, a log handle closed underneath or a slow disk raises
into none of the host's calls (callbacks, `feedback`, `drain`, `flush`,
`close`). Episodes not yet written, whether queued behind a slow write or kept
after a failed one, stay in memory (`unwritten`), at most ``max_unwritten`` of
them: beyond that the oldest are dropped, counted in `dropped` and logged as a
warning. After a failed write the writer keeps the rest in order and tries
again with the next episode handed over, `drain`, `flush` or `close`. A failed
write leaves no partial line in the log (`EpisodeWriter` cuts the fragment off,
or the next writer does), so the lines after it stay readable and every kept
episode lands exactly once.

A run whose parent the recorder never saw is an episode of its own; a run that
calls no model is none.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import math
import os
import threading
import time
import uuid
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
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

EXIT_TIMEOUT = 30.0
"""Seconds the recorders still open at interpreter exit may take, in all, to write what
they hold (`close` on each); whatever is left after that is lost with the process."""

_OPEN: weakref.WeakSet[EpisodeRecorder] = weakref.WeakSet()


def _close_at_exit() -> None:
    """Close every recorder the host left open, sharing `EXIT_TIMEOUT` between them."""
    deadline = time.monotonic() + EXIT_TIMEOUT
    for recorder in list(_OPEN):
        recorder.close(timeout=max(0.0, deadline - time.monotonic()))


atexit.register(_close_at_exit)


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


@dataclass(eq=False)
class _Pending:
    """One version of an episode handed to the writer and not yet in the log."""

    episode: Episode
    """With its ``metadata["revision"]`` set; never changed once queued."""
    held: bool = False
    """A write failed while it waited (its own or one before it): a newer version from
    `EpisodeRecorder.feedback` takes its place instead of queueing behind it."""
    aside: bool = False
    """Its redaction failed in the writer's current pass; tried again in the next one."""

    @property
    def episode_id(self) -> str:
        return self.episode.episode_id


def _revision(episode: Episode) -> int:
    return int(episode.metadata.get("revision", 0))


_WRITTEN, _REDACTION_FAILED, _LOG_FAILED = "written", "redaction failed", "log failed"


class EpisodeRecorder(BaseCallbackHandler):
    """Records LangChain runs as episodes in a JSONL log (see the module docstring).

    Args:
        path: the episode log to append to.
        env_id: ``Episode.env_id`` of the recorded episodes (name the agent or task).
        redact: masks personal data in every text before it is written.
        wait_for_feedback: keep finished episodes in memory until their reward
            arrives (or `flush`); False hands each one to the writer when its run ends.
        max_waiting: most finished episodes kept waiting; the oldest is then
            written without its reward.
        fsync: fsync the log after each episode (`EpisodeWriter`).
        max_unwritten: most episodes kept in memory that the writer has not written
            yet (queued behind a slow disk, or kept after a failed write); beyond it
            the oldest are dropped (counted in `dropped`, logged as a warning).
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
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._root_of: dict[uuid.UUID, uuid.UUID] = {}
        self._traces: dict[uuid.UUID, _Trace] = {}
        self._calls: dict[uuid.UUID, ModelCall] = {}
        self._tool_call_ids: dict[uuid.UUID, str] = {}
        self._early_feedback: dict[uuid.UUID, tuple[float, bool | None]] = {}
        self._waiting: OrderedDict[str, Episode] = OrderedDict()
        self._written: OrderedDict[str, Episode] = OrderedDict()
        # Handed to the writer, oldest first; an entry leaves once it is in the log.
        self._pending: deque[_Pending] = deque()
        self._in_flight: _Pending | None = None  # the one being written (still in _pending)
        self._drops: list[tuple[str, int]] = []  # to warn about once the lock is released
        self._dropped_ids: OrderedDict[str, None] = OrderedDict()  # the latest max_waiting
        self._episodes_written = 0
        # The writer thread: it runs while passes are asked for (`_asked`) that it has not
        # done (`_done`), and closes the log after the pass that covers `_close_after`.
        self._thread: threading.Thread | None = None
        self._asked = 0
        self._done = 0
        self._close_after = 0
        # Only the writer thread touches these.
        self._writer: EpisodeWriter | None = None
        self._torn: TornWrite | None = None
        self._failing = False
        self.last_episode_id: str | None = None
        """Id of the episode whose run ended last."""
        self.dropped = 0
        """Episodes given up because more than ``max_unwritten`` were not written yet."""
        _OPEN.add(self)

    # -- what the recorder holds ----------------------------------------------------
    @property
    def waiting(self) -> list[str]:
        """Ids of finished episodes waiting for their reward."""
        with self._lock:
            return list(self._waiting)

    @property
    def unwritten(self) -> list[str]:
        """Ids of episodes handed to the writer but not in the log yet, oldest first: being
        written, queued, or kept after a failed write (retried by the next pass)."""
        with self._lock:
            return list(dict.fromkeys(entry.episode_id for entry in self._pending))

    def episode_id_for(self, run_id: str | uuid.UUID) -> str:
        """The episode a run (the top-level run or any run inside it) belongs to."""
        with self._lock:
            return self._resolve(run_id)

    # -- rewards and writing ---------------------------------------------------------
    def feedback(
        self, run_or_episode_id: str | uuid.UUID, reward: float, success: bool | None = None
    ) -> str:
        """Give an episode its reward (on its last transition); returns the episode id.

        The episode is handed to the writer thread and this returns at once (see `drain`).
        Feedback for a run still going is applied when it ends; feedback for an episode
        dropped past ``max_unwritten`` is logged and ignored.
        """
        reward = float(reward)
        if not math.isfinite(reward):
            raise ValueError(f"reward must be a finite number, got {reward}")
        with self._lock:
            key = str(run_or_episode_id)
            if key in self._dropped_ids and not self._known(key):
                # A slow or failing disk is no reason to raise into the host.
                logger.warning(
                    "feedback for episode %s ignored: it was dropped (max_unwritten) before "
                    "it could be written",
                    key,
                )
                return key
            episode_id = self._resolve(run_or_episode_id)
            root = uuid.UUID(episode_id)
            if root in self._traces:
                self._early_feedback[root] = (reward, success)
                return episode_id
            if episode_id in self._waiting:
                self._enqueue(with_reward(self._waiting.pop(episode_id), reward, success))
            else:
                base, revision = self._latest(episode_id)
                self._enqueue(with_reward(base, reward, success), revision)
        self._warn_dropped()
        return episode_id

    def drain(self, timeout: float | None = None) -> int:
        """Wait until the writer has tried every episode handed to it (failed writes are
        tried again; waiting episodes stay waiting), at most ``timeout`` seconds.

        Returns how many episodes reached the log meanwhile. Never raises: what the log
        did not take stays in `unwritten`, and what is still queued after ``timeout`` is
        written in the background.
        """
        with self._cond:
            before = self._episodes_written
            target = self._ask()
        self._wait(target, timeout)
        with self._lock:
            return self._episodes_written - before

    def flush(self, timeout: float | None = None) -> int:
        """Hand every waiting episode (without reward) to the writer, then `drain`.

        Returns how many episodes were written meanwhile. Never raises: if the log still
        cannot be written, the rest stay in memory (`unwritten`, oldest first) for a
        later call.
        """
        with self._cond:
            before = self._episodes_written
            while self._waiting:
                self._enqueue(self._waiting.popitem(last=False)[1])
            target = self._ask()
        self._warn_dropped()
        self._wait(target, timeout)
        with self._lock:
            return self._episodes_written - before

    def close(self, timeout: float | None = None) -> None:
        """`flush`, then close the log; waits at most ``timeout`` seconds (None: until done).

        Never raises. Episodes still failing stay in `unwritten`, and a later call (which
        reopens the log) can still write them. If ``timeout`` passes first, a warning says
        how many are still queued; the writer goes on and closes the log when done.
        """
        with self._cond:
            while self._waiting:
                self._enqueue(self._waiting.popitem(last=False)[1])
            target = self._ask()
            self._close_after = target
        self._warn_dropped()
        if not self._wait(target, timeout):
            logger.warning(
                "closing %s: %d episodes are still being written after %.3g s; the writer "
                "goes on in the background and closes the log when done",
                self.path,
                len(self.unwritten),
                timeout,
            )

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
                self._enqueue(with_reward(episode, *early))
            elif self.wait_for_feedback:
                self._waiting[episode.episode_id] = episode
                while len(self._waiting) > self.max_waiting:
                    _, oldest = self._waiting.popitem(last=False)
                    logger.info(
                        "%d episodes wait for feedback (max_waiting); writing %s without reward",
                        len(self._waiting) + 1,
                        oldest.episode_id,
                    )
                    self._enqueue(oldest)
            else:
                self._enqueue(episode)
        self._warn_dropped()

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

    def _known(self, episode_id: str) -> bool:
        """Whether some version of ``episode_id`` is waiting, queued or written."""
        return (
            episode_id in self._waiting
            or episode_id in self._written
            or any(entry.episode_id == episode_id for entry in self._pending)
        )

    def _resolve(self, key: str | uuid.UUID) -> str:
        text = str(key)
        if self._known(text):
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
            episodes: Iterable[Episode] = (
                *self._waiting.values(),
                *(entry.episode for entry in self._pending),
                *self._written.values(),
            )
            for episode in episodes:
                if text in {t.info.get("run_id") for t in episode.transitions}:
                    return episode.episode_id
        raise KeyError(
            f"no recorded run or episode {text!r}: pass the id of a run this recorder saw (e.g. "
            "config={'run_id': ...} given to invoke, or recorder.last_episode_id); written "
            f"episodes are remembered for feedback up to max_waiting={self.max_waiting}"
        )

    def _latest(self, episode_id: str) -> tuple[Episode, int]:
        """The newest version of a handed-over episode, and the revision its successor gets.

        A version kept after a failed write is replaced (the successor takes its revision);
        one that is queued, being written or written stays, and the successor follows it.
        """
        for entry in reversed(self._pending):
            if entry.episode_id == episode_id:
                if entry.held and entry is not self._in_flight:
                    self._pending.remove(entry)
                    return entry.episode, _revision(entry.episode)
                return entry.episode, _revision(entry.episode) + 1
        episode = self._written[episode_id]
        return episode, _revision(episode) + 1

    # -- the writer ---------------------------------------------------------------------
    def _enqueue(self, episode: Episode, revision: int | None = None) -> None:
        """Queue ``episode`` (owned by the recorder from now on) for the writer thread.

        Its revision is one past its own unless given. Past ``max_unwritten`` queued
        episodes the oldest is dropped (warned about by `_warn_dropped`). Call under the lock.
        """
        episode.metadata["revision"] = _revision(episode) + 1 if revision is None else revision
        self._pending.append(_Pending(episode))
        self._trim()
        self._ask()

    def _trim(self) -> None:
        """Drop the oldest episodes past ``max_unwritten`` (the one being written aside)."""
        excess = len(self._pending) - (self._in_flight is not None) - self.max_unwritten
        front: list[_Pending] = []
        while excess > 0:
            entry = self._pending.popleft()
            if entry is self._in_flight:
                front.append(entry)
                continue
            excess -= 1
            self.dropped += 1
            self._drops.append((entry.episode_id, self.dropped))
            self._dropped_ids[entry.episode_id] = None
            while len(self._dropped_ids) > self.max_waiting:
                self._dropped_ids.popitem(last=False)
        self._pending.extendleft(front)

    def _warn_dropped(self) -> None:
        """Log the drops `_trim` noted, outside the lock (a handler may be slow)."""
        with self._lock:
            drops, self._drops = self._drops, []
        for episode_id, total in drops:
            logger.warning(
                "dropped episode %s: more than max_unwritten=%d episodes were not written to "
                "%s yet (a slow or failing disk) and only that many are kept in memory "
                "(%d dropped so far)",
                episode_id,
                self.max_unwritten,
                self.path,
                total,
            )

    def _ask(self) -> int:
        """Ask the writer thread for one more pass (starting it if needed); its number."""
        self._asked += 1
        self._start_writer()
        self._cond.notify_all()
        return self._asked

    def _start_writer(self) -> bool:
        """Start the writer thread unless it runs; False if no thread can start (the
        interpreter is exiting). Call under the lock."""
        if self._thread is not None and self._thread.is_alive():
            return True
        self._thread = threading.Thread(
            target=self._run, name=f"EpisodeRecorder writer: {self.path}", daemon=True
        )
        try:
            self._thread.start()
        except RuntimeError as exc:  # "can't create new thread at interpreter shutdown"
            logger.debug("no writer thread for %s: %s", self.path, exc)
            self._thread = None
            return False
        return True

    def _wait(self, target: int, timeout: float | None) -> bool:
        """Wait until pass ``target`` is done; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._done < target:
                if not self._start_writer():
                    # No thread can start (at exit): this thread does the writer's work.
                    self._thread = threading.current_thread()
                    self._run()
                    continue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def _run(self) -> None:
        """The writer thread: passes over the queue while any are asked for, then ends."""
        me = threading.current_thread()
        target = 0
        try:
            while True:
                with self._cond:
                    if self._done >= self._asked:
                        self._thread = None if self._thread is me else self._thread
                        self._cond.notify_all()
                        return
                    target = self._asked
                self._write_pending()
                with self._cond:
                    close = 0 < self._close_after <= target
                    if close:
                        self._close_after = 0
                if close:
                    self._close_writer()
                with self._cond:
                    self._done = max(self._done, target)
                    self._cond.notify_all()
        except Exception:  # a bug; what is queued stays for the next pass
            logger.exception("the episode writer of %s failed", self.path)
            with self._cond:
                self._done = max(self._done, self._asked)
                self._thread = None if self._thread is me else self._thread
                self._cond.notify_all()

    def _write_pending(self) -> None:
        """One pass: write the queue in order; stop at the first write the log refuses,
        keeping it and the rest (a broken redaction only sets its episode aside)."""
        try:
            while True:
                with self._lock:
                    entry = next((e for e in self._pending if not e.aside), None)
                    if entry is None:
                        return
                    self._in_flight = entry
                outcome = self._write_one(entry.episode)
                with self._lock:
                    self._in_flight = None
                    if outcome == _WRITTEN:
                        self._pending.remove(entry)
                        self._episodes_written += 1
                        self._written[entry.episode_id] = entry.episode
                        self._written.move_to_end(entry.episode_id)
                        while len(self._written) > self.max_waiting:
                            self._written.popitem(last=False)
                    elif outcome == _REDACTION_FAILED:
                        entry.aside = True
                    else:
                        for waiting in self._pending:
                            waiting.held = True
                        self._trim()
                        return
        finally:
            with self._lock:
                self._in_flight = None
                for entry in self._pending:
                    entry.aside = False
            self._warn_dropped()

    def _write_one(self, episode: Episode) -> str:
        """Redact and append ``episode`` (writer thread, no lock held); never raises.

        A writer that fails is closed; the next attempt opens a fresh one (once at once,
        so a handle closed underneath costs nothing).
        """
        try:
            clean = redact_episode(episode, self.redact) if self.redact is not None else episode
        except Exception:
            logger.exception(
                "could not write episode %s: redaction failed; kept in memory, call "
                "flush() to retry",
                episode.episode_id,
            )
            return _REDACTION_FAILED
        error: Exception | None = None
        for _ in range(2):
            reopened = self._writer is None
            try:
                if self._writer is None:
                    self._writer = EpisodeWriter(self.path, fsync=self._fsync, repair=self._torn)
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
            if not self._failing:
                self._failing = True
                logger.error(
                    "could not write episode %s to %s (%s: %s); it and the episodes after it "
                    "are kept in memory (at most max_unwritten=%d) and written once the log "
                    "takes them (tried again with the next episode, drain(), flush() or close())",
                    episode.episode_id,
                    self.path,
                    type(error).__name__,
                    error,
                    self.max_unwritten,
                )
            else:
                logger.debug("episode %s kept in memory: %s", episode.episode_id, error)
            return _LOG_FAILED
        if self._failing:
            self._failing = False
            logger.info("%s takes episodes again", self.path)
        return _WRITTEN

    def _close_writer(self) -> None:
        """Close the log (never raises), keeping where a failed write's fragment sits."""
        writer, self._writer = self._writer, None
        if writer is not None:
            if writer.torn_write is not None:
                self._torn = writer.torn_write
            writer.close()
