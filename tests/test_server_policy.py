"""ServerPolicy against the real local server: prompt ids, batching, exact ids and logprobs, routing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from serving_helpers import OBSERVATIONS, random_adapter, start_local_server

from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import Policy, SamplingParams
from archer_agents.policies.server_policy import ServerError, ServerPolicy
from archer_agents.serving.local_server import ServerSettings


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "a1", seed=7)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, adapter_dir: Path):
    running = start_local_server(
        tiny_model_dir, ServerSettings(api_key="k", seed=0), adapters={"a1": adapter_dir}
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def base_policy(tiny_model_dir: Path) -> LocalPolicy:
    return LocalPolicy.from_pretrained(tiny_model_dir)


@pytest.fixture
def policy(server, tiny_model_dir: Path):
    with ServerPolicy(
        server.url, "tiny", tiny_model_dir, api_key="k", batch_size=3, max_concurrency=4
    ) as p:
        yield p


def scored(policy: LocalPolicy, observations, generations) -> list[list[float]]:
    with torch.no_grad():
        ids = [g.token_ids for g in generations]
        return [t.tolist() for t in policy.log_probs(list(observations), ids)]


def max_gap(a, b) -> float:
    assert len(a) == len(b)
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


def test_is_a_policy_and_prompt_ids_equal_the_local_policys(policy, base_policy) -> None:
    assert isinstance(policy, Policy)
    assert policy.version == "tiny"
    long_observation = "Is it an animal? No. " * 400
    for observation in (*OBSERVATIONS, "", long_observation):
        assert policy.prompt_ids(observation) == base_policy.prompt_ids(observation)
        assert policy.prompt_ids(observation, 50) == base_policy.prompt_ids(observation, 50)
    assert policy.context_length == base_policy.context_length == 4096


def test_batched_concurrent_generation_returns_exact_ids_and_logprobs(
    policy, base_policy, server
) -> None:
    observations = [OBSERVATIONS[i % len(OBSERVATIONS)] for i in range(10)]  # 4 requests of <= 3
    batches_before = server.app.state.batcher.batches
    generations = policy.generate(observations, SamplingParams(max_new_tokens=12))
    assert len(generations) == 10
    assert server.app.state.batcher.batches > batches_before
    for observation, generation, expected in zip(
        observations, generations, scored(base_policy, observations, generations), strict=True
    ):
        assert generation.prompt_token_ids == base_policy.prompt_ids(observation)
        assert max_gap(generation.logprobs, expected) < 1e-5
        body = generation.token_ids[:-1] if generation.finished else generation.token_ids
        assert generation.text == base_policy.tokenizer.decode(body, skip_special_tokens=True)
        assert generation.finished == (generation.token_ids[-1] == base_policy.eos_id)
        assert 1 <= len(generation.token_ids) <= 12


def test_greedy_and_top_k_match_the_local_policy(policy, base_policy) -> None:
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    remote = policy.generate(list(OBSERVATIONS), greedy)
    local = base_policy.generate(list(OBSERVATIONS), greedy)
    for r, loc in zip(remote, local, strict=True):
        assert r.token_ids == loc.token_ids
        assert max_gap(r.logprobs, loc.logprobs) < 1e-5
    # top_k=1 samples the argmax from a one-token distribution: log-probability 0.
    top1 = policy.generate(list(OBSERVATIONS), SamplingParams(max_new_tokens=8, top_k=1))
    for r, loc in zip(top1, local, strict=True):
        assert r.token_ids == loc.token_ids
        assert max(abs(lp) for lp in r.logprobs) < 1e-6


def test_route_switches_rollouts_to_an_adapter(policy, base_policy, adapter_dir) -> None:
    adapted = LocalPolicy.from_pretrained(adapter_dir)
    policy.route("a1")
    assert policy.version == "a1"
    generations = policy.generate(list(OBSERVATIONS), SamplingParams(max_new_tokens=10))
    adapter_scores = scored(adapted, OBSERVATIONS, generations)
    base_scores = scored(base_policy, OBSERVATIONS, generations)
    for generation, expected, base in zip(generations, adapter_scores, base_scores, strict=True):
        assert max_gap(generation.logprobs, expected) < 1e-5
        assert max_gap(generation.logprobs, base) > 1e-3


def test_log_probs_say_gradients_are_computed_locally(policy) -> None:
    with pytest.raises(NotImplementedError, match="gradients are computed locally"):
        policy.log_probs(["Is it"], [[1, 2]])


def test_server_refusals_and_unreachable_servers_raise_clear_errors(server, tiny_model_dir) -> None:
    wrong_model = ServerPolicy(server.url, "missing", tiny_model_dir, api_key="k")
    with pytest.raises(ServerError, match="404.*missing"):
        wrong_model.generate(["Is it"])
    wrong_key = ServerPolicy(server.url, "tiny", tiny_model_dir, api_key="wrong")
    with pytest.raises(ServerError, match="401"):
        wrong_key.generate(["Is it"])
    with (
        ServerPolicy(
            "http://127.0.0.1:9", "tiny", tiny_model_dir, retries=1, context_length=4096
        ) as nowhere,
        pytest.raises(ServerError, match="cannot reach"),
    ):
        nowhere.generate(["Is it"])
    with pytest.raises(ValueError, match="batch_size"):
        ServerPolicy(server.url, "tiny", tiny_model_dir, batch_size=0)


def test_empty_batches_and_oversized_utterances(policy) -> None:
    assert policy.generate([]) == []
    with pytest.raises(ValueError, match="max_new_tokens"):
        policy.generate(["Is it"], SamplingParams(max_new_tokens=4096))


def test_threads_may_sample_at_once(policy, base_policy) -> None:
    import threading

    assert policy.thread_safe
    results: dict[int, list] = {}

    def sample(i: int) -> None:
        results[i] = policy.generate([OBSERVATIONS[i]], SamplingParams(max_new_tokens=6))

    threads = [threading.Thread(target=sample, args=(i,)) for i in range(len(OBSERVATIONS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, generations in results.items():
        expected = scored(base_policy, [OBSERVATIONS[i]], generations)
        assert max_gap(generations[0].logprobs, expected[0]) < 1e-5
    assert len(results) == len(OBSERVATIONS)
