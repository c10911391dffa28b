"""Tool-call parsing as the environments use it.

The parser lives in `archer_agents.tool_calls`, shared with the LangChain chat
model so that deployment reads an utterance exactly as training did; this
module keeps the environments' import path.
"""

from archer_agents.tool_calls import ActionParseError, ToolCall, parse_tool_call

__all__ = ["ActionParseError", "ToolCall", "parse_tool_call"]
