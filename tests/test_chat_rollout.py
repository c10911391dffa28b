"""Episodes in chat form with real chat templates: what is trained on is what was sampled.

Tiny Qwen2 (Hermes tool calls) and Llama 3 (JSON tool calls) models play a
tool environment whose tools answer with adversarial text (punctuation first,
unicode, whitespace, JSON) and Twenty Questions, through `ChatPolicyActor` and
the collector. Per episode, every turn's prompt ids start with the previous
turn's prompt ids plus exactly the ids sampled there, and every sampled id is
in the log.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import gymnasium as gym
import pytest
from langchain_core.tools import tool

import archer_agents.environments  # noqa: F401  (registers the archer ids)
from archer_agents.data.schema import Episode
from archer_agents.environments.from_tools import make_tool_env
from archer_agents.formats.conversation import ChatTemplate
from archer_agents.formats.tool_formats import family_for
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import SamplingParams
from archer_agents.training.chat_rollout import ChatPolicyActor
from archer_agents.training.rollout import collect

ODD_OUTPUTS = [", then: ünïcödé ✓", '  {"status": "shipped"}  ', "\n\nnewlines\tand tabs", "?!"]


def odd_env(tool_format: str):
    def new_state(task):
        return {"calls": 0}

    def make_tools(state):
        @tool
        def lookup(query: str) -> str:
            """Look something up."""
            state["calls"] += 1
            return ODD_OUTPUTS[state["calls"] % len(ODD_OUTPUTS)]

        @tool
        def finish() -> str:
            """Finish."""
            return "bye"

        return [lookup, finish]

    tasks = [
        {"task_id": str(i), "instruction": f"Look up item {i}, then finish."} for i in range(4)
    ]
    return make_tool_env(
        make_tools=make_tools,
        new_state=new_state,
        tasks={"train": tasks[:2], "test": tasks[2:]},
        reward=lambda state, task, calls: state["calls"] > 0,
        final_tools=["finish"],
        max_turns=4,
        tool_format=tool_format,
    )


def assert_token_exact(episodes: list[Episode]) -> None:
    assert episodes
    for episode in episodes:
        turns = episode.transitions
        assert len(turns) >= 2  # several turns, so the chain is checked
        for t in turns:
            assert t.prompt_token_ids and t.action_token_ids and t.action_logprobs
            assert len(t.action_token_ids) == len(t.action_logprobs)
        for before, after in itertools.pairwise(turns):
            head = [*before.prompt_token_ids, *before.action_token_ids]
            assert after.prompt_token_ids[: len(head)] == head


@pytest.mark.parametrize("family_dir", ["qwen2_chat_dir", "llama3_chat_dir"])
def test_tool_episodes_in_chat_form_are_token_exact(
    family_dir: str, request: pytest.FixtureRequest
) -> None:
    policy = LocalPolicy.from_pretrained(request.getfixturevalue(family_dir), seed=0)
    tool_format = family_for(policy.tokenizer).name
    assert tool_format == {"qwen2_chat_dir": "hermes", "llama3_chat_dir": "llama3_json"}[family_dir]
    actor = ChatPolicyActor(policy, SamplingParams(max_new_tokens=12))
    result = collect(lambda: odd_env(tool_format), actor, 4, num_envs=2, seed=0)
    assert_token_exact(result.episodes)

    # The prompt is the model's own template over the episode's conversation.
    env = odd_env(tool_format)
    episode = result.episodes[0]
    env.reset(seed=episode.seed, options={"split": "train", "task_id": episode.task_id})
    first = episode.transitions[0]
    template = ChatTemplate(policy.tokenizer, env.tool_specs)
    assert first.prompt_token_ids == template.prompt_ids(env.chat_messages())


def test_a_hermes_call_is_read_and_run_by_the_environment() -> None:
    env = odd_env("hermes")
    env.reset(seed=0)
    call = '<tool_call>\n{"name": "lookup", "arguments": {"query": "x"}}\n</tool_call>'
    _, _, _, _, info = env.step(call)
    assert not info["invalid_action"] and info["tool"] == "lookup"
    _, _, _, _, info = env.step("I will just talk.")
    assert info["invalid_action"] and "no tool call" in info["error"]
    messages = env.chat_messages()
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "tool"]
    assert messages[1]["content"] == call and messages[2]["name"] == "lookup"


def test_twenty_questions_in_chat_form_is_token_exact(qwen2_chat_dir: Path) -> None:
    policy = LocalPolicy.from_pretrained(qwen2_chat_dir, seed=0)
    actor = ChatPolicyActor(policy, SamplingParams(max_new_tokens=8))
    factory = lambda: gym.make("archer/TwentyQuestionsMini-v0", max_turns=3)  # noqa: E731
    result = collect(factory, actor, 2, num_envs=2, seed=0)
    assert_token_exact(result.episodes)
    # The decoded prompt is the template's rendering of the game so far (this template
    # writes contents as they are). Special tokens aside: a sampled one stays in the ids
    # (they win) but not in the utterance's text.
    env = factory()
    episode = result.episodes[0]
    env.reset(seed=episode.seed, options={"split": "train", "task_id": episode.task_id})
    for turn in episode.transitions[:-1]:
        env.step(turn.action)
    last = episode.transitions[-1]
    rendered = ChatTemplate(policy.tokenizer).render(
        env.unwrapped.chat_messages(), add_generation_prompt=True
    )
    decoded = policy.tokenizer.decode(last.prompt_token_ids, skip_special_tokens=False)
    assert without_specials(policy.tokenizer, decoded) == without_specials(
        policy.tokenizer, rendered
    )


def without_specials(tokenizer, text: str) -> str:
    specials = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
    for special in sorted(specials, key=len, reverse=True):
        text = text.replace(special, "")
    return text


def test_every_environment_tells_its_episode_as_chat_messages() -> None:
    """System or user first; then per turn the utterance as said, and what came back."""
    support = gym.make("archer/SupportSim-v0", size="small", n_train=4, n_test=4).unwrapped
    support.reset(seed=0)
    opening = support.chat_messages()
    assert [m["role"] for m in opening] == ["system", "user"]
    support.step('respond(message="Could you give me your email?")')
    support.step("not a call at all")
    said, reply, odd, error = support.chat_messages()[2:]
    assert said == {
        "role": "assistant",
        "content": 'respond(message="Could you give me your email?")',
    }
    assert reply["role"] == "user" and reply["content"]  # the customer answers as a user
    assert odd["role"] == "assistant" and error["role"] == "tool"

    shop = gym.make("archer/MiniShop-v0", catalog="small").unwrapped
    observation, _ = shop.reset(seed=0)
    assert shop.chat_messages() == [{"role": "user", "content": observation}]
    observation, *_ = shop.step("search[red shirt]")
    assert shop.chat_messages()[1:] == [
        {"role": "assistant", "content": "search[red shirt]"},
        {"role": "user", "content": observation},
    ]

    game = gym.make("archer/GuessMyCity-v0").unwrapped
    game.reset(seed=0)
    game.step("Is it in Europe?")
    rules, question, answer = game.chat_messages()
    assert "a city" in rules["content"] and question["content"] == "Is it in Europe?"
    assert answer["role"] == "user" and answer["content"] in ("Yes.", "No.")


class _Uncached:
    """The same policy seen only through ``generate`` (as a server policy is)."""

    def __init__(self, policy: LocalPolicy) -> None:
        self.policy = policy
        self.tokenizer = policy.tokenizer
        self.version = policy.version

    def generate(self, prompts, sampling=None):
        return self.policy.generate(prompts, sampling)


def test_kept_prompt_caches_sample_what_whole_prompts_sample(qwen2_chat_dir: Path) -> None:
    policy = LocalPolicy.from_pretrained(qwen2_chat_dir, seed=0)
    greedy = SamplingParams(max_new_tokens=10, temperature=0.0)
    runs = []
    for sampler in (policy, _Uncached(policy)):
        actor = ChatPolicyActor(sampler, greedy)
        runs.append(collect(lambda: odd_env("hermes"), actor, 3, num_envs=2, seed=0).episodes)
    cached, whole = runs
    assert [len(e.transitions) for e in cached] == [len(e.transitions) for e in whole]
    for a, b in zip(cached, whole, strict=True):
        for x, y in zip(a.transitions, b.transitions, strict=True):
            assert x.prompt_token_ids == y.prompt_token_ids
            assert x.action_token_ids == y.action_token_ids
            gaps = zip(x.action_logprobs, y.action_logprobs, strict=True)
            assert max(abs(p - q) for p, q in gaps) < 1e-4
