"""vLLM for real: the tiny Llama model with LoRA adapters, served from vLLM's own environment.

The environment is built by ``bash scripts/setup_vllm_env.sh`` (CI runs it
before the tests); without it these tests fail with that command rather than
skip. vLLM runs in float32, so its log-probabilities of the sampled tokens
must equal transformers' (`LocalPolicy.log_probs`) within 1e-3.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import torch
from serving_helpers import OBSERVATIONS, random_lora_policy, start_local_server

from archer_agents.policies.adapters import AdapterRegistry, Deployment
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import SamplingParams
from archer_agents.policies.server_policy import ServerPolicy
from archer_agents.serving.vllm_server import (
    VLLMNotInstalled,
    VLLMServer,
    VLLMSettings,
    find_vllm_python,
)

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def vllm_python() -> Path:
    explicit = os.environ.get("ARCHER_VLLM_PYTHON") or REPO / ".venv-vllm" / "bin" / "python"
    try:
        return find_vllm_python(explicit)
    except VLLMNotInstalled as exc:
        pytest.fail(f"vLLM's environment is missing: {exc}")


@pytest.fixture(scope="module")
def registry(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AdapterRegistry:
    store = AdapterRegistry(tmp_path_factory.mktemp("vllm") / "registry")
    for seed in (1, 2):
        store.save(random_lora_policy(tiny_model_dir, seed=seed))
    return store


@pytest.fixture(scope="module")
def vllm(vllm_python: Path, tiny_model_dir: Path, registry: AdapterRegistry, tmp_path_factory):
    settings = VLLMSettings(
        served_model_name="tiny",
        port=0,
        dtype="float32",
        lora_modules={"archer-v0001": str(registry.get("v1").path)},
    )
    log = tmp_path_factory.mktemp("vllm-log") / "vllm.log"
    server = VLLMServer(tiny_model_dir, settings, python=vllm_python, log_path=log)
    server.start(timeout=900)
    yield server
    server.close()


def scores(policy: LocalPolicy, observations, generations) -> list[list[float]]:
    with torch.no_grad():
        ids = [g.token_ids for g in generations]
        return [t.tolist() for t in policy.log_probs(list(observations), ids)]


def gap(generations, expected) -> float:
    return max(
        max(abs(a - b) for a, b in zip(g.logprobs, e, strict=True))
        for g, e in zip(generations, expected, strict=True)
    )


def test_vllm_logprobs_equal_transformers_for_the_sampled_tokens(
    vllm, registry, tiny_model_dir
) -> None:
    adapted = LocalPolicy.from_pretrained(registry.get("v1").path)
    observations = [OBSERVATIONS[i % len(OBSERVATIONS)] for i in range(8)]
    with ServerPolicy(vllm.url, "archer-v0001", tiny_model_dir, batch_size=4) as policy:
        assert policy.context_length == 4096
        generations = policy.generate(observations, SamplingParams(max_new_tokens=48))
    for observation, generation in zip(observations, generations, strict=True):
        assert generation.prompt_token_ids == adapted.prompt_ids(observation)
        assert generation.finished == (generation.token_ids[-1] == adapted.eos_id)
    assert gap(generations, scores(adapted, observations, generations)) < TOLERANCE


def test_a_hot_loaded_adapter_serves_its_own_weights(vllm, registry, tiny_model_dir) -> None:
    first = LocalPolicy.from_pretrained(registry.get("v1").path)
    second = LocalPolicy.from_pretrained(registry.get("v2").path)
    observations = list(OBSERVATIONS)
    with (
        ServerPolicy(vllm.url, "archer-v0001", tiny_model_dir) as policy,
        Deployment(registry, vllm.url, keep=0) as deployment,
    ):
        registry.set_active("v1")
        promotion = deployment.promote("v2", [policy])
        assert policy.version == "archer-v0002"
        assert promotion.unloaded == ["archer-v0001"]
        assert deployment.loaded() == ["archer-v0002"]
        generations = policy.generate(observations, SamplingParams(max_new_tokens=32))
        assert gap(generations, scores(second, observations, generations)) < TOLERANCE
        assert gap(generations, scores(first, observations, generations)) > 1e-2
        back = deployment.rollback([policy])
        assert back.load_seconds > 0 and policy.version == "archer-v0001"
        again = policy.generate(observations, SamplingParams(max_new_tokens=32))
        assert gap(again, scores(first, observations, again)) < TOLERANCE


def test_greedy_decoding_equals_transformers(vllm, tiny_model_dir) -> None:
    base = LocalPolicy.from_pretrained(tiny_model_dir)
    greedy = SamplingParams(max_new_tokens=16, temperature=0.0)
    with ServerPolicy(vllm.url, "tiny", tiny_model_dir) as policy:
        remote = policy.generate(list(OBSERVATIONS), greedy)
    local = base.generate(list(OBSERVATIONS), greedy)
    for r, loc in zip(remote, local, strict=True):
        assert r.token_ids == loc.token_ids
    assert gap(remote, [loc.logprobs for loc in local]) < TOLERANCE


def _shape(value):
    """The keys of a JSON answer, nested, without the values."""
    if isinstance(value, dict) and not any(str(key).startswith("token_id:") for key in value):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [_shape(value[0])]
    return None


def _covers(theirs, ours) -> bool:
    """Every key of ours is in theirs, recursively (vLLM adds fields of its own)."""
    if isinstance(ours, dict):
        return isinstance(theirs, dict) and all(
            key in theirs and _covers(theirs[key], item) for key, item in ours.items()
        )
    if isinstance(ours, list):
        return isinstance(theirs, list) and _covers(theirs[0], ours[0])
    return True


def test_the_local_server_answers_in_vllms_shape(vllm, tiny_model_dir) -> None:
    base = LocalPolicy.from_pretrained(tiny_model_dir)
    local = start_local_server(tiny_model_dir)
    observation = OBSERVATIONS[0]
    completion = {
        "model": "tiny",
        "prompt": [base.prompt_ids(observation)],
        "max_tokens": 4,
        "logprobs": 2,
        "return_tokens_as_token_ids": True,
        "return_token_ids": True,
    }
    chat = {
        "model": "tiny",
        "messages": [{"role": "user", "content": observation}],
        "max_tokens": 4,
        "logprobs": True,
        "top_logprobs": 2,
        "return_tokens_as_token_ids": True,
        "return_token_ids": True,
    }
    try:
        for path, body in (("/v1/completions", completion), ("/v1/chat/completions", chat)):
            theirs = httpx.post(vllm.url + path, json=body, timeout=60).json()
            ours = httpx.post(local.url + path, json=body, timeout=60).json()
            assert _covers(_shape(theirs), _shape(ours)), (path, theirs, ours)
            for answer in (theirs, ours):
                if path == "/v1/chat/completions":
                    assert answer["prompt_token_ids"] == base.prompt_ids(observation)
                else:
                    assert answer["choices"][0]["prompt_token_ids"] == base.prompt_ids(observation)
        for path in ("/v1/models",):
            theirs = httpx.get(vllm.url + path).json()
            ours = httpx.get(local.url + path).json()
            assert _covers(_shape(theirs), _shape(ours))
    finally:
        local.stop()
