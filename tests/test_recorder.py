"""EpisodeRecorder on agents this project did not build: LangChain's fake chat models.

The agents are real `langchain.agents.create_agent` graphs and LCEL chains; only
the model is a LangChain fake that says scripted messages, and the tool is the
Twenty Questions environment's own. (The recorder over `ArcherChatModel` with a
real policy, token ids included, is tested in test_chat_model.py.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import (
    FakeMessagesListChatModel,
    GenericFakeChatModel,
    ParrotFakeChatModel,
)
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import BaseTool, tool
from langchain_core.utils.function_calling import convert_to_openai_tool

from archer_agents.data.episode_log import latest_revisions, read_episodes
from archer_agents.data.schema import Episode
from archer_agents.formats.prompts import render_messages, render_tool_call
from archer_agents.langchain.chat_model import ArcherChatModel
from archer_agents.langchain.recorder import EpisodeRecorder
from archer_agents.langchain.redaction import redact_patterns
from archer_agents.policies.protocol import Generation, SamplingParams
from archer_agents.tools.twenty_questions import make_twenty_questions_tool

SYSTEM = "You play Twenty Questions. Ask with the tool."
TASK = "Find the secret object. Write to ada@example.com when done."
EMAIL = redact_patterns([(r"[\w.+-]+@[\w-]+\.[\w.]+", "<email>")])


class ToolFake(GenericFakeChatModel):
    """LangChain's generic fake with tools bound the way provider integrations bind them."""

    def bind_tools(self, tools, *, tool_choice=None, **kwargs):  # type: ignore[no-untyped-def]
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


def ask(question: str, call_id: str, **metadata: Any) -> AIMessage:
    call = {"name": "ask_question", "args": {"question": question}, "id": call_id}
    return AIMessage(content="", tool_calls=[call], response_metadata=metadata)


def game_messages() -> list[AIMessage]:
    return [ask("Is it an animal?", "c1"), ask("Is it a penguin?", "c2"), AIMessage("A penguin.")]


def game_agent(messages: Sequence[AIMessage] | None = None, tools: Sequence[BaseTool] = ()) -> Any:
    model = ToolFake(messages=iter(messages or game_messages()))
    return create_agent(
        model, [make_twenty_questions_tool("penguin"), *tools], system_prompt=SYSTEM
    )


def play(agent: Any, recorder: EpisodeRecorder, run_id: uuid.UUID | None = None) -> dict:
    config: dict[str, Any] = {"callbacks": [recorder]}
    if run_id is not None:
        config["run_id"] = run_id
    return agent.invoke({"messages": [("user", TASK)]}, config=config)


def read(path: Path) -> list[Episode]:
    return read_episodes(path)[0] if path.exists() else []


