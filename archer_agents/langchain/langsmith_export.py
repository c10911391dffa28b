"""Reading a LangSmith run export: its runs, their traces, and the messages in them.

A LangSmith export is JSONL, one run a line: ``id``, ``trace_id``,
``parent_run_id``, ``run_type`` ("llm", "chain", "tool", ...), ``name``,
``inputs``, ``outputs``, ``error``, ``start_time``, ``dotted_order``,
``extra`` (the model's ``invocation_params``, tools included), and feedback
as ``feedback_stats`` (``{key: {"n", "avg"}}``) or a ``feedback`` list
(``[{"key", "score"}]``). A line may also hold a whole run tree, children
nested under ``child_runs``. `read_runs` flattens the runs and `group_traces`
groups them by trace (a root run and its descendants), in execution order;
`model_call` and `tool_message` read an ``llm`` or ``tool`` run for the
recorder. `archer_agents.langchain.langsmith_import` turns the traces into
episodes.

Messages are read in the forms LangChain and LangSmith write: LangChain's
serialised constructors (``{"lc": 1, "id": [..., "HumanMessage"], "kwargs":
{...}}``), ``{"type", "data"}`` dicts, and OpenAI ``{"role", "content"}``
messages (inputs ``messages``; outputs ``generations`` or ``choices``). They
are never deserialised with `langchain_core.load`, so an export cannot
instantiate arbitrary classes.

Nothing is dropped silently: a line that is not JSON, not a run, or a run that
cannot be read is reported with its line number in `ImportReport.bad_lines`,
and a run whose parent is missing from the export is imported as a trace of
its own and noted.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ToolMessage,
    convert_to_messages,
    messages_from_dict,
)

from archer_agents.langchain.transitions import ModelCall

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
class ExportedRun:
    """One run of the export and the line it was read from (a nested run shares its root's)."""

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


# -- reading runs ----------------------------------------------------------------------


def read_runs(lines: Iterable[bytes | str], report: ImportReport) -> Iterator[ExportedRun]:
    """Every run of the export, nested runs flattened; unreadable lines go to ``report``."""
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
        flat: list[ExportedRun] = []
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


def _flatten(
    payload: dict[str, Any], parent: str | None, line: int, out: list[ExportedRun]
) -> str | None:
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
    out.append(ExportedRun(line, data))
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


def group_traces(runs: Sequence[ExportedRun], report: ImportReport) -> dict[str, list[ExportedRun]]:
    """Runs by the id of their trace's root run, each list in execution order."""
    by_id = {run.id: run for run in runs}
    root_of: dict[str, str] = {}

    def root(run: ExportedRun) -> str:
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

    traces: dict[str, list[ExportedRun]] = defaultdict(list)
    for run in runs:
        traces[root(run)].append(run)
    return {key: sorted(members, key=lambda r: r.order_key) for key, members in traces.items()}


# -- reading one run ---------------------------------------------------------------------


def model_call(run: ExportedRun) -> ModelCall:
    """An ``llm`` run as the `ModelCall` the recorder builds transitions from."""
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


def tool_message(run: ExportedRun) -> BaseMessage:
    """A ``tool`` run as the tool message that followed the model call before it."""
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
