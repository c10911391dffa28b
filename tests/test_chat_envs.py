"""Every kind of environment plays in chat form, with the embedded model and with SmolLM2.

Twenty Questions, SupportSim, MiniShop and a user's own tool environment are
played through `ChatPolicyActor` and the collector:

- by SmolLM2-135M-Instruct in its own ChatML template with Hermes tool calls
  (the tool environments read them): each turn's prompt ids extend the previous
  turn's prompt and sampled ids, token for token;
- by the embedded model with its own chat template (`EMBEDDED_CHAT_TEMPLATE`),
  which renders the project's text format: on the tool environments its prompt
  ids are exactly the text path's (``[bos] + tokenize(observation)``), so what
  the embedded model learned carries over.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import gymnasium as gym
import pytest
from langchain_core.tools import tool

import archer_agents.environments  # noqa: F401  (registers the archer ids)
from archer_agents.environments.base import to_ascii
from archer_agents.environments.from_tools import make_tool_env
from archer_agents.formats.tool_formats import HERMES
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import SamplingParams
from archer_agents.training.cached_rollout import CachedPolicyActor
from archer_agents.training.chat_rollout import ChatPolicyActor, chat_actor_for, chat_env_factory
from archer_agents.training.rollout import collect


def own_tools_env(**kwargs):
    def make_tools(state):
        @tool
        def add(a: int, b: int) -> str:
            """Add two numbers."""
            state["sum"] = a + b
            return str(a + b)

        return [add]

    tasks = [{"task_id": str(n), "instruction": f"Add {n} and 2."} for n in range(4)]
    return make_tool_env(
        make_tools=make_tools,
        new_state=lambda task: {"sum": None},
        tasks={"train": tasks[:2], "test": tasks[2:]},
        reward=lambda state, task, calls: state["sum"] == int(task.task_id) + 2,
        final_tools=["add"],
        max_turns=2,
        **kwargs,
    )


ENVIRONMENTS = {
    "TwentyQuestions": (lambda: gym.make("archer/TwentyQuestionsMini-v0", max_turns=2), False),
    "SupportSim": (
        lambda: gym.make("archer/SupportSim-v0", size="small", n_train=4, n_test=4, max_turns=2),
        True,
    ),
    "MiniShop": (lambda: gym.make("archer/MiniShop-v0", catalog="small", max_turns=2), False),
    "own tools": (own_tools_env, True),
}


@pytest.fixture(scope="module")
def smollm2(smollm2_dir: Path) -> LocalPolicy:
    return LocalPolicy.from_pretrained(smollm2_dir, seed=0)


@pytest.fixture(scope="module")
def embedded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded model whose tokenizer learned the four environments' text (as `init_model`
    builds them for a job)."""
    from archer_agents.policies.tiny_model import init_model
    from archer_agents.training.rollout import ScriptedActor

    texts = []
    for make, _ in ENVIRONMENTS.values():
        for episode in collect(make, ScriptedActor("random"), 2, num_envs=1, seed=0).episodes:
            texts += [t.next_observation for t in episode.transitions]
    folder = tmp_path_factory.mktemp("embedded") / "model"
    return Path(init_model(folder, texts, size="test"))


@pytest.fixture(scope="module")
def embedded(embedded_dir: Path) -> LocalPolicy:
    return LocalPolicy.from_pretrained(embedded_dir, seed=0)


def play(policy: LocalPolicy, name: str, chat_template: str | None = None):
    make, _ = ENVIRONMENTS[name]
    factory = chat_env_factory(make, policy.tokenizer) if chat_template is None else make
    actor = ChatPolicyActor(policy, SamplingParams(max_new_tokens=6), chat_template=chat_template)
    episodes = collect(factory, actor, 1, num_envs=1, seed=0).episodes
    assert episodes and episodes[0].transitions
    for t in episodes[0].transitions:
        assert t.prompt_token_ids and t.action_token_ids and t.action_logprobs
        assert len(t.action_token_ids) == len(t.action_logprobs)
    return factory, episodes[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ENVIRONMENTS))
def test_smollm2_plays_in_its_own_template_token_exactly(smollm2, name: str) -> None:
    factory, episode = play(smollm2, name)
    if ENVIRONMENTS[name][1]:
        assert factory().unwrapped.tool_format is HERMES
    first = smollm2.tokenizer.decode(episode.transitions[0].prompt_token_ids)
    assert first.startswith("<|im_start|>system") and first.endswith("<|im_start|>assistant\n")
    for before, after in itertools.pairwise(episode.transitions):
        head = [*before.prompt_token_ids, *before.action_token_ids]
        assert after.prompt_token_ids[: len(head)] == head


@pytest.mark.parametrize("name", list(ENVIRONMENTS))
def test_the_embedded_model_plays_in_its_own_template(embedded, name: str) -> None:
    """A tokenizer without a template plays in `EMBEDDED_CHAT_TEMPLATE`, whose prompts are
    the text path's ids (``[bos] + tokenize(observation)``) in every layout (transcript,
    questions, page), so what the embedded model learned carries over."""
    assert not embedded.tokenizer.chat_template
    assert isinstance(chat_actor_for(CachedPolicyActor(embedded)), ChatPolicyActor)
    _, episode = play(embedded, name)
    # Up to the first utterance outside printable ASCII: the environment's text shows such
    # characters as "?", while the chat messages keep the utterance as said.
    ascii_so_far = True
    for t in episode.transitions:
        if ascii_so_far:
            assert t.prompt_token_ids == embedded.prompt_ids(t.observation)
        ascii_so_far = ascii_so_far and to_ascii(t.action) == t.action


@pytest.mark.parametrize("name", list(ENVIRONMENTS))
def test_the_embedded_models_results_carry_over_to_the_chat_path(embedded_dir, name) -> None:
    """The same model, seed and episodes played on the text path (`CachedPolicyActor` over
    observations) and in its chat template sample the same utterances from the same ids."""
    make, _ = ENVIRONMENTS[name]
    sampling = SamplingParams(max_new_tokens=6)
    played = {}
    for path, wrap in (("text", lambda a: a), ("chat", chat_actor_for)):
        policy = LocalPolicy.from_pretrained(embedded_dir, seed=3)
        actor = wrap(CachedPolicyActor(policy, sampling))
        played[path] = collect(make, actor, 3, num_envs=2, seed=5).episodes
    for text, chat in zip(played["text"], played["chat"], strict=True):
        assert text.task_id == chat.task_id
        for a, b in zip(text.transitions, chat.transitions, strict=False):
            assert b.prompt_token_ids == a.prompt_token_ids or a.prompt_token_ids is None
            assert (a.action, a.action_token_ids) == (b.action, b.action_token_ids)
            if to_ascii(a.action) != a.action:
                break  # later prompts show the raw utterance in chat form (see above)
