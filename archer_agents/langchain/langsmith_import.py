"""LangSmith run exports as training episodes.

A LangSmith export is JSONL, one run a line: ``id``, ``trace_id``,
``parent_run_id``, ``run_type`` ("llm", "chain", "tool", ...), ``name``,
``inputs``, ``outputs``, ``error``, ``start_time``, ``dotted_order``,
``extra`` (the model's ``invocation_params``, tools included), and feedback
as ``feedback_stats`` (``{key: {"n", "avg"}}``) or a ``feedback`` list
(``[{"key", "score"}]``). A line may also hold a whole run tree, children
nested under ``child_runs``. Each trace (a root run and its descendants)
becomes one `Episode` (``source="import"``, ``episode_id`` = the root run id),
built by the function that builds `EpisodeRecorder`'s episodes
(`recorder.episode_transitions`): one transition per ``llm`` run, in
execution order, the observation rendered by `prompts.render_messages` and the
action by `prompts.render_action`, so an imported trace and a recorded run of
the same conversation give the same transitions.

Messages are read in the forms LangChain and LangSmith write: LangChain's
serialised constructors (``{"lc": 1, "id": [..., "HumanMessage"], "kwargs":
{...}}``), ``{"type", "data"}`` dicts, and OpenAI ``{"role", "content"}``
messages (inputs ``messages``; outputs ``generations`` or ``choices``). They
are never deserialised with `langchain_core.load`, so an export cannot
instantiate arbitrary classes.

The reward is the score of one feedback key (``reward_key``; with one key in
the trace it is that key) on the last transition; a trace without that
feedback is imported with ``total_reward=None`` and
``metadata["reward_pending"]``. A ``success`` key, when present, sets
``Episode.success``.

Nothing is dropped silently: a line that is not JSON, not a run, or a run that
cannot be read is reported with its line number in `ImportReport.bad_lines`,
and a run whose parent is missing from the export is imported as a trace of
its own and noted.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ToolMessage,
    convert_to_messages,
    messages_from_dict,
)
from pydantic import ValidationError

from archer_agents.data.schema import Episode
from archer_agents.langchain.recorder import (
    ModelCall,
    Redactor,
    episode_transitions,
    redact_episode,
)

logger = logging.getLogger(__name__)

RUN_TYPES = frozenset({"llm", "chain", "tool", "retriever", "prompt", "parser", "embedding"})

_LC_TYPES = {
    "HumanMessage": "human",
    "HumanMessageChunk": "human",
    "AIMessage": "ai",
    "AIMessageChunk": "ai",
    "SystemMessage": "system",
    "SystemMessageChunk": "system",
    "ToolMessage": "tool",
    "ToolMessageChunk": "tool",
    "FunctionMessage": "function",
    "FunctionMessageChunk": "function",
    "ChatMessage": "chat",
    "ChatMessageChunk": "chat",
}
"""LangChain message classes by the ``type`` that `messages_from_dict` reads."""

_MESSAGE_FIELDS = frozenset(
    {
        "content",
        "additional_kwargs",
        "response_metadata",
        "name",
        "id",
        "tool_calls",
        "invalid_tool_calls",
        "usage_metadata",
        "tool_call_id",
        "artifact",
        "status",
        "role",
    }
)


class RunFormatError(ValueError):
    """A run's inputs or outputs are in no form the importer reads."""


