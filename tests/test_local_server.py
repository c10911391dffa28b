"""The local OpenAI-compatible server: real uvicorn on a free 127.0.0.1 port, the real tiny model."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_helpers import OBSERVATIONS, random_adapter, start_local_server

from archer_agents.formats.chat_prompt import CHAT_TEMPLATE, chat_prompt_text
from archer_agents.formats.prompts import render_prompt
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.serving.local_server import ServerSettings


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "a1", seed=1)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path):
    running = start_local_server(tiny_model_dir, ServerSettings(batch_wait_ms=50, seed=0))
    yield running
    running.stop()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def base_policy(tiny_model_dir: Path) -> LocalPolicy:
    return LocalPolicy.from_pretrained(tiny_model_dir)


def completion(client: httpx.Client, **body) -> dict:
    body.setdefault("model", "tiny")
    body.setdefault("logprobs", 0)
    body.setdefault("return_tokens_as_token_ids", True)
    body.setdefault("return_token_ids", True)
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def scored(policy: LocalPolicy, observations, ids) -> list[list[float]]:
    with torch.no_grad():
        return [t.tolist() for t in policy.log_probs(list(observations), ids)]


def assert_close(a: list[float], b: list[float], tol: float = 1e-5) -> None:
    assert len(a) == len(b)
    assert max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0) < tol


def test_binds_loopback_and_lists_the_model(server, client) -> None:
    assert server.host == "127.0.0.1"
    assert client.get("/health").json() == {"status": "ok"}
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["tiny"]
    assert models["data"][0]["max_model_len"] == 4096


def test_completion_logprobs_equal_the_policy_scores_of_the_sampled_ids(
    client, base_policy
) -> None:
    prompts = [base_policy.prompt_ids(obs) for obs in OBSERVATIONS]
    answer = completion(client, prompt=prompts, max_tokens=12, seed=3)
    assert answer["object"] == "text_completion"
    choices = answer["choices"]
    assert [c["index"] for c in choices] == list(range(len(prompts)))
    ids = []
    for prompt, choice in zip(prompts, choices, strict=True):
        assert choice["prompt_token_ids"] == prompt
        tokens = choice["logprobs"]["tokens"]
        assert tokens == [f"token_id:{i}" for i in choice["token_ids"]]
        assert choice["logprobs"]["top_logprobs"] is None
        ids.append(choice["token_ids"])
    for choice, expected in zip(choices, scored(base_policy, OBSERVATIONS, ids), strict=True):
        assert_close(choice["logprobs"]["token_logprobs"], expected)
    usage = answer["usage"]
    assert usage["prompt_tokens"] == sum(len(p) for p in prompts)
    assert usage["completion_tokens"] == sum(len(i) for i in ids)


def test_utterances_end_with_eos_and_it_is_scored(client, base_policy) -> None:
    eos = base_policy.eos_id
    prompt = base_policy.prompt_ids("Is it")
    answer = completion(client, prompt=prompt, n=16, max_tokens=120, seed=0)
    stopped = [c for c in answer["choices"] if c["finish_reason"] == "stop"]
    assert stopped, "no utterance ended in 16 x 120 tokens"
    for choice in answer["choices"]:
        ends = choice["token_ids"][-1] == eos
        assert ends == (choice["finish_reason"] == "stop")
        assert eos not in choice["token_ids"][:-1]
    ids = [c["token_ids"] for c in stopped]
    for choice, expected in zip(
        stopped, scored(base_policy, ["Is it"] * len(ids), ids), strict=True
    ):
        assert_close(choice["logprobs"]["token_logprobs"], expected)
        assert choice["text"] == base_policy.tokenizer.decode(
            choice["token_ids"][:-1], skip_special_tokens=True
        )


def test_top_logprobs_hold_the_sampled_token_and_the_most_likely(client, base_policy) -> None:
    prompt = base_policy.prompt_ids("Is it")
    choice = completion(client, prompt=prompt, max_tokens=4, logprobs=3, seed=1)["choices"][0]
    with torch.no_grad():
        logits = base_policy.model(input_ids=torch.tensor([prompt + choice["token_ids"]])).logits[
            0, len(prompt) - 1 : -1
        ]
    expected = torch.log_softmax(logits, -1).topk(3, dim=-1)
    for t, top in enumerate(choice["logprobs"]["top_logprobs"]):
        sampled = f"token_id:{choice['token_ids'][t]}"
        assert top[sampled] == choice["logprobs"]["token_logprobs"][t]
        for token_id, value in zip(
            expected.indices[t].tolist(), expected.values[t].tolist(), strict=True
        ):
            assert abs(top[f"token_id:{token_id}"] - value) < 1e-5


def test_seeded_requests_repeat_and_greedy_matches_the_policy(client, base_policy) -> None:
    prompt = base_policy.prompt_ids(OBSERVATIONS[0])
    first = completion(client, prompt=prompt, max_tokens=10, seed=42)["choices"][0]
    again = completion(client, prompt=prompt, max_tokens=10, seed=42)["choices"][0]
    assert first["token_ids"] == again["token_ids"]
    greedy = completion(client, prompt=prompt, max_tokens=10, temperature=0)["choices"][0]
    from archer_agents.policies.protocol import SamplingParams

    local = base_policy.generate(
        [OBSERVATIONS[0]], SamplingParams(max_new_tokens=10, temperature=0)
    )[0]
    assert greedy["token_ids"] == local.token_ids
    assert_close(greedy["logprobs"]["token_logprobs"], local.logprobs)


def test_text_prompts_are_tokenized_like_vllm(client, base_policy) -> None:
    choice = completion(client, prompt="Is it a bird?", max_tokens=2)["choices"][0]
    assert choice["prompt_token_ids"] == base_policy.tokenizer("Is it a bird?")["input_ids"]


def test_chat_renders_the_observation_like_the_policy(client, base_policy) -> None:
    observation = OBSERVATIONS[1]
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": [{"role": "user", "content": observation}],
            "max_tokens": 6,
            "logprobs": True,
            "top_logprobs": 2,
            "return_tokens_as_token_ids": True,
            "return_token_ids": True,
            "seed": 5,
        },
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "chat.completion"
    assert answer["prompt_token_ids"] == base_policy.prompt_ids(observation)
    choice = answer["choices"][0]
    assert choice["message"]["role"] == "assistant"
    content = choice["logprobs"]["content"]
    assert [int(c["token"].split(":")[1]) for c in content] == choice["token_ids"]
    assert all(len(c["top_logprobs"]) == 2 for c in content)
    expected = scored(base_policy, [observation], [choice["token_ids"]])[0]
    assert_close([c["logprob"] for c in content], expected)


def test_chat_template_for_vllm_renders_like_the_local_server(base_policy) -> None:
    tokenizer = base_policy.tokenizer
    messages = [
        {"role": "system", "content": "You play Twenty Questions."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Is it "}, {"type": "text", "text": "red?"}],
        },
        {"role": "assistant", "content": "No."},
    ]
    jinja = tokenizer.apply_chat_template(messages, chat_template=CHAT_TEMPLATE, tokenize=False)
    assert jinja == chat_prompt_text(messages, tokenizer)
    assert jinja == tokenizer.bos_token + render_prompt(
        "You play Twenty Questions.\nIs it red?\nNo."
    )


BAD_REQUESTS = [
    ({"model": "nope", "prompt": [1, 2]}, 404, "does not exist"),
    ({"model": "tiny"}, 400, "prompt: Field required"),
    ({"model": "tiny", "prompt": [1], "temprature": 1.0}, 400, "temprature"),
    ({"model": "tiny", "prompt": [99999]}, 400, "outside the vocabulary"),
    ({"model": "tiny", "prompt": [-1]}, 400, "outside the vocabulary"),
    ({"model": "tiny", "prompt": []}, 400, "no prompt"),
    ({"model": "tiny", "prompt": [[]]}, 400, "empty"),
    ({"model": "tiny", "prompt": ""}, 400, "empty"),
    ({"model": "tiny", "prompt": [1], "max_tokens": 5000}, 400, "maximum context length"),
    ({"model": "tiny", "prompt": [1], "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "tiny", "prompt": [1], "temperature": -1}, 400, "temperature"),
    ({"model": "tiny", "prompt": [1], "temperature": 1e-300}, 400, "at least 0.01"),
    ({"model": "tiny", "prompt": [1], "temperature": 1e300}, 400, "temperature"),
    ({"model": "tiny", "prompt": [1], "top_p": 0}, 400, "top_p"),
    ({"model": "tiny", "prompt": [1], "logprobs": 21}, 400, "logprobs"),
    ({"model": "tiny", "prompt": [1], "n": 17}, 400, "n=17"),
    ({"model": "tiny", "prompt": [[1]] * 300}, 400, "limit of 256"),
    ({"model": "tiny", "prompt": [1], "stream": True}, 400, "stream"),
    ({"model": "tiny", "prompt": [1], "stop": ["\n"]}, 400, "stop sequences"),
    ({"model": "tiny", "prompt": [1], "echo": True}, 400, "echo"),
    ({"model": "tiny", "prompt": {"a": 1}}, 400, "prompt"),
    ([1, 2, 3], 400, "invalid request"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_REQUESTS)
def test_bad_completion_requests_get_a_4xx_with_a_message(client, body, status, message) -> None:
    response = client.post("/v1/completions", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"]
    assert error["code"] == status


_FIELDS = [
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "n",
    "logprobs",
    "seed",
    "messages",
    "stop",
    "stream",
    "return_token_ids",
    "echo",
]
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.dictionaries(st.sampled_from(_FIELDS), _JSON, max_size=6),
    path=st.sampled_from(["/v1/completions", "/v1/chat/completions"]),
)
def test_fuzzed_request_bodies_never_get_a_5xx(client, body, path) -> None:
    body.setdefault("model", "tiny")
    if isinstance(body.get("max_tokens"), int):
        body["max_tokens"] = min(body["max_tokens"], 4)
    if isinstance(body.get("n"), int):
        body["n"] = min(body["n"], 2)
    response = client.post(path, json=body)
    assert response.status_code < 500, (body, response.text)
    if response.status_code >= 400:
        assert response.json()["error"]["message"]


def test_malformed_bodies_routes_and_chat_requests_get_a_4xx(client) -> None:
    assert client.post("/v1/completions", content=b"{not json").status_code == 400
    for value in (b"NaN", b"Infinity"):
        body = b'{"model": "tiny", "prompt": [1], "temperature": ' + value + b"}"
        assert client.post("/v1/completions", content=body).status_code == 400
    assert client.post("/v1/completions", content=b"\xff\xfe").status_code == 400
    assert client.get("/v1/completions").status_code == 405
    assert client.get("/v1/nothing").status_code == 404
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    for extra, status in (
        ({"messages": []}, 400),
        ({"messages": [{"role": "robot", "content": "x"}]}, 400),
        ({"top_logprobs": 2}, 400),
        ({"tools": [{"type": "function"}]}, 400),
        ({"model": "other"}, 404),
    ):
        response = client.post("/v1/chat/completions", json={**chat, **extra})
        assert response.status_code == status, (extra, response.text)
        assert response.json()["error"]["message"]
    assert client.get("/health").status_code == 200


def test_concurrent_requests_are_batched_into_one_generate_call(
    server, client, base_policy
) -> None:
    batcher = server.app.state.batcher
    before = batcher.batches
    results: list[dict] = [{}] * 8
    prompts = [base_policy.prompt_ids(OBSERVATIONS[i % 4]) for i in range(8)]

    def send(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            results[i] = completion(c, prompt=prompts[i], max_tokens=8)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert batcher.batches - before < 8
    ids = [r["choices"][0]["token_ids"] for r in results]
    observations = [OBSERVATIONS[i % 4] for i in range(8)]
    for result, expected in zip(results, scored(base_policy, observations, ids), strict=True):
        assert_close(result["choices"][0]["logprobs"]["token_logprobs"], expected)


def test_adapters_load_serve_their_weights_and_unload(client, base_policy, adapter_dir) -> None:
    response = client.post(
        "/v1/load_lora_adapter", json={"lora_name": "a1", "lora_path": str(adapter_dir)}
    )
    assert response.status_code == 200, response.text
    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert models["a1"]["parent"] == "tiny"
    assert models["a1"]["root"] == str(adapter_dir)

    adapted = LocalPolicy.from_pretrained(adapter_dir)
    prompts = [base_policy.prompt_ids(obs) for obs in OBSERVATIONS]
    choices = completion(client, model="a1", prompt=prompts, max_tokens=10)["choices"]
    ids = [c["token_ids"] for c in choices]
    adapter_scores = scored(adapted, OBSERVATIONS, ids)
    base_scores = scored(base_policy, OBSERVATIONS, ids)
    for choice, expected, base in zip(choices, adapter_scores, base_scores, strict=True):
        assert_close(choice["logprobs"]["token_logprobs"], expected)
        assert max(abs(x - y) for x, y in zip(expected, base, strict=True)) > 1e-3
    # The base model is still served unchanged beside the adapter.
    base_choice = completion(client, prompt=prompts[0], max_tokens=6)["choices"][0]
    assert_close(
        base_choice["logprobs"]["token_logprobs"],
        scored(base_policy, OBSERVATIONS[:1], [base_choice["token_ids"]])[0],
    )

    again = client.post(
        "/v1/load_lora_adapter", json={"lora_name": "a1", "lora_path": str(adapter_dir)}
    )
    assert again.status_code == 400 and "already been loaded" in again.text
    bogus = client.post(
        "/v1/load_lora_adapter", json={"lora_name": "b", "lora_path": str(adapter_dir.parent)}
    )
    assert bogus.status_code == 400 and "adapter_config.json" in bogus.text

    assert client.post("/v1/unload_lora_adapter", json={"lora_name": "a1"}).status_code == 200
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["tiny"]
    gone = client.post("/v1/completions", json={"model": "a1", "prompt": [1]})
    assert gone.status_code == 404
    assert client.post("/v1/unload_lora_adapter", json={"lora_name": "a1"}).status_code == 404
    after = completion(client, prompt=prompts[0], max_tokens=6)["choices"][0]
    assert_close(
        after["logprobs"]["token_logprobs"],
        scored(base_policy, OBSERVATIONS[:1], [after["token_ids"]])[0],
    )


def test_a_broken_adapter_is_refused_and_the_server_keeps_serving(
    client, base_policy, tiny_model_dir, adapter_dir, tmp_path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text((adapter_dir / "adapter_config.json").read_text())
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    response = client.post(
        "/v1/load_lora_adapter", json={"lora_name": "broken", "lora_path": str(broken)}
    )
    assert response.status_code == 400, response.text
    assert "broken" not in [m["id"] for m in client.get("/v1/models").json()["data"]]
    choice = completion(client, prompt=base_policy.prompt_ids("Is it"), max_tokens=6)["choices"][0]
    assert_close(
        choice["logprobs"]["token_logprobs"],
        scored(base_policy, ["Is it"], [choice["token_ids"]])[0],
    )


@pytest.fixture(scope="module")
def guarded(tiny_model_dir: Path):
    settings = ServerSettings(api_key="s3cret", max_request_bytes=2048, max_concurrency=2)
    running = start_local_server(tiny_model_dir, settings)
    yield running
    running.stop()


def test_api_key_is_required_on_v1_routes(guarded) -> None:
    url = guarded.url
    assert httpx.get(f"{url}/v1/models").status_code == 401
    wrong = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "API key" in wrong.json()["error"]["message"]
    right = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer s3cret"})
    assert right.status_code == 200
    assert httpx.get(f"{url}/health").status_code == 200


def test_request_bodies_over_the_limit_get_413(guarded) -> None:
    headers = {"Authorization": "Bearer s3cret"}
    big = {"model": "tiny", "prompt": [1] * 2000}
    response = httpx.post(f"{guarded.url}/v1/completions", json=big, headers=headers)
    assert response.status_code == 413
    assert "2048 bytes" in response.json()["error"]["message"]

    def chunks():
        for _ in range(10):
            yield b" " * 500

    streamed = httpx.post(f"{guarded.url}/v1/completions", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    small = httpx.post(
        f"{guarded.url}/v1/completions",
        json={"model": "tiny", "prompt": [1], "max_tokens": 1},
        headers=headers,
    )
    assert small.status_code == 200


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    """Wait until ``condition()`` holds (a state, not a duration: no timing assumption)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.005)


def test_requests_over_the_concurrency_limit_get_429(guarded) -> None:
    """Two requests held in flight (the model thread blocked on an event) fill the limit of 2."""
    headers = {"Authorization": "Bearer s3cret"}
    body = {"model": "tiny", "prompt": [1], "max_tokens": 2}
    release = threading.Event()
    guarded.app.state.batcher.executor.submit(release.wait)  # the model's only thread waits
    statuses: list[int] = []

    def send() -> None:
        response = httpx.post(
            f"{guarded.url}/v1/completions", json=body, headers=headers, timeout=120
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=send) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        in_flight = guarded.app.state.in_flight
        wait_for(lambda: in_flight.count == 2, "two requests in flight")
        refused = httpx.post(f"{guarded.url}/v1/completions", json=body, headers=headers)
        assert refused.status_code == 429
        assert "in flight" in refused.json()["error"]["message"]
    finally:
        release.set()
        for thread in threads:
            thread.join()
    assert statuses == [200, 200]
    again = httpx.post(f"{guarded.url}/v1/completions", json=body, headers=headers)
    assert again.status_code == 200
