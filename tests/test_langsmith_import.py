"""LangSmith run exports as episodes: hand-written exports in the forms LangSmith writes.

`AGENT_EXPORT` is a `create_agent` run of Twenty Questions as LangChain's tracer
sends it to LangSmith (flat runs, messages as serialised LangChain
constructors, tools in ``extra.invocation_params``), its lines out of order as
an export may be. Other exports use ``child_runs`` trees and OpenAI-form
messages (``@traceable`` around an OpenAI client).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from typer.testing import CliRunner

from archer_agents.cli.app import full_app
from archer_agents.data.episode_log import read_episodes
from archer_agents.formats.prompts import render_tool_call
from archer_agents.langchain.langsmith_import import episodes_from_lines, import_langsmith
from archer_agents.langchain.recorder import EpisodeRecorder
from archer_agents.langchain.redaction import redact_patterns
from archer_agents.tools.twenty_questions import make_twenty_questions_tool

ROOT = "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01"
SYSTEM = "You play Twenty Questions. Ask with the tool."
TASK = "Find the secret object."
TOOL_SPEC = {
    "type": "function",
    "function": {
        "name": "ask_question",
        "description": (
            "Ask one yes/no question about the secret object (e.g. 'Is it an animal?') or guess "
            "it (e.g. 'Is it a dog?'). Answers 'Yes.', 'No.' or 'Invalid question.'; a guess "
            "naming exactly the secret object is answered 'Yes.' and wins."
        ),
        "parameters": {
            "properties": {
                "question": {
                    "description": "One question about the secret, or a guess naming one secret "
                    "(e.g. 'Is it a dog?').",
                    "type": "string",
                }
            },
            "required": ["question"],
            "type": "object",
        },
    },
}

# A LangGraph agent run as LangChain's tracer posts it: runs a line, children before the
# root (an export's order is not execution order; dotted_order is).
AGENT_EXPORT = """{"id": "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a05", "name": "ChatOpenAI", "run_type": "llm", "parent_run_id": "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a04", "trace_id": "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01", "dotted_order": "20250301T101500000000Z1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01.20250301T101502000000Z1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a04.20250301T101502000100Z1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a05", "start_time": "2025-03-01T10:15:02.000100", "end_time": "2025-03-01T10:15:02.600000", "extra": {"invocation_params": {"model": "gpt-4o-mini", "_type": "openai-chat", "tools": [TOOL]}, "metadata": {"langgraph_node": "model"}}, "inputs": {"messages": [[{"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "SystemMessage"], "kwargs": {"content": "You play Twenty Questions. Ask with the tool.", "type": "system"}}, {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "HumanMessage"], "kwargs": {"content": "Find the secret object.", "type": "human", "id": "6a0b"}}, {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "AIMessage"], "kwargs": {"content": "", "type": "ai", "id": "run-7c1", "tool_calls": [{"name": "ask_question", "args": {"question": "Is it an animal?"}, "id": "call_a1", "type": "tool_call"}], "invalid_tool_calls": []}}, {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "ToolMessage"], "kwargs": {"content": "Yes.", "type": "tool", "name": "ask_question", "tool_call_id": "call_a1", "status": "success"}}]]}, "outputs": {"generations": [[{"text": "", "generation_info": {"finish_reason": "tool_calls"}, "type": "ChatGeneration", "message": {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "AIMessage"], "kwargs": {"content": "", "type": "ai", "id": "run-7c2", "tool_calls": [{"name": "ask_question", "args": {"question": "Is it a penguin?"}, "id": "call_a2", "type": "tool_call"}], "invalid_tool_calls": [], "response_metadata": {"model_name": "gpt-4o-mini-2024-07-18", "finish_reason": "tool_calls"}}}}]], "llm_output": {"model_name": "gpt-4o-mini-2024-07-18"}}}
{"id": "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01", "name": "LangGraph", "run_type": "chain", "parent_run_id": null, "trace_id": "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01", "dotted_order": "20250301T101500000000Z1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01", "start_time": "2025-03-01T10:15:00", "end_time": "2025-03-01T10:15:04", "session_id": "9d1e0c4e-5b7a-4f7e-8a51-2f8f6f1b2c3d", "tags": ["prod"], "inputs": {"messages": [{"role": "user", "content": "Find the secret object."}]}, "outputs": {"messages": []}, "error": null, "feedback_stats": {"user_score": {"n": 1, "avg": 1.0}}}
{"id": "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a02", "name": "ChatOpenAI", "run_type": "llm", "parent_run_id": "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01", "trace_id": "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01", "dotted_order": "20250301T101500000000Z1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01.20250301T101500100000Z1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a02", "start_time": "2025-03-01T10:15:00.100000", "end_time": "2025-03-01T10:15:01", "extra": {"invocation_params": {"model": "gpt-4o-mini", "_type": "openai-chat", "tools": [TOOL]}}, "inputs": {"messages": [[{"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "SystemMessage"], "kwargs": {"content": "You play Twenty Questions. Ask with the tool.", "type": "system"}}, {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "HumanMessage"], "kwargs": {"content": "Find the secret object.", "type": "human", "id": "6a0b"}}]]}, "outputs": {"generations": [[{"text": "", "generation_info": {"finish_reason": "tool_calls"}, "type": "ChatGeneration", "message": {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "AIMessage"], "kwargs": {"content": "", "type": "ai", "id": "run-7c1", "tool_calls": [{"name": "ask_question", "args": {"question": "Is it an animal?"}, "id": "call_a1", "type": "tool_call"}], "invalid_tool_calls": []}}}]]}}
{"id": "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a03", "name": "ask_question", "run_type": "tool", "parent_run_id": "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01", "trace_id": "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01", "dotted_order": "20250301T101500000000Z1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01.20250301T101501000000Z1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a03", "start_time": "2025-03-01T10:15:01", "inputs": {"input": "{'question': 'Is it an animal?'}"}, "outputs": {"output": {"content": "Yes.", "type": "tool", "name": "ask_question", "tool_call_id": "call_a1", "status": "success"}}}
{"id": "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a04", "name": "model", "run_type": "chain", "parent_run_id": "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01", "trace_id": "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01", "dotted_order": "20250301T101500000000Z1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01.20250301T101502000000Z1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a04", "start_time": "2025-03-01T10:15:02", "inputs": {}, "outputs": {}}
{"id": "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a06", "name": "ask_question", "run_type": "tool", "parent_run_id": "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01", "trace_id": "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01", "dotted_order": "20250301T101500000000Z1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01.20250301T101503000000Z1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a06", "start_time": "2025-03-01T10:15:03", "inputs": {"input": "{'question': 'Is it a penguin?'}"}, "outputs": {"output": "Yes."}}
{"id": "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a07", "name": "ChatOpenAI", "run_type": "llm", "parent_run_id": "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01", "trace_id": "1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01", "dotted_order": "20250301T101500000000Z1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a01.20250301T101503500000Z1f0c6a52-0d6e-4c39-9d0a-3c8c2b0f7a07", "start_time": "2025-03-01T10:15:03.500000", "extra": {"invocation_params": {"tools": [TOOL]}}, "inputs": {"messages": [[{"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "SystemMessage"], "kwargs": {"content": "You play Twenty Questions. Ask with the tool.", "type": "system"}}, {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "HumanMessage"], "kwargs": {"content": "Find the secret object.", "type": "human"}}, {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "AIMessage"], "kwargs": {"content": "", "type": "ai", "tool_calls": [{"name": "ask_question", "args": {"question": "Is it an animal?"}, "id": "call_a1", "type": "tool_call"}]}}, {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "ToolMessage"], "kwargs": {"content": "Yes.", "type": "tool", "tool_call_id": "call_a1"}}, {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "AIMessage"], "kwargs": {"content": "", "type": "ai", "tool_calls": [{"name": "ask_question", "args": {"question": "Is it a penguin?"}, "id": "call_a2", "type": "tool_call"}]}}, {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "ToolMessage"], "kwargs": {"content": "Yes.", "type": "tool", "tool_call_id": "call_a2"}}]]}, "outputs": {"generations": [[{"text": "A penguin.", "type": "ChatGeneration", "message": {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "AIMessageChunk"], "kwargs": {"content": "A penguin.", "type": "AIMessageChunk", "tool_calls": [], "invalid_tool_calls": [], "tool_call_chunks": []}}}]]}}
""".replace("[TOOL]", json.dumps([TOOL_SPEC]))


def _write(tmp_path: Path, text: str, name: str = "export.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _run(run_id: str, run_type: str, parent: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"id": run_id, "name": run_type, "run_type": run_type, "parent_run_id": parent, **fields}


def _openai_llm(run_id: str, messages: list[dict], reply: dict, **fields: Any) -> dict[str, Any]:
    return _run(
        run_id,
        "llm",
        inputs={"messages": messages, "model": "gpt-4o"},
        outputs={"choices": [{"index": 0, "message": reply, "finish_reason": "stop"}]},
        **fields,
    )


def test_an_agent_trace_becomes_the_episode_the_recorder_makes_of_the_same_run(
    tmp_path: Path,
) -> None:
    episodes, report = import_langsmith(_write(tmp_path, AGENT_EXPORT), env_id="20q-prod")
    assert report.bad_lines == [] and report.notes == []
    assert (report.runs_read, report.episodes, report.rewarded) == (7, 1, 1)
    (episode,) = episodes
    assert episode.episode_id == ROOT and episode.source == "import"
    assert episode.env_id == "20q-prod" and episode.total_reward == 1.0
    assert episode.metadata["feedback"] == {"user_score": 1.0}
    assert episode.metadata["langsmith_session_id"] == "9d1e0c4e-5b7a-4f7e-8a51-2f8f6f1b2c3d"
    assert episode.started_at.year == 2025
    assert [t.action for t in episode.transitions] == [
        render_tool_call("ask_question", {"question": "Is it an animal?"}),
        render_tool_call("ask_question", {"question": "Is it a penguin?"}),
        "A penguin.",
    ]
    assert [t.reward for t in episode.transitions] == [0.0, 0.0, 1.0]
    assert episode.transitions[0].policy_version is None
    assert episode.transitions[1].policy_version == "gpt-4o-mini-2024-07-18"

    # The same conversation, run live under the recorder, gives the same transitions.
    class ToolFake(GenericFakeChatModel):
        def bind_tools(self, tools, *, tool_choice=None, **kwargs):  # type: ignore[no-untyped-def]
            return self.bind(tools=[convert_to_openai_tool(t) for t in tools])

    said = [
        AIMessage("", tool_calls=[{"name": "ask_question", "args": {"question": q}, "id": i}])
        for q, i in (("Is it an animal?", "x1"), ("Is it a penguin?", "x2"))
    ] + [AIMessage("A penguin.")]
    agent = create_agent(
        ToolFake(messages=iter(said)), [make_twenty_questions_tool("penguin")], system_prompt=SYSTEM
    )
    with EpisodeRecorder(tmp_path / "live.jsonl") as recorder:
        agent.invoke({"messages": [("user", TASK)]}, config={"callbacks": [recorder]})
    (live,), _ = read_episodes(tmp_path / "live.jsonl")
    for imported, recorded in zip(episode.transitions, live.transitions, strict=True):
        assert imported.observation == recorded.observation
        assert imported.action == recorded.action
        assert imported.next_observation == recorded.next_observation
        assert imported.terminated == recorded.terminated


def test_nested_run_trees_with_openai_messages_and_feedback_lists(tmp_path: Path) -> None:
    system = {"role": "system", "content": "You are a support agent."}
    user = {"role": "user", "content": "Where is order #W1?"}
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_9",
                "type": "function",
                "function": {"name": "get_order", "arguments": '{"order_id": "#W1"}'},
            }
        ],
    }
    tool_reply = {"role": "tool", "tool_call_id": "call_9", "content": '{"status": "shipped"}'}
    final = {"role": "assistant", "content": "It has shipped."}
    tree = _run(
        "root-1",
        "chain",
        name="support_bot",
        feedback=[{"key": "resolved", "score": 1}, {"key": "success", "score": True}],
        child_runs=[
            _openai_llm("llm-1", [system, user], call, start_time="2025-03-02T09:00:01"),
            _run(
                "tool-1",
                "tool",
                start_time="2025-03-02T09:00:02",
                outputs={"output": '{"status": "shipped"}'},
            ),
            _openai_llm(
                "llm-2",
                [system, user, call, tool_reply],
                final,
                start_time="2025-03-02T09:00:03",
            ),
        ],
    )
    episodes, report = episodes_from_lines([json.dumps(tree)])
    assert report.bad_lines == [] and report.runs_read == 4
    (episode,) = episodes
    first, second = episode.transitions
    assert first.observation == "You are a support agent.\nTask: Where is order #W1?\n"
    assert first.action == render_tool_call("get_order", {"order_id": "#W1"})
    assert first.next_observation == second.observation
    assert second.observation.endswith('Observation: {"status": "shipped"}\n')
    assert second.action == "It has shipped."
    assert episode.total_reward == 1.0 and episode.success is True


def test_bad_lines_are_reported_with_their_numbers_and_good_traces_still_import(
    tmp_path: Path,
) -> None:
    ok_user = [{"role": "user", "content": "hi"}]
    ok_reply = {"role": "assistant", "content": "hello"}
    lines = [
        json.dumps(_openai_llm("good-1", ok_user, ok_reply)),  # 1
        '{"id": "broken", "run_type": "llm", "inputs": ',  # 2: torn JSON
        json.dumps([1, 2, 3]),  # 3: not a run
        json.dumps({"name": "no id", "run_type": "llm"}),  # 4
        json.dumps(_run("odd", "banana")),  # 5
        json.dumps(_run("unreadable", "llm", inputs={"question": "?"}, outputs={})),  # 6
        json.dumps(_openai_llm("good-1", ok_user, ok_reply)),  # 7: duplicate id
        "",  # 8: blank lines are not runs
        json.dumps(_openai_llm("orphan", ok_user, ok_reply, parent_run_id="gone")),  # 9
    ]
    path = _write(tmp_path, "\n".join(lines) + "\n")
    episodes, report = import_langsmith(path)
    assert [(b.line, b.reason.split(" ")[0]) for b in report.bad_lines] == [
        (2, "not"),
        (3, "expected"),
        (4, "a"),
        (5, "run"),
        (6, "llm"),
        (7, "run"),
    ]
    assert "no 'messages' or 'prompts'" in report.bad_lines[4].reason
    assert "appears twice" in report.bad_lines[5].reason
    assert any("line 9" in note and "gone" in note for note in report.notes)
    assert any("line 6" in note and "no readable llm run" in note for note in report.notes)
    assert sorted(e.episode_id for e in episodes) == ["good-1", "orphan"]
    assert all(e.total_reward is None and e.metadata["reward_pending"] for e in episodes)


def test_the_reward_key_must_be_named_when_there_are_several(tmp_path: Path) -> None:
    run = _openai_llm(
        "r",
        [{"role": "user", "content": "hi"}],
        {"role": "assistant", "content": "hello"},
        feedback_stats={"helpful": {"n": 2, "avg": 0.5}, "correct": {"n": 1, "avg": 0.0}},
    )
    with pytest.raises(ValueError, match=r"\['correct', 'helpful'\].*reward_key"):
        episodes_from_lines([json.dumps(run)])
    (episode,), _ = episodes_from_lines([json.dumps(run)], reward_key="helpful")
    assert episode.total_reward == 0.5 and episode.metadata["feedback"]["correct"] == 0.0


def test_errors_token_ids_and_redaction(tmp_path: Path) -> None:
    said = {
        "lc": 1,
        "type": "constructor",
        "id": ["langchain", "schema", "messages", "AIMessage"],
        "kwargs": {
            "content": "Mail me at bob@example.com",
            "response_metadata": {
                "policy_version": "adapter-v2",
                "token_ids": [7, 8, 2],
                "token_logprobs": [-0.1, -0.2, -0.3],
                "prompt_token_ids": [1, 5],
            },
        },
    }
    trace = _run(
        "root",
        "chain",
        error="GraphRecursionError: Recursion limit of 25 reached",
        child_runs=[
            _run(
                "llm",
                "llm",
                inputs={"messages": [[{"type": "human", "data": {"content": "I am ann@x.org"}}]]},
                outputs={"generations": [[{"text": "", "message": said}]]},
            )
        ],
    )
    (plain,), _ = episodes_from_lines([json.dumps(trace)])
    (t,) = plain.transitions
    assert t.truncated and not t.terminated and "Recursion" in plain.metadata["error"]
    assert (t.action_token_ids, t.action_logprobs) == ([7, 8, 2], [-0.1, -0.2, -0.3])
    assert t.prompt_token_ids == [1, 5] and t.policy_version == "adapter-v2"
    email = redact_patterns([(r"[\w.+-]+@[\w-]+\.[\w.]+", "<email>")])
    (masked,), _ = episodes_from_lines([json.dumps(trace)], redact=email)
    (m,) = masked.transitions
    assert m.observation == "Task: I am <email>\n" and m.action == "Mail me at <email>"
    assert m.action_token_ids is None and m.prompt_token_ids is None


def test_the_command_writes_episodes_and_reports_bad_lines(tmp_path: Path) -> None:
    export = _write(tmp_path, AGENT_EXPORT + "{oops\n")
    out = tmp_path / "episodes.jsonl"
    runner = CliRunner()
    result = runner.invoke(full_app(), ["import-langsmith", str(export), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert f"{export}:8" in result.output.replace("\n", "")
    (episode,), _ = read_episodes(out)
    assert episode.episode_id == ROOT

    again = runner.invoke(full_app(), ["import-langsmith", str(export), "--out", str(out)])
    assert again.exit_code == 2 and "--append" in again.output

    strict_out = tmp_path / "strict.jsonl"
    strict = runner.invoke(
        full_app(), ["import-langsmith", str(export), "--out", str(strict_out), "--strict"]
    )
    assert strict.exit_code == 2 and not strict_out.exists()

    clean = _write(tmp_path, AGENT_EXPORT, "clean.jsonl")
    ok = runner.invoke(full_app(), ["import-langsmith", str(clean), "--out", str(out), "--append"])
    assert ok.exit_code == 0, ok.output
    assert len(read_episodes(out)[0]) == 2
