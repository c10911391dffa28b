"""Tool-call families: parse and render as vLLM's tool parsers read them, never raising on model text."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archer_agents.formats.chat_calls import read_tool_calls
from archer_agents.formats.tool_calls import ToolCall
from archer_agents.formats.tool_formats import (
    EMBEDDED,
    FAMILIES,
    HERMES,
    LLAMA3_JSON,
    VLLM_TOOL_PARSERS,
    EmbeddedFormat,
    ResponseTemplateFormat,
    family_for,
    tool_format,
)

NESTED = {
    "order": {"id": "#W1", "items": [1, 2.5, None, True, {"deep": ["x", {"y": "z"}]}]},
    "note": 'She said "hi" \\ then {left}; ok',
    "unicode": "café ☕ 日本語 \U0001f600",
    "empty": {},
}
CALLS = [ToolCall("get_order", NESTED), ToolCall("cancel", {"reason": "no; {really}"})]


# --- hermes ---------------------------------------------------------------------------------


def test_hermes_renders_the_qwen_template_form() -> None:
    text = HERMES.render([ToolCall("f", {"a": 1})], content="Looking.")
    assert text == 'Looking.\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'


def test_hermes_round_trip_several_calls_with_content() -> None:
    reply = HERMES.parse(HERMES.render(CALLS, content="Let me check both."))
    assert reply.error is None
    assert reply.calls == CALLS
    # vLLM's content is the text before the first <tool_call>, newline included.
    assert reply.content == "Let me check both.\n"


def test_hermes_without_tags_is_content() -> None:
    reply = HERMES.parse('The answer is {"name": "f"}.')
    assert (reply.content, reply.calls, reply.error) == ('The answer is {"name": "f"}.', [], None)


def test_hermes_unclosed_final_tag_still_calls() -> None:
    text = '<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n<tool_call>\n{"name": "b", "arguments": {"x": [1]}}'
    reply = HERMES.parse(text)
    assert reply.error is None
    assert reply.calls == [ToolCall("a", {}), ToolCall("b", {"x": [1]})]
    assert reply.content == ""


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            '<tool_call>\n{"name": "f", "arguments": {"a": 1}\n</tool_call>',
            "could not parse the JSON",
        ),
        ('<tool_call>\n{"name": "f", "argu', "not closed"),
        ('<tool_call>\n{"name": "f", "arguments": [1, 2]}\n</tool_call>', "must be an object"),
        ('<tool_call>\n{"name": "f", "arguments": "{}"}\n</tool_call>', "must be an object"),
        ('<tool_call>\n{"name": "", "arguments": {}}\n</tool_call>', '"name"'),
        ('<tool_call>\n{"arguments": {}}\n</tool_call>', '"name"'),
        ('<tool_call>\n{"name": "f"}\n</tool_call>', '"arguments"'),
        ("<tool_call>\n[1, 2]\n</tool_call>", "JSON object"),
        ("<tool_call></tool_call>", "empty"),
        ("To call a tool, write <tool_call> then JSON.", "could not parse the JSON"),
        ("<tool_call>" + "[" * 100_000 + "]" * 100_000 + "</tool_call>", "tool_call"),
        ('<tool_call>{"name": "f", "arguments": {"s": "\ud800"}}</tool_call><tool_call>x', "2"),
    ],
)
def test_hermes_malformed_is_an_error_naming_the_problem(text: str, needle: str) -> None:
    reply = HERMES.parse(text)
    assert reply.calls == []
    assert reply.error is not None and needle in reply.error
    assert reply.content == text  # as vLLM: the whole text, no calls


def test_hermes_one_bad_block_fails_the_reply_as_vllm() -> None:
    good = HERMES.render([ToolCall("f", {})])
    reply = HERMES.parse(good + "\n<tool_call>\n{oops}\n</tool_call>")
    assert reply.calls == [] and "<tool_call> 2" in (reply.error or "")


def test_hermes_lone_surrogates_survive() -> None:
    calls = [ToolCall("f", {"s": "\ud800x\udfff"})]
    assert HERMES.parse(HERMES.render(calls)).calls == calls
    assert HERMES.parse("\ud800 plain").content == "\ud800 plain"


def test_hermes_render_refuses_content_holding_a_tag_and_positional_args() -> None:
    with pytest.raises(ValueError, match="must not contain"):
        HERMES.render([ToolCall("f", {})], content="see <tool_call>")
    with pytest.raises(ValueError, match="bind_positional"):
        HERMES.render([ToolCall("f", {}, positional=[1])])


# --- llama3_json ------------------------------------------------------------------------------


def test_llama3_renders_the_llama31_template_form() -> None:
    text = LLAMA3_JSON.render([ToolCall("f", {"a": 1}), ToolCall("g", {})])
    assert text == '{"name": "f", "parameters": {"a": 1}}; {"name": "g", "parameters": {}}'


def test_llama3_round_trip_several_calls() -> None:
    reply = LLAMA3_JSON.parse(LLAMA3_JSON.render(CALLS))
    assert (reply.content, reply.calls, reply.error) == ("", CALLS, None)


@pytest.mark.parametrize(
    "text",
    [
        '<|python_tag|>{"name": "f", "parameters": {"a": {"b": 1}}}',
        '{"name": "f", "arguments": {"a": {"b": 1}}}',
        '{"name": "f", "arguments": {"a": {"b": 1}}, "parameters": {"ignored": 1}}',
        'Calling: {"name": "f", "parameters": {"a": {"b": 1}}} now',  # vLLM drops the prose
    ],
)
def test_llama3_accepts_tag_arguments_and_surrounding_text(text: str) -> None:
    reply = LLAMA3_JSON.parse(text)
    assert (reply.content, reply.calls, reply.error) == ("", [ToolCall("f", {"a": {"b": 1}})], None)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"name": "f", "parameters": {"a": 1}', "could not parse"),
        ('{"name": "f", "parameters": 3}', "must be an object"),
        ('{"name": "", "parameters": {}}', '"name"'),
        ('{"name": "f"}', '"arguments" or "parameters"'),
        ('{"answer": 42}', '"name"'),
        ('{"name": "f", "parameters": {}}; {"name": "g"', "JSON tool call 2"),
        ("<|python_tag|>get_weather(city='Paris')", "no JSON tool call"),
        ("{" * 100_000, "could not parse"),
        ('{"a": ' + "[" * 100_000, "could not parse"),
    ],
)
def test_llama3_malformed_is_an_error(text: str, needle: str) -> None:
    reply = LLAMA3_JSON.parse(text)
    assert reply.calls == [] and reply.content == text
    assert reply.error is not None and needle in reply.error


@pytest.mark.parametrize(
    "text",
    [
        "Sure. The set {1, 2} has two elements.",
        'JSON looks like {"answer": 1}.',
        "hello",
        "[" * 50_000 + "{" + "[" * 100_000,
    ],
)
def test_llama3_prose_with_braces_is_content(text: str) -> None:
    assert (LLAMA3_JSON.parse(text).content, LLAMA3_JSON.parse(text).error) == (text, None)


def test_llama3_render_refuses_content_beside_calls() -> None:
    with pytest.raises(ValueError, match="not both"):
        LLAMA3_JSON.render([ToolCall("f", {})], content="hi")
    assert LLAMA3_JSON.render([], content="hi") == "hi"


# --- embedded ---------------------------------------------------------------------------------


def test_embedded_wraps_the_project_parser() -> None:
    reply = EMBEDDED.parse('lookup("#W1")')
    assert reply == type(reply)("", [ToolCall("lookup", {}, ["#W1"])])
    text = EMBEDDED.render([ToolCall("f", {"b": 1, "a": "é"})])
    assert text == '{"arguments": {"a": "é", "b": 1}, "name": "f"}'
    assert EMBEDDED.parse(text).calls == [ToolCall("f", {"a": "é", "b": 1})]
    assert EMBEDDED.parse("Just words.").error is None
    assert "JSON" in (EMBEDDED.parse('{"name": ').error or "")
    assert EMBEDDED.parse("f(" + "[" * 100_000 + ")").error is not None
    with pytest.raises(ValueError, match="one tool call"):
        EMBEDDED.render(CALLS)


# --- families, detection, vLLM parser names ---------------------------------------------------

QWEN25_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}# Tools\\n<tools>{% for tool in tools %}"
    "{{ tool | tojson }}{% endfor %}</tools>\\nFor each function call, return a json object "
    "with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n'
    "{%- endif %}{%- for message in messages %}<|im_start|>{{ message.role }}\\n"
    "{{ message.content }}<|im_end|>\\n{%- endfor %}"
)
LLAMA31_TEMPLATE = (
    "{{- bos_token }}{%- if custom_tools is defined %}{%- set tools = custom_tools %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{%- if builtin_tools is defined %}{{- 'Environment: ipython\\n' }}{%- endif %}"
    '{{- \'Respond in the format {"name": function name, "parameters": dictionary of argument '
    "name and its value}.' }}{{- '<|eot_id|>' }}"
    "{%- if builtin_tools is defined and tool_call.name in builtin_tools %}"
    "{{- '<|python_tag|>' + tool_call.name + '.call(' }}{%- endif %}"
)
LLAMA32_NO_PYTHON_TAG = (
    '<|start_header_id|>assistant<|end_header_id|>\\n\\n{{- \'{"name": "\' + tool_call.name '
    "+ '\", ' }}{{- '\"parameters\": ' }}{{- tool_call.arguments | tojson }}{{- '}' }}<|eot_id|>"
)
CHATML_PLAIN = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\\n{{ m.content }}<|im_end|>\\n{% endfor %}"
)


class _Tokenizer:
    def __init__(self, chat_template: Any = None, response_template: Any = None) -> None:
        self.chat_template = chat_template
        self.response_template = response_template

    def parse_response(self, text: str, schema: Any = None, *, prefix: Any = None) -> Any:
        from transformers.utils.chat_parsing import parse_response

        return parse_response(text, self.response_template, prefix=prefix)


HERMES_RESPONSE_TEMPLATE = {
    "version": 1,
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "content": {},
        "tool_calls": {
            "open": "<tool_call>",
            "close": "</tool_call>",
            "content": "json",
            "repeats": True,
            "transform": {"type": "function", "function": "{content}"},
        },
    },
}


@pytest.mark.parametrize(
    ("template", "family"),
    [
        (QWEN25_TEMPLATE, "hermes"),
        (LLAMA31_TEMPLATE, "llama3_json"),
        (LLAMA32_NO_PYTHON_TAG, "llama3_json"),
        (CHATML_PLAIN, "embedded"),
        ("", "embedded"),
        ({"default": CHATML_PLAIN, "tool_use": QWEN25_TEMPLATE}, "hermes"),
    ],
)
def test_family_from_template_text(template: Any, family: str) -> None:
    assert family_for(template).name == family
    assert family_for(_Tokenizer(template)).name == family


def test_family_override_and_unknown_name() -> None:
    assert family_for(QWEN25_TEMPLATE, name="llama3_json") is LLAMA3_JSON
    assert tool_format("hermes") is HERMES
    with pytest.raises(ValueError, match="known: hermes, llama3_json, embedded, response_template"):
        tool_format("mistral")
    with pytest.raises(ValueError, match="tokenizer"):
        tool_format("response_template")


def test_vllm_parser_names() -> None:
    assert VLLM_TOOL_PARSERS == {"hermes": "hermes", "llama3_json": "llama3_json"}
    assert (HERMES.vllm_parser, LLAMA3_JSON.vllm_parser, EMBEDDED.vllm_parser) == (
        "hermes",
        "llama3_json",
        None,
    )
    assert set(FAMILIES) >= set(VLLM_TOOL_PARSERS)


def test_response_template_family_reads_with_the_tokenizer() -> None:
    tokenizer = _Tokenizer(CHATML_PLAIN, HERMES_RESPONSE_TEMPLATE)
    fmt = family_for(tokenizer)
    assert isinstance(fmt, ResponseTemplateFormat) and fmt.vllm_parser is None
    reply = fmt.parse(HERMES.render(CALLS[1:], content="Checking."))
    assert reply.error is None and reply.calls == CALLS[1:] and reply.content == "Checking."
    assert fmt.parse(HERMES.render(CALLS)).calls == CALLS
    assert fmt.parse("plain").content == "plain"
    bad = fmt.parse('<tool_call>\n{"name": "f", "argu')
    assert bad.calls == [] and "could not read the reply" in (bad.error or "")
    assert "arguments" in (
        fmt.parse('<tool_call>{"name": "f", "arguments": 1}</tool_call>').error or ""
    )
    # A <tool_call> in the chat template names vLLM's parser, so it wins over the response template.
    assert family_for(_Tokenizer(QWEN25_TEMPLATE, HERMES_RESPONSE_TEMPLATE)) is HERMES


def test_response_template_render_uses_the_chat_template() -> None:
    class Templated(_Tokenizer):
        eos_token = "<|im_end|>"

        def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> str:
            text = "".join(
                f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages[:1]
            )
            for message in messages[1:]:
                text += (
                    "<|im_start|>assistant\n"
                    + HERMES.render(
                        [
                            ToolCall(c["function"]["name"], c["function"]["arguments"])
                            for c in message.get("tool_calls", [])
                        ],
                        message["content"],
                    )
                    + "<|im_end|>\n"
                )
            return text + ("<|im_start|>assistant\n" if kwargs.get("add_generation_prompt") else "")

    fmt = ResponseTemplateFormat(Templated(CHATML_PLAIN, HERMES_RESPONSE_TEMPLATE))
    assert fmt.render(CALLS, content="Hi") == HERMES.render(CALLS, content="Hi")
    assert fmt.parse(fmt.render(CALLS)).calls == CALLS


# --- read_tool_calls with a family ------------------------------------------------------------

TOOLS = [
    {"name": "get_order", "parameters": {"properties": {"order": {}, "note": {}}}},
    {"name": "cancel", "parameters": {"properties": {"reason": {}}}},
]


def test_read_tool_calls_hermes_gives_several_calls() -> None:
    text = HERMES.render(CALLS, content="Both.")
    content, calls, invalid, error = read_tool_calls(text, TOOLS, "auto", HERMES)
    assert (content, invalid, error) == ("Both.\n", [], None)
    assert [(c["name"], c["args"]) for c in calls] == [(c.name, c.arguments) for c in CALLS]
    assert len({c["id"] for c in calls}) == 2


def test_read_tool_calls_llama3_and_errors() -> None:
    _, calls, _, _ = read_tool_calls(LLAMA3_JSON.render(CALLS), TOOLS, None, LLAMA3_JSON)
    assert [c["name"] for c in calls] == ["get_order", "cancel"]
    content, calls, invalid, error = read_tool_calls('{"name": "f"', TOOLS, None, LLAMA3_JSON)
    assert calls == [] and invalid[0]["error"] == error and "could not parse" in (error or "")
    content, calls, invalid, error = read_tool_calls("Hello!", TOOLS, "required", HERMES)
    assert calls == [] and "hermes" in (error or "")
    assert read_tool_calls("Hello!", TOOLS, "auto", HERMES) == ("Hello!", [], [], None)
    _, calls, _, error = read_tool_calls(HERMES.render(CALLS), TOOLS, "cancel", HERMES)
    assert calls == [] and "expected a call to cancel" in (error or "")


def test_read_tool_calls_embedded_is_todays_behaviour() -> None:
    for text, choice in [
        ('lookup("#W1")', None),
        ("Hi", "auto"),
        ("Hi", "required"),
        ("{bad", None),
    ]:
        old = read_tool_calls(text, TOOLS, choice)
        new = read_tool_calls(text, TOOLS, choice, EmbeddedFormat())
        strip = [
            (c, [{k: v for k, v in d.items() if k != "id"} for d in ds])
            for c, ds in [(0, old[1]), (1, new[1])]
        ]
        assert (old[0], old[3]) == (new[0], new[3]) and strip[0][1] == strip[1][1]


# --- properties -------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)
ARGUMENTS = st.dictionaries(st.text(), JSON_VALUES, max_size=5)
NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,20}", fullmatch=True)
CALL_LISTS = st.lists(st.builds(ToolCall, NAMES, ARGUMENTS), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CALL_LISTS)
def test_property_hermes_round_trip(calls: list[ToolCall]) -> None:
    text = HERMES.render(calls)
    # A string holding "</tool_call>" ends the block early, for vLLM as for us.
    if text.count("</tool_call>") == len(calls):
        assert HERMES.parse(text).calls == calls


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CALL_LISTS)
def test_property_llama3_round_trip(calls: list[ToolCall]) -> None:
    assert LLAMA3_JSON.parse(LLAMA3_JSON.render(calls)).calls == calls


TEXTS = st.text() | st.lists(
    st.sampled_from(
        [
            "<tool_call>",
            "</tool_call>",
            "<|python_tag|>",
            "{",
            "}",
            "[",
            "]",
            '"',
            ":",
            ",",
            ";",
            '"name"',
            '"arguments"',
            '"parameters"',
            "f(",
            ")",
            "\\",
            "1",
            "\ud800",
            "x",
            "\n",
        ]
    ),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(TEXTS)
def test_property_parse_never_raises(text: str) -> None:
    for fmt in (HERMES, LLAMA3_JSON, EMBEDDED):
        reply = fmt.parse(text)
        assert isinstance(reply.content, str)
        assert not (reply.calls and reply.error)
        for call in reply.calls:
            assert isinstance(call.name, str) and call.name
            assert isinstance(call.arguments, dict)
            json.dumps(call.arguments)
