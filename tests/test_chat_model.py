"""ArcherChatModel: the training format, tool calls, streaming, async, critic ranking, agents.

Unit tests drive the chat model with `ScriptedPolicy`, a real `Policy` whose
utterances are given in advance, so each test controls exactly what the model
"says". The agent tests use a real `LocalPolicy`: the tiny model,
behaviour-cloned on the two utterances of a Twenty Questions win, plays the
game through `langchain.agents.create_agent` with the environment's own tool.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
import torch
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import BaseTool, tool

from archer_agents.critic.encoders import HashingEncoder
from archer_agents.critic.model import DoubleCritic
from archer_agents.critic.ranking import candidate_values
from archer_agents.data.episode_log import read_episodes
from archer_agents.data.schema import Episode, Transition
from archer_agents.environments.tool_env import ToolCallingEnv, ToolTask
from archer_agents.formats.prompts import (
    render_action,
    render_messages,
    render_tool_call,
    tool_spec,
)
from archer_agents.langchain.agent import load_agent, load_chat_model
from archer_agents.langchain.chat_model import ArcherChatModel
from archer_agents.langchain.recorder import EpisodeRecorder
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import Generation, SamplingParams
from archer_agents.tools.twenty_questions import make_twenty_questions_tool
from archer_agents.training.algorithms.bc import BCConfig, behaviour_clone

TASK = "Find the secret object."
QUESTION = "Is it a penguin?"
FINAL = "The secret object is a penguin."
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=64)


class ScriptedPolicy:
    """A `Policy` that says the given utterances in turn, with made-up but aligned ids."""

    def __init__(self, utterances: Sequence[str], version: str = "scripted-1") -> None:
        self.utterances = list(utterances)
        self.version = version
        self.observations: list[str] = []

    def generate(
        self, observations: Sequence[str], sampling: SamplingParams | None = None
    ) -> list[Generation]:
        generations = []
        for observation in observations:
            self.observations.append(observation)
            text = self.utterances.pop(0)
            ids = [ord(c) % 250 for c in text] + [2]
            generations.append(
                Generation(
                    text=text,
                    token_ids=ids,
                    logprobs=[-0.5] * len(ids),
                    prompt_token_ids=[1] + [ord(c) % 250 for c in observation],
                )
            )
        return generations

    def log_probs(self, observations, action_token_ids):  # type: ignore[no-untyped-def]
        raise NotImplementedError("a scripted policy cannot score")


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def game_tool() -> BaseTool:
    return make_twenty_questions_tool("penguin")


# -- the shared format ---------------------------------------------------------------------


def test_messages_render_exactly_as_the_tool_env_shows_the_same_episode() -> None:
    tool_ = game_tool()
    task = ToolTask(task_id="t0", instruction=TASK)
    env = ToolCallingEnv(
        [tool_],
        {"train": [task], "test": [task]},
        lambda task, calls: (0.0, False),
        max_turns=5,
    )
    observation, _ = env.reset(options={"task_id": "t0"})
    messages: list = [HumanMessage(TASK)]
    assert render_messages(messages, [tool_]) == observation
    for question in ("Is it an animal?", "Is it a bird?"):
        action = render_tool_call("ask_question", {"question": question})
        observation, *_ = env.step(action)
        call = {"name": "ask_question", "args": {"question": question}, "id": "c"}
        messages += [AIMessage("", tool_calls=[call]), ToolMessage("Yes.", tool_call_id="c")]
        assert render_messages(messages, [tool_]) == observation


def test_render_places_system_text_first_and_later_user_turns_as_observations() -> None:
    text = render_messages(
        [
            SystemMessage("Be brief."),
            HumanMessage("Add 1 and 2."),
            AIMessage("Which numbers?"),
            HumanMessage("1 and 2."),
        ],
        [add],
    )
    assert text == (
        "Be brief.\nTask: Add 1 and 2.\nTools:\n- add(a: integer, b: integer): Add two integers.\n"
        "Action: Which numbers?\nObservation: User: 1 and 2.\n"
    )


# -- one call --------------------------------------------------------------------------------


def test_json_tool_call_becomes_a_tool_call_with_an_id_and_the_model_sees_the_training_prompt() -> (
    None
):
    policy = ScriptedPolicy(['{"name": "add", "arguments": {"a": 1, "b": 2}}'])
    model = ArcherChatModel(policy=policy).bind_tools([add])
    message = model.invoke([HumanMessage("Add 1 and 2.")])
    assert isinstance(message, AIMessage)
    assert message.content == ""
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("add", {"a": 1, "b": 2})]
    assert message.tool_calls[0]["id"].startswith("call_")
    assert policy.observations == [render_messages([HumanMessage("Add 1 and 2.")], [add])]


def test_python_call_with_positional_arguments_is_named_by_the_tool_schema() -> None:
    policy = ScriptedPolicy(["add(4, b=5)"])
    message = ArcherChatModel(policy=policy).bind_tools([add]).invoke("sum")
    assert message.tool_calls[0]["args"] == {"a": 4, "b": 5}
    # The history shows what the policy said, not a re-rendering of it.
    assert render_action(message) == "add(4, b=5)"
    edited = message.model_copy(
        update={"tool_calls": [{**message.tool_calls[0], "args": {"a": 4, "b": 6}}]}
    )
    assert render_action(edited) == render_tool_call("add", {"a": 4, "b": 6})


def test_plain_text_is_content_and_a_malformed_call_is_reported() -> None:
    policy = ScriptedPolicy(["The answer is 3.", "add(1, b=)", "add(1, 2, 3)"])
    model = ArcherChatModel(policy=policy).bind_tools([add])
    text = model.invoke("sum")
    assert text.content == "The answer is 3." and not text.tool_calls
    assert not text.invalid_tool_calls
    broken = model.invoke("sum")
    assert not broken.tool_calls and broken.content == "add(1, b=)"
    assert broken.invalid_tool_calls and "not a tool call" in broken.invalid_tool_calls[0]["error"]
    assert broken.response_metadata["tool_call_error"] == broken.invalid_tool_calls[0]["error"]
    too_many = model.invoke("sum")
    assert "at most 2 argument" in too_many.invalid_tool_calls[0]["error"]


def test_tool_choice_none_and_named() -> None:
    call = '{"name": "add", "arguments": {"a": 1, "b": 1}}'
    off = ArcherChatModel(policy=ScriptedPolicy([call])).bind_tools([add], tool_choice="none")
    assert off.invoke("x").content == call
    forced = ArcherChatModel(policy=ScriptedPolicy(["hello"])).bind_tools([add], tool_choice="add")
    assert forced.invoke("x").invalid_tool_calls
    with pytest.raises(ValueError, match="tool_choice 'multiply'"):
        ArcherChatModel(policy=ScriptedPolicy([])).bind_tools([add], tool_choice="multiply")
    with pytest.raises(TypeError, match="unexpected argument"):
        ArcherChatModel(policy=ScriptedPolicy([])).bind_tools([add], strict=True)


def test_token_ids_logprobs_usage_and_version_travel_with_the_message() -> None:
    policy = ScriptedPolicy(["hi"], version="v7")
    message = ArcherChatModel(policy=policy).invoke("hello")
    meta = message.response_metadata
    assert meta["token_ids"] == [ord("h") % 250, ord("i") % 250, 2]
    assert meta["token_logprobs"] == [-0.5, -0.5, -0.5]
    assert meta["prompt_token_ids"][0] == 1
    assert meta["policy_version"] == "v7" and meta["finish_reason"] == "stop"
    usage = message.usage_metadata
    assert usage is not None
    assert usage["output_tokens"] == 3
    assert usage["input_tokens"] == len(meta["prompt_token_ids"])
    assert usage["total_tokens"] == usage["input_tokens"] + 3


def test_stop_sequences_cut_the_text_and_say_so() -> None:
    message = ArcherChatModel(policy=ScriptedPolicy(["one. STOP two"])).invoke("x", stop=["STOP"])
    assert message.content == "one. "
    assert message.response_metadata["stop_sequence"] == "STOP"


def test_streamed_chunks_add_up_to_the_invoked_message_and_fire_token_callbacks() -> None:
    class Tokens(BaseCallbackHandler):
        def __init__(self) -> None:
            self.tokens: list[str] = []

        def on_llm_new_token(self, token: str, **kwargs) -> None:  # type: ignore[no-untyped-def]
            self.tokens.append(token)

    said = "It is three, I think."
    invoked = ArcherChatModel(policy=ScriptedPolicy([said])).invoke("x")
    handler = Tokens()
    model = ArcherChatModel(policy=ScriptedPolicy([said]))
    chunks = list(model.stream("x", config={"callbacks": [handler]}))
    assert len(chunks) > 2
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert total.content == invoked.content == said
    assert "".join(handler.tokens) == said
    assert total.response_metadata["token_ids"] == invoked.response_metadata["token_ids"]
    assert total.usage_metadata == invoked.usage_metadata

    call = '{"name": "add", "arguments": {"a": 2, "b": 2}}'
    streamed = list(ArcherChatModel(policy=ScriptedPolicy([call])).bind_tools([add]).stream("x"))
    merged = streamed[0]
    for chunk in streamed[1:]:
        merged += chunk
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [("add", {"a": 2, "b": 2})]


def test_async_invoke_stream_and_batch() -> None:
    model = ArcherChatModel(policy=ScriptedPolicy(["a b", "c d", "e", "f"]))

    async def run() -> tuple[AIMessage, list, list]:
        first = await model.ainvoke("x")
        chunks = [chunk async for chunk in model.astream("x")]
        batch = await model.abatch(["x", "y"])
        return first, chunks, batch

    first, chunks, batch = asyncio.run(run())
    assert first.content == "a b"
    assert "".join(str(c.content) for c in chunks) == "c d"
    assert sorted(str(m.content) for m in batch) == ["e", "f"]
    assert [m.content for m in model.batch([])] == []


class CountingPolicy(ScriptedPolicy):
    """Records how many generate calls run at once; with ``barrier``, waits for a partner."""

    def __init__(self, thread_safe: bool, barrier: threading.Barrier | None = None) -> None:
        super().__init__(["x"] * 4)
        self.thread_safe = thread_safe
        self.barrier = barrier
        self.inside = 0
        self.most_inside = 0
        self.count_lock = threading.Lock()

    def generate(self, observations, sampling=None):  # type: ignore[no-untyped-def]
        with self.count_lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        if self.barrier is not None:
            self.barrier.wait()
        else:
            time.sleep(0.05)
        with self.count_lock:
            self.inside -= 1
            return super().generate(observations, sampling)


def test_policies_sample_one_call_at_a_time_unless_they_declare_themselves_thread_safe() -> None:
    serial = CountingPolicy(thread_safe=False)
    ArcherChatModel(policy=serial).batch(["a", "b", "c"])
    assert serial.most_inside == 1
    together = CountingPolicy(thread_safe=True, barrier=threading.Barrier(2, timeout=10))
    ArcherChatModel(policy=together).batch(["a", "b"])
    assert together.most_inside == 2


def test_developer_mistakes_raise_with_the_fix() -> None:
    with pytest.raises(TypeError, match="Policy protocol"):
        ArcherChatModel(policy=object())
    with pytest.raises(ValueError, match="needs a critic"):
        ArcherChatModel(policy=ScriptedPolicy([]), num_candidates=3)
    critic = DoubleCritic(HashingEncoder(hidden_size=16, seed=0), hidden_size=16, seed=0)
    with pytest.raises(ValueError, match="nothing to rank"):
        ArcherChatModel(policy=ScriptedPolicy([]), critic=critic)
    with pytest.raises(TypeError, match="unexpected argument"):
        ArcherChatModel(policy=ScriptedPolicy(["x"])).invoke("x", temperature=0.5)


# -- critic at serving time ----------------------------------------------------------------


def test_critic_picks_the_candidate_it_values_most_whatever_the_order() -> None:
    candidates = ["Is it an animal?", "Is it a penguin?", "Is it red?", "Is it a car?"]
    critic = DoubleCritic(HashingEncoder(hidden_size=32, seed=0), hidden_size=32, seed=1)
    observation = render_messages([HumanMessage(TASK)])
    with torch.no_grad():
        values = critic.q([observation] * 4, candidates).min(dim=-1).values.tolist()
    best = candidates[max(range(4), key=values.__getitem__)]
    assert len(set(values)) == 4  # a strict winner, so the test cannot pass by accident
    for shift in range(4):
        order = candidates[shift:] + candidates[:shift]
        model = ArcherChatModel(policy=ScriptedPolicy(order), critic=critic, num_candidates=4)
        message = model.invoke([HumanMessage(TASK)])
        assert message.content == best
        reported = message.response_metadata["candidates"]
        assert [c["text"] for c in reported] == order
        expected = candidate_values(critic, [observation], [order])[0].tolist()
        assert [c["critic_value"] for c in reported] == pytest.approx(expected)
        assert order[message.response_metadata["chosen_candidate"]] == best
        assert message.usage_metadata is not None
        assert message.usage_metadata["output_tokens"] == sum(len(c) + 1 for c in order)


# -- a real agent -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_policy_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model behaviour-cloned to ask the winning question, then say the answer."""
    policy = LocalPolicy.from_pretrained(tiny_model_dir, seed=0)
    tool_ = game_tool()
    call = {"name": "ask_question", "args": {"question": QUESTION}, "id": "c"}
    first = render_messages([HumanMessage(TASK)], [tool_])
    second = render_messages(
        [
            HumanMessage(TASK),
            AIMessage("", tool_calls=[call]),
            ToolMessage("Yes.", tool_call_id="c"),
        ],
        [tool_],
    )
    said = render_tool_call("ask_question", {"question": QUESTION})
    episode = Episode(
        env_id="test",
        transitions=[
            Transition(observation=first, action=said, reward=0.0, next_observation=second),
            Transition(observation=second, action=FINAL, reward=0.0, next_observation=second),
        ],
    )
    config = BCConfig(steps=60, batch_size=2, learning_rate=1e-2, warmup_steps=5, eval_every=0)
    result = behaviour_clone(policy, [episode], config)
    assert result.final_loss < 0.5
    return policy.save(tmp_path_factory.mktemp("bc") / "twenty-questions-v1")