def test_a_create_agent_run_becomes_one_episode_of_utterance_transitions(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    recorder = EpisodeRecorder(log, env_id="20q-agent")
    run_id = uuid.uuid4()
    result = play(game_agent(), recorder, run_id)
    assert result["messages"][-1].content == "A penguin."
    # Nothing is written before the reward arrives.
    assert recorder.waiting == [str(run_id)] and read(log) == []

    assert recorder.feedback(run_id, 1.0, success=True) == str(run_id)
    recorder.drain()  # the writer thread writes it; drain waits for that
    (episode,) = read(log)
    assert episode.episode_id == str(run_id)
    assert (episode.env_id, episode.source) == ("20q-agent", "langchain")
    assert episode.total_reward == 1.0 and episode.success is True
    assert episode.metadata["reward_pending"] is False

    tool_ = make_twenty_questions_tool("penguin")
    conversation = [SystemMessage(SYSTEM), HumanMessage(TASK)]
    first, second, third = episode.transitions
    assert first.observation == render_messages(conversation, [tool_])
    assert "Tools:\n- ask_question(question: string)" in first.observation
    assert first.action == render_tool_call("ask_question", {"question": "Is it an animal?"})
    assert second.action == render_tool_call("ask_question", {"question": "Is it a penguin?"})
    assert third.action == "A penguin."
    assert first.next_observation == second.observation
    assert second.next_observation == third.observation
    assert first.next_observation.endswith(f"Action: {first.action}\nObservation: Yes.\n")
    assert third.next_observation == third.observation + "Action: A penguin.\n"
    assert [t.reward for t in episode.transitions] == [0.0, 0.0, 1.0]
    assert [t.terminated for t in episode.transitions] == [False, False, True]
    assert first.info["tool_calls"] == ["ask_question"]
    assert first.action_token_ids is None and first.prompt_token_ids is None


def test_feedback_by_a_model_call_id_and_episodes_without_reward_are_kept_and_marked(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log.jsonl"
    recorder = EpisodeRecorder(log)
    play(game_agent(), recorder)
    play(game_agent(), recorder)
    first_id, second_id = recorder.waiting
    assert recorder.flush() == 2
    unrewarded = read(log)
    assert [e.episode_id for e in unrewarded] == [first_id, second_id]
    assert all(e.total_reward is None and e.metadata["reward_pending"] for e in unrewarded)
    assert all(e.metadata["revision"] == 1 for e in unrewarded)

    # Late feedback, keyed by one of the episode's model calls, writes a second revision.
    call_id = unrewarded[1].transitions[0].info["run_id"]
    assert recorder.feedback(call_id, 0.5) == second_id
    assert recorder.drain() == 1
    lines = read(log)
    assert len(lines) == 3 and lines[-1].metadata["revision"] == 2
    latest = {e.episode_id: e for e in latest_revisions(lines)}
    assert latest[second_id].total_reward == 0.5 and latest[first_id].total_reward is None

    with pytest.raises(KeyError, match="no recorded run or episode"):
        recorder.feedback(uuid.uuid4(), 1.0)
    with pytest.raises(ValueError, match="finite"):
        recorder.feedback(first_id, float("nan"))


def test_feedback_during_the_run_is_applied_when_it_ends(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    recorder = EpisodeRecorder(log)
    run_id = uuid.uuid4()

    @tool
    def finish(summary: str) -> str:
        """Report the result."""
        recorder.feedback(run_id, 2.0, success=True)
        return "thanks"

    messages = [
        AIMessage("", tool_calls=[{"name": "finish", "args": {"summary": "penguin"}, "id": "f"}]),
        AIMessage("Done."),
    ]
    play(game_agent(messages, tools=[finish]), recorder, run_id)
    recorder.drain()
    (episode,) = read(log)
    assert episode.total_reward == 2.0 and recorder.waiting == []


def test_redaction_masks_every_text_and_drops_ids_that_spell_the_original(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    recorder = EpisodeRecorder(log, redact=EMAIL)
    messages = [ask("Is it ada@example.com?", "c1"), AIMessage("Bye.")]
    play(game_agent(messages), recorder, uuid.uuid4())
    recorder.flush()
    text = log.read_text()
    assert "ada@example.com" not in text and "<email>" in text

    class Scripted:
        """A policy that says "Mail bob@example.com", then "ok", with fixed ids."""

        version = "v1"

        def __init__(self) -> None:
            self.utterances = ["Mail bob@example.com", "ok"]

        def generate(
            self, observations: Sequence[str], sampling: SamplingParams | None = None
        ) -> list[Generation]:
            return [Generation(self.utterances.pop(0), [5, 6, 2], [-1.0] * 3, [1, 7, 8])]

        def log_probs(self, observations, action_token_ids):  # type: ignore[no-untyped-def]
            raise NotImplementedError

    log2 = tmp_path / "log2.jsonl"
    with EpisodeRecorder(log2, redact=EMAIL) as recorder2:
        model = ArcherChatModel(policy=Scripted())
        model.invoke("Hi, I am ada@example.com", config={"callbacks": [recorder2]})
        model.invoke("Hello", config={"callbacks": [recorder2]})
    masked, clean = read(log2)
    (t,) = masked.transitions
    assert t.observation == "Task: Hi, I am <email>\n" and t.action == "Mail <email>"
    assert t.prompt_token_ids is None and t.action_token_ids is None and t.action_logprobs is None
    (u,) = clean.transitions
    assert u.prompt_token_ids == [1, 7, 8] and u.action_token_ids == [5, 6, 2]
    assert u.action_logprobs == [-1.0, -1.0, -1.0] and u.policy_version == "v1"


def test_a_failed_write_never_reaches_the_agent_and_flush_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "log.jsonl"
    log.mkdir()  # opening a directory for appending fails
    recorder = EpisodeRecorder(log, wait_for_feedback=False)
    with caplog.at_level(logging.ERROR, logger="archer_agents.langchain.recorder"):
        result = play(game_agent(), recorder)
        assert recorder.drain() == 0  # the writer tried, and kept it
    assert result["messages"][-1].content == "A penguin."
    assert "could not write episode" in caplog.text
    (kept,) = recorder.unwritten
    recorder.feedback(kept, 1.0)  # still failing: kept, not raised
    assert recorder.unwritten == [kept]
    log.rmdir()
    assert recorder.flush() == 1 and recorder.unwritten == []
    (episode,) = read(log)
    assert episode.episode_id == kept and episode.total_reward == 1.0


def test_a_broken_redactor_or_callback_never_breaks_the_agent_nor_leaks_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(text: str) -> str:
        raise RuntimeError("redactor bug")

    log = tmp_path / "log.jsonl"
    recorder = EpisodeRecorder(log, redact=broken, wait_for_feedback=False)
    with caplog.at_level(logging.ERROR, logger="archer_agents.langchain.recorder"):
        assert play(game_agent(), recorder)["messages"][-1].content == "A penguin."
        # A callback fed something that is not a message logs and returns.
        run = uuid.uuid4()
        recorder.on_chat_model_start(None, [["not a message"]], run_id=run)  # type: ignore[list-item]
        answer = LLMResult(generations=[[ChatGeneration(message=AIMessage("x"))]])
        assert recorder.on_llm_end(answer, run_id=run) is None
    assert not log.exists() or "ada@example.com" not in log.read_text()
    assert len(recorder.unwritten) == 1
    assert "on_llm_end failed" in caplog.text
    recorder.redact = EMAIL
    assert recorder.flush() == 1
    assert "<email>" in log.read_text()


def test_only_the_oldest_waiting_episodes_are_written_early(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    recorder = EpisodeRecorder(log, max_waiting=1)
    play(game_agent(), recorder)
    first = recorder.last_episode_id
    play(game_agent(), recorder)
    recorder.drain()  # the waiting episode stays waiting
    (written,) = read(log)
    assert written.episode_id == first and written.total_reward is None
    assert recorder.waiting == [recorder.last_episode_id]


def test_async_runs_and_plain_chains_are_recorded(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    recorder = EpisodeRecorder(log)

    async def run() -> None:
        await game_agent().ainvoke({"messages": [("user", TASK)]}, config={"callbacks": [recorder]})

    asyncio.run(run())
    prompt = ChatPromptTemplate.from_messages([("system", "Echo."), ("human", "{text}")])
    chain = prompt | ParrotFakeChatModel()
    chain.batch([{"text": "alpha"}, {"text": "beta"}], config={"callbacks": [recorder]})
    FakeMessagesListChatModel(responses=[AIMessage("solo")]).invoke(
        "just a model", config={"callbacks": [recorder]}
    )
    FakeListLLM(responses=["text out"]).invoke("text in", config={"callbacks": [recorder]})
    recorder.close()
    agent_run, *rest = read(log)
    assert len(agent_run.transitions) == 3
    by_action = {e.transitions[0].action: e for e in rest}
    assert set(by_action) == {"alpha", "beta", "solo", "text out"}
    for word in ("alpha", "beta"):
        (t,) = by_action[word].transitions
        assert t.observation == f"Echo.\nTask: {word}\n"
        assert by_action[word].metadata["run_name"] == "RunnableSequence"
    assert by_action["solo"].transitions[0].observation == "Task: just a model\n"
    assert by_action["text out"].transitions[0].observation == "text in"
    assert by_action["text out"].transitions[0].next_observation == "text intext out"


def test_token_ids_reported_by_an_openai_compatible_server_are_kept(tmp_path: Path) -> None:
    logprobs = {
        "content": [
            {"token": "token_id:17", "logprob": -0.25, "bytes": None, "top_logprobs": []},
            {"token": "token_id:2", "logprob": -0.5, "bytes": None, "top_logprobs": []},
        ]
    }
    reply = AIMessage("ok", response_metadata={"logprobs": logprobs, "model_name": "adapter-v3"})
    log = tmp_path / "log.jsonl"
    with EpisodeRecorder(log) as recorder:
        FakeMessagesListChatModel(responses=[reply]).invoke("hi", config={"callbacks": [recorder]})
    ((t,),) = [e.transitions for e in read(log)]
    assert t.action_token_ids == [17, 2] and t.action_logprobs == [-0.25, -0.5]
    assert t.policy_version == "adapter-v3"


def test_recorded_episodes_round_trip_as_json(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    with EpisodeRecorder(log) as recorder:
        play(game_agent(), recorder)
    line = json.loads(log.read_text().splitlines()[0])
    assert line["source"] == "langchain" and line["total_reward"] is None
    assert Episode.model_validate(line) == read(log)[0]
