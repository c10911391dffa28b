"""How each open model family writes tool calls, read exactly as vLLM reads them.

An open model answers tool-calling requests well only in the format it was
tuned on, and training, our environments and a vLLM server started with
``--enable-auto-tool-choice --tool-call-parser <parser>`` must all agree on what
a reply means. So each family is one `ToolFormat` with two methods:

- ``parse(text) -> Reply``: the reply's content, its `ToolCall` list, and, when the
  text tried to call a tool and failed, an error message naming the problem (fit
  to show the model as an observation). It never raises on model output.
- ``render(calls, content="") -> str``: the exact text the model would emit, to
  write scripted experts' actions for behaviour cloning in the model's own
  format. A developer mistake (content a family cannot carry, positional
  arguments) raises `ValueError` with the fix.

Families (`tool_format` by name, `family_for` from a tokenizer or template):

- ``hermes`` (Qwen2.5/Qwen3, Hermes, and ChatML models given our tool
  template): ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``,
  one or more, one a line. Read with vLLM's ``hermes`` regex,
  ``<tool_call>(.*?)</tool_call>|<tool_call>(.*)``, so an unclosed last tag (the
  end of generation cut the closing tag) still holds a call; the content is the
  text before the first ``<tool_call>``, as vLLM's.
- ``llama3_json`` (Llama 3.1/3.2/3.3): ``{"name": ..., "parameters": {...}}``
  (``"arguments"`` also accepted, and preferred when both are there, as vLLM),
  optionally after ``<|python_tag|>``, several separated by ``; ``. Read as
  vLLM's ``llama3_json``: every ``{`` outside an object already read starts a
  JSON object that must be a call; the text around the calls is dropped.
- ``embedded``: the project's own forms (`archer_agents.formats.tool_calls`):
  one JSON object or one Python call per utterance.
- ``response_template``: a tokenizer carrying a transformers response template
  (``tokenizer.response_template``, transformers 5.x), read with
  ``tokenizer.parse_response``.

Deliberate differences from vLLM, all stricter, so that what vLLM would hand a
client as a malformed call is a parse error here, shown to the model: the
arguments must be a JSON object (vLLM passes a string or list through as the
arguments' JSON) and the name a non-empty string. Where vLLM falls back to
plain content after a failed call, `Reply` keeps the whole text as content too,
and adds the error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from archer_agents.formats.prompts import render_tool_call
from archer_agents.formats.tool_calls import (
    ActionParseError,
    ToolCall,
    check_call,
    parse_tool_call,
)

_MODEL_TEXT_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError)
"""What reading model text (JSON, templates) may raise; all of it is the model's mistake."""


@dataclass
class Reply:
    """A model reply read by a `ToolFormat`.

    ``content`` is the text meant for the user (the whole text when no call was
    read), ``calls`` the tool calls in order, and ``error`` a message naming the
    problem when the text tried to call a tool and failed (then ``calls`` is
    empty: a reply is read whole or not at all, as vLLM does).
    """

    content: str
    calls: list[ToolCall] = field(default_factory=list)
    error: str | None = None


