"""Tool-calling chat templates of the open model families, as data.

A model answers tool-calling requests well only in the format it was tuned on,
and a server (ours or vLLM) must render a request exactly as training did, so
the Jinja templates live here, in one place, and are written into a model's
``tokenizer_config.json`` (``tokenizer.chat_template``) by the model builders
(`archer_agents.policies.base_models`, `archer_agents.policies.chat_models`).

- `CHATML_TOOLS`: ChatML with Hermes-style tool calls, the Qwen2.5 convention
  that vLLM's ``hermes`` tool parser reads. Tools are listed in the system turn
  as JSON inside ``<tools></tools>``; each assistant call is
  ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``; tool
  results come back as a user turn of ``<tool_response>`` blocks (consecutive
  tool messages share one turn). For SmolLM2, Qwen2 and any ChatML model.
- `LLAMA3_JSON_TOOLS`: Llama 3.1's JSON tool calling (vLLM's ``llama3_json``
  parser): tools as indented JSON in the first user turn (or the system turn,
  with ``tools_in_user_message=false``), a call as
  ``{"name": ..., "parameters": {...}}`` ended by ``<|eot_id|>``, results in an
  ``ipython`` turn as ``{"output": ...}``.

Both accept a call's arguments as a mapping or as an already-encoded JSON
string (OpenAI requests send strings), and render either one the same way.
`chatml_tools_template` makes the ChatML template with another default system
message (each ChatML family has its own).
"""

from __future__ import annotations

import json

QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
"""Qwen2.5's system message when a conversation has none."""
SMOLLM_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
"""SmolLM2-Instruct's system message when a conversation has none."""

# The arguments of a call: a mapping is written as JSON, a string is already JSON.
_CHATML_ARGUMENTS = (
    "{%- if tool_call.arguments is string %}{{- tool_call.arguments }}"
    "{%- else %}{{- tool_call.arguments | tojson }}{%- endif %}"
)