def _check_win(messages: list) -> None:
    human, call, answer, final = messages
    assert isinstance(human, HumanMessage)
    assert [(c["name"], c["args"]) for c in call.tool_calls] == [
        ("ask_question", {"question": QUESTION})
    ]
    assert isinstance(answer, ToolMessage)
    assert answer.tool_call_id == call.tool_calls[0]["id"]
    assert answer.content == "Yes."  # the oracle: a guess naming the secret wins
    assert isinstance(final, AIMessage) and final.content == FINAL and not final.tool_calls


def test_create_agent_with_a_trained_local_policy_wins_and_the_recorder_keeps_its_tokens(
    trained_policy_dir: Path, tmp_path: Path
) -> None:
    policy = LocalPolicy.from_pretrained(trained_policy_dir, seed=0)
    log = tmp_path / "episodes.jsonl"
    with EpisodeRecorder(log) as recorder:
        agent = load_agent(policy, [game_tool()], sampling=GREEDY, callbacks=[recorder])
        result = agent.invoke({"messages": [("user", TASK)]})
        _check_win(result["messages"])
        recorder.feedback(recorder.last_episode_id or "", 1.0, success=True)
    (episode,), _ = read_episodes(log)
    assert episode.total_reward == 1.0 and episode.success is True
    first, second = episode.transitions
    assert first.next_observation == second.observation
    assert second.action == FINAL and second.terminated
    for transition in episode.transitions:
        assert transition.policy_version == policy.version
        assert transition.prompt_token_ids == policy.prompt_ids(transition.observation)
        assert transition.action_token_ids is not None
        assert transition.action_token_ids[-1] == policy.eos_id
        assert (
            policy.tokenizer.decode(transition.action_token_ids[:-1], skip_special_tokens=True)
            == transition.action
        )
        # Token-faithful: the policy rescoring the recorded ids gives the recorded logprobs.
        (rescored,) = policy.log_probs([transition.observation], [transition.action_token_ids])
        assert rescored.tolist() == pytest.approx(transition.action_logprobs, abs=1e-4)