class ToolFormat:
    """One model family's tool-call format: `parse` and `render`.

    ``name`` is the family's name for `tool_format`; ``vllm_parser`` is the
    ``--tool-call-parser`` a vLLM server needs to read replies the same way
    (None where vLLM has no matching parser).
    """

    name: str = ""
    vllm_parser: str | None = None

    def parse(self, text: str) -> Reply:
        """Read a reply; never raises on model output."""
        raise NotImplementedError

    def render(self, calls: Sequence[ToolCall], content: str = "") -> str:
        """The exact text the model would emit for ``content`` then ``calls``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vllm_parser={self.vllm_parser!r})"


def _keyword_only(calls: Sequence[ToolCall], family: str) -> None:
    for call in calls:
        if call.positional:
            raise ValueError(
                f"{family} tool calls carry named arguments only; bind {call.name}'s positional "
                "arguments first (formats.tool_calls.bind_positional)."
            )


def _json_error(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return type(exc).__name__


def _call_from_object(payload: Any, where: str, argument_keys: tuple[str, ...]) -> ToolCall | str:
    """A `ToolCall` from a decoded JSON object, or an error message naming the problem.

    The call passes `check_call` as an embedded one does (nesting depth), so
    every family refuses the same pathologically nested arguments.
    """
    if not isinstance(payload, dict):
        return f"Error: {where} must be a JSON object with a name and arguments."
    name = payload.get("name")
    if not isinstance(name, str) or not name.strip():
        return f'Error: {where} needs a "name" string.'
    key = next((key for key in argument_keys if key in payload), None)
    if key is None:
        keys = " or ".join(f'"{key}"' for key in argument_keys)
        return f"Error: {where} ({name}) needs {keys}."
    arguments = payload[key]
    if not isinstance(arguments, dict):
        return f'Error: "{key}" in {where} ({name}) must be an object of named arguments.'
    call = ToolCall(name=name, arguments=arguments)
    try:
        check_call(call)
    except ActionParseError as exc:
        return str(exc)
    return call


class HermesFormat(ToolFormat):
    """``<tool_call>`` blocks of JSON, as vLLM's ``hermes`` parser reads them."""

    name = "hermes"
    vllm_parser = "hermes"
    start = "<tool_call>"
    end = "</tool_call>"
    pattern = re.compile(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", re.DOTALL)

    def parse(self, text: str) -> Reply:
        """Every ``<tool_call>`` block; content is the text before the first one.

        A reply that holds ``<tool_call>`` at all tried to call (the tag is a
        special token for Qwen), so a block that is not a call is an error.
        """
        if self.start not in text:
            return Reply(text)
        calls = []
        for index, (closed, unclosed) in enumerate(self.pattern.findall(text), start=1):
            where = f"<tool_call> {index}"
            body = closed or unclosed
            if not body.strip():
                return Reply(text, error=f"Error: {where} is empty; write a JSON object inside it.")
            try:
                payload = json.loads(body)
            except _MODEL_TEXT_ERRORS as exc:
                hint = "" if closed else f" (it is not closed by {self.end})"
                return Reply(
                    text,
                    error=f"Error: could not parse the JSON in {where}{hint} ({_json_error(exc)}).",
                )
            call = _call_from_object(payload, where, ("arguments",))
            if isinstance(call, str):
                return Reply(text, error=call)
            calls.append(call)
        return Reply(text[: text.find(self.start)], calls)

    def render(self, calls: Sequence[ToolCall], content: str = "") -> str:
        """Content, then one ``<tool_call>`` block per call, one a line.

        As the Qwen2.5 template (and ours) writes an assistant turn after the
        ``<|im_start|>assistant\\n`` prompt, so `parse` gives back the calls and
        ``content + "\\n"`` (vLLM keeps the newline before the first tag).
        """
        _keyword_only(calls, self.name)
        if self.start in content:
            raise ValueError(f"content must not contain {self.start}: it would be read as a call.")
        blocks = []
        for call in calls:
            payload = {"name": call.name, "arguments": call.arguments}
            blocks.append(f"{self.start}\n{json.dumps(payload, ensure_ascii=False)}\n{self.end}")
        return "\n".join(([content] if content else []) + blocks)


class Llama3JsonFormat(ToolFormat):
    """Bare JSON calls, as vLLM's ``llama3_json`` parser reads them."""

    name = "llama3_json"
    vllm_parser = "llama3_json"
    python_tag = "<|python_tag|>"
    _decoder = json.JSONDecoder()

    def parse(self, text: str) -> Reply:
        """Each JSON object in the text as a call; content is empty when there are calls.

        As vLLM: a ``{`` inside an object already read is skipped, and one object
        that is not a call fails the whole reply. The reply tried to call when it
        starts with ``<|python_tag|>`` or ``{`` (where vLLM's streaming starts
        reading calls) or an earlier object was a call; otherwise a failure is
        plain content (prose that mentions a brace).
        """
        if self.python_tag not in text and "{" not in text:
            return Reply(text)
        stripped = text.lstrip()
        tried = stripped.startswith(self.python_tag) or stripped.startswith("{")
        calls: list[ToolCall] = []
        end = -1
        for match in re.finditer(r"\{", text):
            start = match.start()
            if start <= end:
                continue
            where = f"JSON tool call {len(calls) + 1}"
            try:
                payload, end = self._decoder.raw_decode(text, start)
            except _MODEL_TEXT_ERRORS as exc:
                if not (tried or calls):
                    return Reply(text)
                error = f"Error: could not parse the {where} ({_json_error(exc)})."
                return Reply(text, error=error)
            call = _call_from_object(payload, where, ("arguments", "parameters"))
            if isinstance(call, str):
                if not (tried or calls):
                    return Reply(text)
                return Reply(text, error=call)
            calls.append(call)
        if not calls:
            if tried:
                return Reply(text, error=f"Error: no JSON tool call after {self.python_tag}.")
            return Reply(text)
        return Reply("", calls)

    def render(self, calls: Sequence[ToolCall], content: str = "") -> str:
        """``{"name": ..., "parameters": {...}}`` per call, joined by ``; `` (Llama 3.1's form).

        A Llama 3 reply is either content or calls: vLLM drops the text around
        calls, so content beside calls raises rather than vanish silently.
        """
        _keyword_only(calls, self.name)
        if calls and content:
            raise ValueError(
                "llama3_json replies carry content or tool calls, not both (vLLM's llama3_json "
                "parser drops the text around calls); render them as two replies."
            )
        if not calls:
            return content
        return "; ".join(
            json.dumps({"name": call.name, "parameters": call.arguments}, ensure_ascii=False)
            for call in calls
        )


def looks_like_embedded_call(text: str) -> bool:
    """An utterance that tried to be an embedded call (JSON object or ``name(...)``)."""
    stripped = text.strip()
    return stripped.startswith("{") or re.match(r"^[A-Za-z_]\w*\(", stripped) is not None


class EmbeddedFormat(ToolFormat):
    """The project's own forms: one JSON object or Python call per utterance."""

    name = "embedded"
    vllm_parser = None

    def parse(self, text: str) -> Reply:
        """`parse_tool_call`'s reading; a failure is an error only when the text looked like a call.

        The call may carry positional arguments (``lookup("#W1")``); bind them
        with `archer_agents.formats.tool_calls.bind_positional`.
        """
        try:
            return Reply("", [parse_tool_call(text)])
        except ActionParseError as exc:
            return Reply(text, error=str(exc) if looks_like_embedded_call(text) else None)
        except _MODEL_TEXT_ERRORS as exc:  # e.g. a parser recursion limit on absurd nesting
            return Reply(text, error=f"Error: the action is not a tool call ({_json_error(exc)}).")

    def render(self, calls: Sequence[ToolCall], content: str = "") -> str:
        """`render_tool_call`'s canonical JSON for the one call, or the content if none."""
        _keyword_only(calls, self.name)
        if len(calls) > 1 or (calls and content):
            raise ValueError(
                "an embedded utterance is one tool call or plain content; render several calls "
                "as several utterances."
            )
        return render_tool_call(calls[0].name, calls[0].arguments) if calls else content


class ResponseTemplateFormat(ToolFormat):
    """A tokenizer's own response template (transformers 5.x ``parse_response``).

    ``prefix`` is the prompt text before generation, for templates that pre-write
    part of the reply (an opening ``<think>``); "" reads the reply alone. There
    is no vLLM parser for this family: serve such a model through our server,
    or name the vLLM parser its family matches.
    """

    name = "response_template"
    vllm_parser = None

    def __init__(self, tokenizer: Any, prefix: str = "") -> None:
        if getattr(tokenizer, "response_template", None) is None or not hasattr(
            tokenizer, "parse_response"
        ):
            raise ValueError(
                "the response_template family needs a tokenizer with a response_template and "
                "parse_response (transformers 5.x); pick another family with tool_format(name)."
            )
        self.tokenizer = tokenizer
        self.prefix = prefix

    def parse(self, text: str) -> Reply:
        """The tokenizer's parsed message as a `Reply`; its parse failures are the model's."""
        try:
            message = self.tokenizer.parse_response(text, prefix=self.prefix)
        except _MODEL_TEXT_ERRORS as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return Reply(text, error=f"Error: could not read the reply ({reason[:200]}).")
        if not isinstance(message, dict):
            return Reply(text, error="Error: could not read the reply.")
        content = message.get("content") or ""
        content = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        raw_calls = message.get("tool_calls") or []
        calls = []
        for index, raw in enumerate(raw_calls if isinstance(raw_calls, list) else [raw_calls], 1):
            payload = raw.get("function", raw) if isinstance(raw, dict) else raw
            if isinstance(payload, dict) and isinstance(payload.get("arguments"), str):
                try:  # OpenAI style: arguments as a JSON string
                    payload = {**payload, "arguments": json.loads(payload["arguments"])}
                except _MODEL_TEXT_ERRORS as exc:
                    reason = _json_error(exc)
                    error = f"Error: could not parse tool call {index}'s arguments ({reason})."
                    return Reply(text, error=error)
            call = _call_from_object(payload, f"tool call {index}", ("arguments",))
            if isinstance(call, str):
                return Reply(text, error=call)
            calls.append(call)
        return Reply(content if calls else text, calls)

    def render(self, calls: Sequence[ToolCall], content: str = "") -> str:
        """What the tokenizer's chat template writes for this turn after its generation prompt.

        Rendered as the difference between a one-message conversation with the
        assistant turn and the same conversation's generation prompt, with the
        end-of-turn token (``eos_token``) and trailing whitespace cut.
        """
        _keyword_only(calls, self.name)
        history = [{"role": "user", "content": "."}]
        turn: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            turn["tool_calls"] = [
                {"type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                for call in calls
            ]
        prompt = self.tokenizer.apply_chat_template(
            history, tokenize=False, add_generation_prompt=True
        )
        full = self.tokenizer.apply_chat_template([*history, turn], tokenize=False)
        if not full.startswith(prompt):
            raise ValueError(
                "this chat template does not write an assistant turn after its generation prompt; "
                "render with the family the template matches (tool_format(name))."
            )
        reply = full[len(prompt) :].rstrip()
        eos = getattr(self.tokenizer, "eos_token", None)
        if isinstance(eos, str) and eos and reply.endswith(eos):
            reply = reply[: -len(eos)].rstrip()
        return reply


HERMES = HermesFormat()
LLAMA3_JSON = Llama3JsonFormat()
EMBEDDED = EmbeddedFormat()
FAMILIES = ("hermes", "llama3_json", "embedded", "response_template")
"""The family names `tool_format` knows."""
VLLM_TOOL_PARSERS = {HERMES.name: "hermes", LLAMA3_JSON.name: "llama3_json"}
"""Family -> vLLM ``--tool-call-parser``, for the families vLLM reads natively."""


def tool_format(name: str, tokenizer: Any = None) -> ToolFormat:
    """The family called ``name`` (``response_template`` needs the ``tokenizer``)."""
    fixed = {HERMES.name: HERMES, LLAMA3_JSON.name: LLAMA3_JSON, EMBEDDED.name: EMBEDDED}
    if name in fixed:
        return fixed[name]
    if name == ResponseTemplateFormat.name:
        if tokenizer is None:
            raise ValueError("tool_format('response_template') needs the tokenizer= argument.")
        return ResponseTemplateFormat(tokenizer)
    raise ValueError(f"unknown tool-call format {name!r}; known: {', '.join(FAMILIES)}.")


def _template_text(template: Any) -> str:
    if isinstance(template, str):
        return template
    if isinstance(template, dict):  # named templates, e.g. {"default": ..., "tool_use": ...}
        return "\n".join(str(value) for value in template.values())
    return ""


def _is_llama3_template(template: str) -> bool:
    if "<|python_tag|>" in template:
        return True
    llama3 = "<|eot_id|>" in template or "<|start_header_id|>" in template
    return llama3 and '"parameters"' in template


def family_for(tokenizer_or_template: Any, name: str | None = None) -> ToolFormat:
    """The tool-call family a tokenizer (or chat template text) writes.

    ``name`` overrides detection (see `tool_format`). Otherwise, from the chat
    template: ``<tool_call>`` -> hermes; ``<|python_tag|>`` or a Llama 3 template
    with ``"parameters"`` calls -> llama3_json; then a tokenizer with a
    ``response_template`` -> response_template; otherwise embedded. The
    template's markers come first because they name a vLLM parser, so a vLLM
    server reads the model's replies the same way.
    """
    tokenizer = None if isinstance(tokenizer_or_template, str | dict) else tokenizer_or_template
    if name is not None:
        return tool_format(name, tokenizer)
    template = _template_text(
        tokenizer_or_template if tokenizer is None else getattr(tokenizer, "chat_template", None)
    )
    if HermesFormat.start in template:
        return HERMES
    if _is_llama3_template(template):
        return LLAMA3_JSON
    if tokenizer is not None:
        try:
            return ResponseTemplateFormat(tokenizer)
        except ValueError:
            pass
    return EMBEDDED