_CHATML_TOOLS = (
    """{%- if messages and messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = DEFAULT_SYSTEM %}
{%- endif %}
{{- '<|im_start|>system\\n' + system_message }}
{%- if tools %}
    {{- '\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user '
        'query.\\n\\n' }}
    {{- 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}
    {%- for tool in tools %}
        {{- '\\n' + (tool | tojson) }}
    {%- endfor %}
    {{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and '
        'arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n'
        '{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call>' }}
{%- endif %}
{{- '<|im_end|>\\n' }}
{%- for message in messages %}
    {%- if message.role == 'tool' %}
        {%- if loop.first or loop.previtem.role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
        {%- if loop.last or loop.nextitem.role != 'tool' %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- elif message.role == 'assistant' and message.tool_calls %}
        {{- '<|im_start|>assistant' }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' + tool_call.name + '", "arguments": ' }}
            """
    + _CHATML_ARGUMENTS
    + """
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\\n' + (message.content or '') + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""
)


def chatml_tools_template(default_system: str = QWEN_DEFAULT_SYSTEM) -> str:
    """`CHATML_TOOLS` whose conversations without a system message get ``default_system``."""
    return (
        "{%- set DEFAULT_SYSTEM = " + json.dumps(default_system) + " %}\n" + _CHATML_TOOLS.lstrip()
    )


CHATML_TOOLS = chatml_tools_template(QWEN_DEFAULT_SYSTEM)
"""ChatML with Hermes-style tool calls (Qwen2.5's convention; vLLM's ``hermes`` parser)."""

SMOLLM2_CHATML_TOOLS = chatml_tools_template(SMOLLM_DEFAULT_SYSTEM)
"""`CHATML_TOOLS` with SmolLM2-Instruct's own default system message."""

LLAMA3_JSON_TOOLS = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if tools_in_user_message is not defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if date_string is not defined %}
    {%- set date_string = '26 Jul 2024' %}
{%- endif %}
{%- if not tools %}
    {%- set tools = none %}
{%- endif %}
{%- macro text_of(content) %}
    {%- if content is string %}
        {{- content | trim }}
    {%- else %}
        {{- content | selectattr('type', 'equalto', 'text') | map(attribute='text')
            | map('trim') | join('\\n') }}
    {%- endif %}
{%- endmacro %}
{%- set tool_instructions = 'Respond in the format {"name": function name, "parameters": '
    'dictionary of argument name and its value}. Do not use variables.\\n\\n' %}
{%- if messages and messages[0]['role'] == 'system' %}
    {%- set system_message = text_of(messages[0]['content']) %}
    {%- set messages = messages[1:] %}
{%- elif tools is not none %}
    {%- set system_message = 'You are a helpful assistant with tool calling capabilities. Only '
        'reply with a tool call if the function exists in the library provided by the user. If '
        "it doesn't exist, just reply directly in natural language. When you receive a tool "
        'call response, use the output to format an answer to the original user question.' %}
{%- else %}
    {%- set system_message = '' %}
{%- endif %}
{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}
{%- if tools is not none %}
    {{- 'Environment: ipython\\n' }}
{%- endif %}
{{- 'Cutting Knowledge Date: December 2023\\nToday Date: ' + date_string + '\\n\\n' }}
{%- if tools is not none and not tools_in_user_message %}
    {{- 'You have access to the following functions. To call a function, please respond with '
        'JSON for a function call. ' + tool_instructions }}
    {%- for tool in tools %}
        {{- (tool | tojson(indent=4)) + '\\n\\n' }}
    {%- endfor %}
{%- endif %}
{{- system_message + '<|eot_id|>' }}
{%- if tools is not none and tools_in_user_message %}
    {%- if not messages %}
        {{- raise_exception('Tools go into the first user message, and there is none.') }}
    {%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' }}
    {{- 'Given the following functions, please respond with a JSON for a function call with its '
        'proper arguments that best answers the given prompt.\\n\\n' + tool_instructions }}
    {%- for tool in tools %}
        {{- (tool | tojson(indent=4)) + '\\n\\n' }}
    {%- endfor %}
    {{- text_of(messages[0]['content']) + '<|eot_id|>' }}
    {%- set messages = messages[1:] %}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'tool' or message.role == 'ipython' %}
        {{- '<|start_header_id|>ipython<|end_header_id|>\\n\\n' }}
        {{- {'output': text_of(message.content)} | tojson }}
        {{- '<|eot_id|>' }}
    {%- elif message.tool_calls %}
        {%- if message.tool_calls | length > 1 %}
            {{- raise_exception('Llama 3.1 makes one tool call per turn.') }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0] %}
        {%- if tool_call.function is defined %}
            {%- set tool_call = tool_call.function %}
        {%- endif %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
        {{- '{"name": "' + tool_call.name | trim + '", "parameters": ' }}
        {%- if tool_call.arguments is string %}
            {{- tool_call.arguments }}
        {%- else %}
            {{- tool_call.arguments | tojson }}
        {%- endif %}
        {{- '}<|eot_id|>' }}
    {%- else %}
        {{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' }}
        {{- text_of(message.content) + '<|eot_id|>' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""
"""Llama 3.1 JSON tool calling (vLLM's ``llama3_json`` parser reads its calls)."""

TOOL_TEMPLATES: dict[str, str] = {"chatml": CHATML_TOOLS, "llama3": LLAMA3_JSON_TOOLS}
"""Tool-calling templates by family name."""


def has_tool_support(chat_template: str | None) -> bool:
    """Whether a chat template renders the ``tools`` it is given (it mentions them at all)."""
    return bool(chat_template) and "tools" in str(chat_template)


# The project's own text format as a chat template, for the embedded models and any
# tokenizer without a template of its own. The environment names its layout in the
# template variable ``text_layout`` (`TextEnv.chat_template_kwargs`; templates that do
# not know it ignore it), and a conversation renders exactly as that environment's
# text observation, bos first:
# - "transcript" (the default: the tool environments and LangChain conversations), as
#   `archer_agents.formats.prompts.render_messages` renders it, each utterance on an
#   "Action:" line;
# - "questions" (the question games): "Questions:", then per turn the question (its
#   whitespace collapsed) and the answer on one line; the rules message is not shown;
# - "page" (MiniShop and the browser): only the latest page, the last user message.
# The rendered history holds no end-of-turn token, so `Conversation` renders each turn
# whole (the sampled ids are still the ones trained on): the prompts equal the text
# path's, token for token.
EMBEDDED_CHAT_TEMPLATE = (
    "{%- macro tools_block() -%}"
    "{%- if tools -%}Tools:{{ '\\n' }}"
    "{%- for tool in tools -%}"
    "{%- set f = tool.function if tool.function is defined else tool -%}"
    "{%- set params = f.parameters if f.parameters is defined else {} -%}"
    "{%- set props = params.properties if params.properties is defined else {} -%}"
    "{%- set required = params.required if params.required is defined else [] -%}"
    "- {{ f.name }}("
    "{%- for arg, schema in props.items() -%}"
    "{{ arg }}: {{ schema.type if schema.type is defined else 'any' }}"
    "{{- '' if arg in required else '?' }}{{ ', ' if not loop.last }}"
    "{%- endfor -%}"
    "): {{ (f.description if f.description is defined else '').split() | join(' ') }}{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}"
    "{%- set layout = text_layout if text_layout is defined else 'transcript' -%}"
    "{{- bos_token -}}"
    "{%- if layout == 'page' -%}"
    "{%- set pages = messages | selectattr('role', 'equalto', 'user') | list -%}"
    "{%- if pages and pages[-1].content is string -%}{{ pages[-1].content }}{%- endif -%}"
    "{%- elif layout == 'questions' -%}"
    "Questions:{{ '\\n' }}"
    "{%- set ns = namespace(acted=false) -%}"
    "{%- for message in messages -%}"
    "{%- set content = message.content if message.content is string else '' -%}"
    "{%- if message.role == 'assistant' -%}"
    "{{ content.split() | join(' ') }}{%- set ns.acted = true -%}"
    "{%- elif message.role == 'user' and ns.acted -%}"
    "{{ ' ' }}{{ content }}{{ '\\n' }}{%- set ns.acted = false -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- else -%}"
    "{%- set ns = namespace(leading=true, shown=not tools, acted=false) -%}"
    "{%- for message in messages -%}"
    "{%- set content = message.content if message.content is string else '' -%}"
    "{%- if message.role == 'system' and ns.leading -%}{{ content }}{{ '\\n' }}"
    "{%- else -%}"
    "{%- if ns.leading and message.role != 'user' and not ns.shown -%}"
    "{{ tools_block() }}{%- set ns.shown = true -%}"
    "{%- endif -%}"
    "{%- if ns.leading and message.role == 'user' -%}"
    "Task: {{ content }}{{ '\\n' }}"
    "{%- if not ns.shown -%}{{ tools_block() }}{%- set ns.shown = true -%}{%- endif -%}"
    "{%- elif message.role == 'assistant' -%}Action: {{ content }}{{ '\\n' }}"
    "{%- set ns.acted = true -%}"
    "{%- elif message.role == 'tool' -%}"
    "{%- if not (loop.nextitem is defined and loop.nextitem.role == 'user') -%}"
    "Observation: {{ content }}{{ '\\n' }}"
    "{%- endif -%}"
    "{%- else -%}"
    "{{ 'Observation: ' if ns.acted }}{{ message.role | capitalize }}: {{ content }}{{ '\\n' }}"
    "{%- endif -%}"
    "{%- set ns.leading = false -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if not ns.shown -%}{{ tools_block() }}{%- endif -%}"
    "{%- endif -%}"
)