def test_load_agent_from_a_directory_is_a_runnable_in_every_form(trained_policy_dir: Path) -> None:
    agent = load_agent(trained_policy_dir, [game_tool()], sampling=GREEDY)
    chain = (
        RunnableLambda(lambda task: {"messages": [("user", task)]})
        | agent
        | RunnableLambda(lambda state: state["messages"][-1].content)
    )
    assert chain.invoke(TASK) == FINAL
    assert chain.batch([TASK, TASK]) == [FINAL, FINAL]
    updates = list(agent.stream({"messages": [("user", TASK)]}, stream_mode="updates"))
    assert [next(iter(u)) for u in updates] == ["model", "tools", "model"]

    async def run() -> tuple[str, list[str], list]:
        one = await chain.ainvoke(TASK)
        many = await chain.abatch([TASK, TASK])
        tokens = [
            chunk
            async for chunk, _ in agent.astream(
                {"messages": [("user", TASK)]}, stream_mode="messages"
            )
        ]
        return one, many, tokens

    one, many, tokens = asyncio.run(run())
    assert one == FINAL and many == [FINAL, FINAL]
    assert FINAL in "".join(str(t.content) for t in tokens if isinstance(t, AIMessage))
    model = load_chat_model(trained_policy_dir, sampling=GREEDY)
    assert model.policy.version == "twenty-questions-v1"