@dataclass
class BadLine:
    """A line of the export that was not imported, and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class ImportReport:
    """What an import read, made and left out."""

    runs_read: int = 0
    episodes: int = 0
    rewarded: int = 0
    bad_lines: list[BadLine] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Run:
    line: int
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def parent(self) -> str | None:
        parent = self.data.get("parent_run_id")
        return str(parent) if parent else None

    @property
    def order_key(self) -> tuple[str, str, int]:
        return (
            str(self.data.get("dotted_order") or ""),
            str(self.data.get("start_time") or ""),
            self.line,
        )


def import_langsmith(
    path: str | os.PathLike[str],
    *,
    env_id: str = "langsmith",
    reward_key: str | None = None,
    redact: Redactor | None = None,
) -> tuple[list[Episode], ImportReport]:
    """Read a LangSmith JSONL export into episodes (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LangSmith export {path} does not exist; check the path")
    with path.open("rb") as handle:
        return episodes_from_lines(
            handle, env_id=env_id, reward_key=reward_key, redact=redact, source_name=str(path)
        )


def episodes_from_lines(
    lines: Iterable[bytes | str],
    *,
    env_id: str = "langsmith",
    reward_key: str | None = None,
    redact: Redactor | None = None,
    source_name: str = "<export>",
) -> tuple[list[Episode], ImportReport]:
    """Episodes from the lines of an export; bad lines go to the report."""
    report = ImportReport()
    runs = list(_read_runs(lines, report))
    report.runs_read = len(runs)
    traces = _group_traces(runs, report)
    episodes = []
    for root, members in traces.items():
        episode = _episode(root, members, env_id, reward_key, report)
        if episode is None:
            continue
        if redact is not None:
            episode = redact_episode(episode, redact)
        episodes.append(episode)
        report.rewarded += int(episode.total_reward is not None)
    report.episodes = len(episodes)
    report.bad_lines.sort(key=lambda bad: bad.line)
    for bad in report.bad_lines:
        logger.warning("%s:%s", source_name, bad)
    return episodes, report


# -- reading runs ----------------------------------------------------------------------


def _read_runs(lines: Iterable[bytes | str], report: ImportReport) -> Iterator[_Run]:
    seen: set[str] = set()
    for number, raw in enumerate(lines, start=1):
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        if not text.strip():
            continue
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            report.bad_lines.append(BadLine(number, f"not JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(payload, dict):
            report.bad_lines.append(
                BadLine(number, f"expected a run object, got {type(payload).__name__}")
            )
            continue
        flat: list[_Run] = []
        problem = _flatten(payload, None, number, flat)
        if problem is not None:
            report.bad_lines.append(BadLine(number, problem))
            continue
        duplicate = next((run.id for run in flat if run.id in seen), None)
        if duplicate is not None:
            report.bad_lines.append(BadLine(number, f"run {duplicate} appears twice in the export"))
            continue
        seen.update(run.id for run in flat)
        yield from flat


def _flatten(payload: dict[str, Any], parent: str | None, line: int, out: list[_Run]) -> str | None:
    """Append the run and its nested ``child_runs`` to ``out``; a problem's text, else None."""
    run_id = payload.get("id")
    if not isinstance(run_id, str) or not run_id:
        return f"a run without an id string (name {payload.get('name')!r})"
    run_type = payload.get("run_type")
    if run_type not in RUN_TYPES:
        return f"run {run_id} has run_type {run_type!r}, not one of {sorted(RUN_TYPES)}"
    data = {k: v for k, v in payload.items() if k != "child_runs"}
    if parent is not None and not data.get("parent_run_id"):
        data["parent_run_id"] = parent
    out.append(_Run(line, data))
    children = payload.get("child_runs") or []
    if not isinstance(children, list):
        return f"run {run_id}: child_runs is not a list"
    for child in children:
        if not isinstance(child, dict):
            return f"run {run_id}: a child run is not an object"
        problem = _flatten(child, run_id, line, out)
        if problem is not None:
            return problem
    return None


def _group_traces(runs: Sequence[_Run], report: ImportReport) -> dict[str, list[_Run]]:
    """Runs by the id of their trace's root run, each list in execution order."""
    by_id = {run.id: run for run in runs}
    root_of: dict[str, str] = {}

    def root(run: _Run) -> str:
        chain = []
        current = run
        while current.id not in root_of:
            chain.append(current.id)
            parent = current.parent
            if parent is None:
                root_of[current.id] = current.id
                break
            if parent not in by_id:
                report.notes.append(
                    f"line {current.line}: run {current.id}'s parent {parent} is not in the "
                    "export; imported as a trace of its own"
                )
                root_of[current.id] = current.id
                break
            if parent in chain:
                report.notes.append(f"line {current.line}: run {current.id} is its own ancestor")
                root_of[current.id] = current.id
                break
            current = by_id[parent]
        found = root_of[current.id]
        for run_id in chain:
            root_of[run_id] = found
        return found

    traces: dict[str, list[_Run]] = defaultdict(list)
    for run in runs:
        traces[root(run)].append(run)
    return {key: sorted(members, key=lambda r: r.order_key) for key, members in traces.items()}


# -- one trace -------------------------------------------------------------------------


def _episode(
    root_id: str,
    members: list[_Run],
    env_id: str,
    reward_key: str | None,
    report: ImportReport,
) -> Episode | None:
    root = next(run for run in members if run.id == root_id)
    calls: list[ModelCall] = []
    for run in members:
        run_type = run.data["run_type"]
        try:
            if run_type == "llm":
                calls.append(_model_call(run))
            elif run_type == "tool" and calls:
                calls[-1].after.append(_tool_message(run))
        except (RunFormatError, ValidationError, TypeError, ValueError, KeyError) as exc:
            report.bad_lines.append(
                BadLine(run.line, f"{run_type} run {run.id}: {_short(str(exc))}")
            )
    error = root.data.get("error")
    transitions = episode_transitions(calls, ended_with_error=bool(error))
    if not transitions:
        report.notes.append(
            f"line {root.line}: trace {root_id} ({root.data.get('name')!r}) has no readable "
            "llm run; no episode"
        )
        return None
    scores = _feedback_scores(members)
    reward = _reward(scores, reward_key, root_id)
    metadata: dict[str, Any] = {
        "run_name": root.data.get("name"),
        "tags": list(root.data.get("tags") or []),
        "langsmith_trace_id": root.data.get("trace_id") or root_id,
        "feedback": scores,
        "reward_pending": reward is None,
    }
    if root.data.get("session_id"):
        metadata["langsmith_session_id"] = str(root.data["session_id"])
    if error:
        metadata["error"] = _short(str(error))
    if reward is not None:
        transitions[-1].reward = reward
    success = scores.get("success")
    fields: dict[str, Any] = {
        "episode_id": root_id,
        "env_id": env_id,
        "source": "import",
        "transitions": transitions,
        "total_reward": reward,
        "success": None if success is None else success >= 0.5,
        "ended_at": root.data.get("end_time"),
        "metadata": metadata,
    }
    if root.data.get("start_time"):
        fields["started_at"] = root.data["start_time"]
    return Episode.model_validate(fields)


def _model_call(run: _Run) -> ModelCall:
    inputs = run.data.get("inputs") or {}
    outputs = run.data.get("outputs") or {}
    if not isinstance(inputs, dict) or not isinstance(outputs, dict):
        raise RunFormatError("inputs and outputs must be objects")
    extra = run.data.get("extra") or {}
    params = (extra.get("invocation_params") or {}) if isinstance(extra, dict) else {}
    tools = list(params.get("tools") or inputs.get("tools") or [])
    messages: list[BaseMessage] | None = None
    prompt: str | None = None
    if "messages" in inputs:
        raw = inputs["messages"]
        if isinstance(raw, list) and raw and all(isinstance(m, list) for m in raw):
            raw = raw[0]  # one batch of messages per call
        messages = _messages(raw)
    elif isinstance(inputs.get("prompts"), list) and inputs["prompts"]:
        prompt = str(inputs["prompts"][0])
    elif isinstance(inputs.get("prompt"), str):
        prompt = inputs["prompt"]
    else:
        raise RunFormatError(f"no 'messages' or 'prompts' in inputs (keys: {sorted(inputs)[:8]})")
    answer, text, generation_info = _output(outputs)
    return ModelCall(
        run_id=run.id,
        messages=messages,
        prompt=prompt,
        tools=tools,
        name=run.data.get("name"),
        answer=answer,
        text=text,
        generation_info=generation_info,
    )


def _output(outputs: dict[str, Any]) -> tuple[AIMessage | None, str | None, dict[str, Any]]:
    """The model's answer: (message, text, generation_info)."""
    generations = outputs.get("generations")
    if isinstance(generations, list) and generations:
        first = generations[0]
        if isinstance(first, list):
            if not first:
                raise RunFormatError("outputs.generations holds an empty list")
            first = first[0]
        if not isinstance(first, dict):
            raise RunFormatError("outputs.generations[0] is not an object")
        info = first.get("generation_info") or {}
        if first.get("message") is not None:
            return _ai_message(first["message"]), None, dict(info)
        return None, str(first.get("text", "")), dict(info)
    choices = outputs.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        choice = choices[0]
        if "message" in choice:
            message = _ai_message(choice["message"])
            logprobs = choice.get("logprobs")
            info = {"logprobs": logprobs} if logprobs else {}
            return message, None, info
        return None, str(choice.get("text", "")), {}
    for key in ("output", "message"):
        if isinstance(outputs.get(key), dict):
            return _ai_message(outputs[key]), None, {}
    raise RunFormatError(
        f"no 'generations', 'choices' or 'output' in outputs (keys: {sorted(outputs)[:8]})"
    )


def _ai_message(raw: Any) -> AIMessage:
    (message,) = _messages([raw])
    if not isinstance(message, AIMessage):
        raise RunFormatError(f"the model's output is a {message.type} message, not an AI message")
    return message


def _tool_message(run: _Run) -> BaseMessage:
    outputs = run.data.get("outputs") or {}
    output = outputs.get("output", outputs) if isinstance(outputs, dict) else outputs
    if run.data.get("error") and not output:
        return ToolMessage(content=f"Error: {run.data['error']}", tool_call_id="", status="error")
    if isinstance(output, dict) and (output.get("type") == "tool" or "lc" in output):
        (message,) = _messages([output])
        return message
    text = output if isinstance(output, str) else json.dumps(output, default=str)
    return ToolMessage(content=text, tool_call_id="", name=run.data.get("name"))


def _messages(raw: Any) -> list[BaseMessage]:
    """Messages in any of the forms of the module docstring."""
    if not isinstance(raw, list):
        raise RunFormatError(f"messages must be a list, got {type(raw).__name__}")
    messages: list[BaseMessage] = []
    for item in raw:
        if not isinstance(item, dict):
            raise RunFormatError(f"a message is a {type(item).__name__}, not an object")
        if item.get("lc") == 1 and item.get("type") == "constructor":
            class_name = str((item.get("id") or [""])[-1])
            kwargs = dict(item.get("kwargs") or {})
            kind = _LC_TYPES.get(class_name)
            if kind is None:
                raise RunFormatError(f"unknown message class {class_name!r}")
            data = {k: v for k, v in kwargs.items() if k in _MESSAGE_FIELDS}
            messages.extend(messages_from_dict([{"type": kind, "data": data}]))
        elif "data" in item and isinstance(item.get("data"), dict) and "type" in item:
            messages.extend(messages_from_dict([item]))
        elif "role" in item or "type" in item:
            data = {k: v for k, v in item.items() if k in _MESSAGE_FIELDS | {"type"}}
            if item.get("type") == "tool" and "role" not in item:
                data = {k: v for k, v in data.items() if k != "type"}
                messages.append(ToolMessage(**data))
                continue
            messages.extend(convert_to_messages([data]))
        else:
            raise RunFormatError(f"a message without 'role', 'type' or 'lc' (keys {sorted(item)})")
    return [_as_final(message) for message in messages]


def _as_final(message: BaseMessage) -> BaseMessage:
    """A chunk class (``AIMessageChunk``) as its plain message class."""
    if isinstance(message, AIMessage) and type(message) is not AIMessage:
        return AIMessage(
            content=message.content,
            tool_calls=message.tool_calls,
            invalid_tool_calls=message.invalid_tool_calls,
            response_metadata=message.response_metadata,
            id=message.id,
        )
    return message


def _feedback_scores(members: Sequence[_Run]) -> dict[str, float]:
    """Feedback scores of a trace by key: the root's first, then other runs'."""
    scores: dict[str, float] = {}
    for run in members:
        stats = run.data.get("feedback_stats") or {}
        if isinstance(stats, dict):
            for key, value in stats.items():
                score = _score(value.get("avg") if isinstance(value, dict) else value)
                if score is not None:
                    scores.setdefault(str(key), score)
        for entry in run.data.get("feedback") or []:
            if isinstance(entry, dict) and entry.get("key") is not None:
                score = _score(entry.get("score"))
                if score is not None:
                    scores.setdefault(str(entry["key"]), score)
    return scores


def _reward(scores: dict[str, float], reward_key: str | None, root_id: str) -> float | None:
    if reward_key is not None:
        return scores.get(reward_key)
    keys = [key for key in scores if key != "success"]
    if len(keys) > 1:
        raise ValueError(
            f"trace {root_id} has feedback keys {sorted(keys)}; say which is the reward "
            "(reward_key=..., or --reward-key on the command line)"
        )
    return scores[keys[0]] if keys else None


def _score(value: Any) -> float | None:
    """A feedback score as a number (True counts 1), or None when it is not one."""
    return float(value) if isinstance(value, int | float) else None


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