def test_load_agent_from_a_served_model_in_one_line(
    trained_policy_dir: Path, tmp_path: Path
) -> None:
    from serving_helpers import start_local_server

    local = LocalPolicy.from_pretrained(trained_policy_dir)
    log = tmp_path / "served.jsonl"
    server = start_local_server(trained_policy_dir)
    try:
        with EpisodeRecorder(log) as recorder:
            agent = load_agent(
                f"{server.url}/v1",
                [game_tool()],
                model="tiny",
                tokenizer=trained_policy_dir,
                sampling=GREEDY,
                callbacks=[recorder],
            )
            _check_win(agent.invoke({"messages": [("user", TASK)]})["messages"])
    finally:
        server.stop()
    (episode,), _ = read_episodes(log)
    for transition in episode.transitions:
        assert transition.policy_version == "tiny"
        assert transition.prompt_token_ids == local.prompt_ids(transition.observation)
        assert transition.action_token_ids is not None
        # The server's sampled ids and logprobs are the local model's: training can trust them.
        (rescored,) = local.log_probs([transition.observation], [transition.action_token_ids])
        assert rescored.tolist() == pytest.approx(transition.action_logprobs, abs=1e-4)


def test_load_agent_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="LocalPolicy.save"):
        load_agent(tmp_path / "missing")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "latest").write_text("step-000001")
    with pytest.raises(ValueError, match="training checkpoint"):
        load_agent(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="only apply to a server"):
        load_agent(ScriptedPolicy([]), model="v3")
    with pytest.raises(ValueError, match="needs the served model"):
        load_agent("http://127.0.0.1:8000/v1", tokenizer=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no adapter registry"):
        load_agent("http://127.0.0.1:8000/v1", registry=tmp_path / "missing")
    with pytest.raises(ValueError, match="both given"):
        load_agent("http://127.0.0.1:8000", model="archer-v0001", registry=tmp_path)
    with pytest.raises(ValueError, match="only apply to a server"):
        load_agent(tmp_path / "ckpt", registry=tmp_path)


def test_an_openai_client_with_bound_tools_gets_the_training_prompt_and_tool_calls(
    trained_policy_dir: Path,
) -> None:
    from langchain.agents import create_agent
    from langchain_openai import ChatOpenAI
    from serving_helpers import start_local_server

    local = LocalPolicy.from_pretrained(trained_policy_dir)
    server = start_local_server(trained_policy_dir)
    try:
        # The stock OpenAI chat model, pointed at `archer serve`, in a create_agent agent.
        openai_model = ChatOpenAI(
            base_url=f"{server.url}/v1", api_key="unused", model="tiny", temperature=0.0
        )
        agent = create_agent(openai_model, [game_tool()])
        _check_win(agent.invoke({"messages": [("user", TASK)]})["messages"])

        # What the server rendered is exactly what the policy trained on.
        tools = [{"type": "function", "function": tool_spec(game_tool())}]
        history = [
            {"role": "user", "content": TASK},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {
                            "name": "ask_question",
                            "arguments": json.dumps({"question": QUESTION}),
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "Yes."},
        ]
        body = {"model": "tiny", "tools": tools, "temperature": 0, "return_token_ids": True}
        first = httpx.post(
            f"{server.url}/v1/chat/completions", json={**body, "messages": history[:1]}
        ).json()
        assert first["prompt_token_ids"] == local.prompt_ids(
            render_messages([HumanMessage(TASK)], [game_tool()])
        )
        (choice,) = first["choices"]
        assert choice["finish_reason"] == "tool_calls"
        (call,) = choice["message"]["tool_calls"]
        assert call["function"]["name"] == "ask_question"
        assert json.loads(call["function"]["arguments"]) == {"question": QUESTION}
        second = httpx.post(
            f"{server.url}/v1/chat/completions", json={**body, "messages": history}
        ).json()
        expected = render_messages(
            [
                HumanMessage(TASK),
                AIMessage(
                    "",
                    tool_calls=[
                        {"name": "ask_question", "args": {"question": QUESTION}, "id": "c1"}
                    ],
                ),
                ToolMessage("Yes.", tool_call_id="c1"),
            ],
            [game_tool()],
        )
        assert second["prompt_token_ids"] == local.prompt_ids(expected)
        assert second["choices"][0]["message"] == {"role": "assistant", "content": FINAL}

        # A call whose arguments are not JSON is the client's mistake: a 400 that says so.
        broken = [dict(history[1])]
        broken[0]["tool_calls"] = [
            {"id": "c1", "type": "function", "function": {"name": "ask_question", "arguments": "{"}}
        ]
        answer = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={**body, "messages": [history[0], *broken]},
        )
        assert answer.status_code == 400 and "not JSON" in answer.text
    finally:
        server.stop()
