"""The local server is total: every malformed request gets a 4xx, never a 500, and it keeps serving.

Property-based tests against one real server (uvicorn on 127.0.0.1, the tiny
model) per module: arbitrary JSON bodies, raw JSON text that Python's encoder
would refuse (NaN, Infinity, 1e999, huge integers, lone surrogates, deep
nesting), any values in the known fields, any tool schemas and any tool-call
arguments in the history. After each example the server must still answer a
valid request, and it must have logged no failure. Also here: a genuine bug is
logged once and answered 500 in OpenAI's error shape, and requests for
different adapters are never sampled together.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_helpers import OBSERVATIONS, random_adapter, start_local_server

from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.serving.local_server import ServerSettings, create_app

SERVER_LOGGERS = ("archer_agents.serving", "uvicorn")
VALID = {"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 1}
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path):
    running = start_local_server(tiny_model_dir, ServerSettings(batch_wait_ms=0, seed=0))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


@pytest.fixture
def no_failures(caplog):
    """Fails the test if the server logged an error (a 500, or a failed batch)."""
    caplog.set_level(logging.WARNING)
    yield
    errors = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith(SERVER_LOGGERS)
    ]
    assert not errors, [r.getMessage() for r in errors]


def raw(value) -> bytes:
    """JSON text of ``value`` as a careless client writes it: NaN, Infinity, lone surrogates."""
    return json.dumps(value, allow_nan=True, ensure_ascii=True).encode()


def assert_total(client: httpx.Client, path: str, body: bytes) -> httpx.Response:
    """``body`` gets a 200 or a 4xx in OpenAI's error shape, and a valid request works after it."""
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code < 500, (body[:300], response.text[:500])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and error["code"] == response.status_code
    after = client.post("/v1/completions", json=VALID)
    assert after.status_code == 200, after.text
    return response


TEXT = st.text(st.characters(exclude_categories=()), max_size=12)  # surrogates included
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(10**40), 10**40)
    | st.floats()  # NaN and infinities included: written raw
    | TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
PATHOLOGICAL = st.sampled_from(
    [
        b"NaN",
        b"-Infinity",
        b"1e999",
        b"9" * 5000,
        b"-" + b"9" * 400,
        b'"\\ud800"',
        b'"\\udc00x"',
        b"[" * 1000 + b"]" * 1000,
        b'{"a":' * 300 + b"1" + b"}" * 300,
        b"[" * 150 + b"]" * 150,
        b"tru",
        b"",
        b'"unterminated',
        b"\xff\xfe",
    ]
)
ROUTES = st.sampled_from(
    ["/v1/completions", "/v1/chat/completions", "/v1/load_lora_adapter", "/v1/unload_lora_adapter"]
)
FIELDS = {
    "model": st.just("tiny") | JSON,
    "prompt": st.lists(st.integers(0, 600), min_size=1, max_size=4) | TEXT | JSON,
    "messages": st.just([{"role": "user", "content": "Is it"}]) | JSON,
    "max_tokens": st.integers() | JSON,
    "max_completion_tokens": st.integers() | JSON,
    "temperature": st.floats() | JSON,
    "top_p": st.floats() | JSON,
    "top_k": st.integers() | JSON,
    "n": st.integers() | JSON,
    "seed": st.integers() | st.integers(-(2**70), 2**70),
    "logprobs": st.integers() | st.booleans() | JSON,
    "top_logprobs": st.integers() | JSON,
    "stop": JSON,
    "stream": JSON,
    "echo": JSON,
    "user": JSON,
    "return_token_ids": JSON,
    "return_tokens_as_token_ids": JSON,
    "tools": JSON,
    "tool_choice": JSON,
    "lora_name": TEXT | JSON,
    "lora_path": TEXT | JSON,
}


def bounded(body: dict) -> dict:
    """Keep valid requests short: counts that the server would honour are capped at a few tokens.

    Out-of-range values (0, negative, beyond the context or the server's
    limits) are left as they are: they are what is under test.
    """
    for key, cap in (("max_tokens", 3), ("max_completion_tokens", 3), ("n", 2)):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and cap < value <= 4096:
            body[key] = cap
    if "max_tokens" not in body and "max_completion_tokens" not in body:
        body["max_tokens"] = 2  # unset, a chat answer may run to the end of the context
    return body


@FUZZ
@given(path=ROUTES, value=JSON)
def test_any_json_body_gets_a_200_or_a_4xx(client, no_failures, path, value) -> None:
    assert_total(client, path, raw(value))


@FUZZ
@given(
    path=ROUTES,
    body=st.fixed_dictionaries({}, optional=FIELDS),
)
def test_any_values_in_the_known_fields_get_a_200_or_a_4xx(client, no_failures, path, body) -> None:
    assert_total(client, path, raw(bounded(body)))


@FUZZ
@given(
    path=ROUTES,
    field=st.sampled_from(sorted(FIELDS)),
    value=PATHOLOGICAL,
)
def test_raw_json_that_python_would_not_write_gets_a_400(
    client, no_failures, path, field, value
) -> None:
    """NaN, Infinity, 1e999, 5000 digits, lone surrogates, deep nesting: refused, not a 500."""
    base = {"model": "tiny", "prompt": [1], "messages": [{"role": "user", "content": "hi"}]}
    body = raw({**base, "max_tokens": 1, field: "HOLE"}).replace(b'"HOLE"', value)
    response = assert_total(client, path, body)
    if value not in (b"[" * 150 + b"]" * 150, b"-" + b"9" * 400):
        assert response.status_code == 400, response.text


SCHEMA = st.fixed_dictionaries(
    {},
    optional={
        "type": st.just("object") | JSON,
        "properties": st.dictionaries(TEXT, st.fixed_dictionaries({"type": TEXT}) | JSON) | JSON,
        "required": st.lists(TEXT) | JSON,
    },
)
TOOL = st.fixed_dictionaries(
    {
        "type": st.just("function") | JSON,
        "function": st.fixed_dictionaries(
            {"name": st.sampled_from(["lookup", "f"]) | TEXT},
            optional={"description": TEXT | JSON, "parameters": SCHEMA | JSON, "strict": JSON},
        )
        | JSON,
    }
)


@FUZZ
@given(
    tools=st.lists(TOOL, max_size=3) | JSON,
    choice=st.none() | st.sampled_from(["auto", "none", "required"]) | JSON,
)
def test_any_tool_schemas_get_a_200_or_a_4xx(client, no_failures, tools, choice) -> None:
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Find the order."}],
        "tools": tools,
        "max_tokens": 3,
    }
    if choice is not None:
        body["tool_choice"] = choice
    assert_total(client, "/v1/chat/completions", raw(body))


def deep(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


ARGUMENTS = (
    TEXT
    | JSON.map(lambda v: json.dumps(v, allow_nan=True))
    | st.dictionaries(TEXT, JSON).map(lambda v: json.dumps(v, allow_nan=True, ensure_ascii=False))
    | st.integers(1, 400).map(deep)
    | st.integers(1, 400).map(lambda n: '{"a": ' + "[" * n + "]" * n + "}")
    | st.sampled_from(
        ['{"a": NaN}', '{"a": 1e999}', '{"a": "\\ud800"}', '{"a": ' + "9" * 5000 + "}"]
    )
    | st.integers(1000, 200_000).map(lambda n: json.dumps({"text": "x" * n}))
)


@FUZZ
@given(
    arguments=ARGUMENTS,
    name=st.just("lookup") | TEXT,
    call_id=st.just("call_1") | TEXT,
    with_tools=st.booleans(),
)
def test_any_tool_call_arguments_in_the_history_get_a_200_or_a_4xx(
    client, no_failures, arguments, name, call_id, with_tools
) -> None:
    body = {
        "model": "tiny",
        "messages": [
            {"role": "user", "content": "Find order 7."},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": "found"},
        ],
        "max_tokens": 3,
    }
    if with_tools:
        body["tools"] = [{"type": "function", "function": {"name": "lookup"}}]
    assert_total(client, "/v1/chat/completions", raw(body))


def test_pathological_requests_name_the_problem(client) -> None:
    """The 400s say what is wrong: range, JSON, nesting, schema, context length with the sizes."""
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    cases = [
        ("/v1/completions", {**VALID, "max_tokens": 10**30}, "max_tokens"),
        ("/v1/completions", {**VALID, "logprobs": -1}, "logprobs"),
        ("/v1/completions", {**VALID, "n": 10**30}, "n:"),
        ("/v1/completions", {**VALID, "seed": 2**64}, "seed"),
        ("/v1/completions", {**VALID, "top_k": 2**40}, "top_k"),
        ("/v1/completions", {**VALID, "prompt": [1] * 4096}, "4097 tokens (4096 in the prompt"),
        (
            "/v1/chat/completions",
            {**chat, "messages": [{"role": "user", "content": "Is it " * 3000}]},
            "in the prompt",
        ),
        (
            "/v1/chat/completions",
            {
                **chat,
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"properties": [1]}},
                    }
                ],
            },
            "properties must be an object",
        ),
        (
            "/v1/chat/completions",
            {
                **chat,
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"required": [{}]}},
                    }
                ],
            },
            "required must be a list",
        ),
        (
            "/v1/chat/completions",
            {
                **chat,
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "1", "function": {"name": "f", "arguments": deep(100)}}
                        ],
                    },
                ],
            },
            "nested more than 64 levels",
        ),
        (
            "/v1/chat/completions",
            {
                **chat,
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "1", "function": {"name": "f", "arguments": '{"a": NaN}'}}
                        ],
                    },
                ],
            },
            "strict JSON",
        ),
        ("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/tmp/\u0000"}, "lora_path"),
    ]
    for path, body, message in cases:
        response = client.post(path, content=raw(body))
        assert response.status_code == 400, (body, response.text)
        assert message in response.json()["error"]["message"], response.text
    nan = client.post("/v1/completions", content=b'{"model": "tiny", "prompt": [1], "seed": NaN}')
    assert nan.status_code == 400 and "strict JSON" in nan.text
    nested = client.post("/v1/completions", content=b"[" * 5000 + b"]" * 5000)
    assert nested.status_code == 400 and "recursion limit" in nested.text


def test_a_bug_is_logged_once_and_answered_500_in_openai_shape(tiny_model_dir, caplog) -> None:
    """A route that fails unexpectedly: one log record with the traceback, a 500 error body.

    TestClient re-raises whatever escapes the app, so a pass also shows the
    exception stops at the error boundary (uvicorn would have logged it again).
    """
    app = create_app(LocalPolicy.from_pretrained(tiny_model_dir), "tiny")

    @app.get("/v1/broken")
    async def broken() -> None:
        raise RuntimeError("deliberate bug")

    with caplog.at_level(logging.ERROR), TestClient(app) as client:
        response = client.get("/v1/broken")
        assert client.post("/v1/completions", json=VALID).status_code == 200
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "message": "the server failed on this request (RuntimeError: deliberate bug)",
            "type": "InternalServerError",
            "param": None,
            "code": 500,
        }
    }
    records = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(records) == 1 and records[0].exc_info is not None
    assert "GET /v1/broken" in records[0].getMessage()


@pytest.fixture(scope="module")
def two_adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("adapters")
    dirs = {
        name: random_adapter(tiny_model_dir, root / name, seed=seed)
        for name, seed in (("a1", 1), ("a2", 2))
    }
    running = start_local_server(
        tiny_model_dir, ServerSettings(batch_wait_ms=0, seed=0), adapters=dirs
    )
    yield running, dirs
    running.stop()


def scores(policy: LocalPolicy, observation: str, ids: list[int]) -> list[float]:
    with torch.no_grad():
        return policy.log_probs([observation], [ids])[0].tolist()


def test_requests_for_different_adapters_are_never_sampled_together(
    two_adapters, tiny_model_dir
) -> None:
    """a1, a2 and base requests queued together: each is sampled under its own weights.

    The model thread is held on an event while a first request occupies the
    batcher, so the next four requests are all queued when it is released and
    are taken in one gather (no timing involved). They then run as three
    generate calls, one per adapter (the two a1 requests share one), and
    each answer's log-probabilities are its own model's scores.
    """
    server, dirs = two_adapters
    batcher = server.app.state.batcher
    observation = OBSERVATIONS[0]
    policies = {name: LocalPolicy.from_pretrained(path) for name, path in dirs.items()}
    policies["tiny"] = LocalPolicy.from_pretrained(tiny_model_dir)
    prompt = policies["tiny"].prompt_ids(observation)
    results: dict[int, dict] = {}

    def send(index: int, model: str) -> None:
        body = {"model": model, "prompt": prompt, "max_tokens": 8, "temperature": 0, "logprobs": 0}
        body["return_token_ids"] = True
        with httpx.Client(base_url=server.url, timeout=120) as c:
            response = c.post("/v1/completions", json=body)
            assert response.status_code == 200, response.text
            results[index] = response.json()

    def wait_for(condition, what: str) -> None:
        deadline = time.monotonic() + 60
        while not condition():
            assert time.monotonic() < deadline, f"gave up waiting for {what}"
            time.sleep(0.005)

    models = ["a1", "a2", "tiny", "a1"]
    release = threading.Event()
    batcher.executor.submit(release.wait)
    gathered, batches = batcher.gathered, batcher.batches
    first = threading.Thread(target=send, args=(-1, "tiny"))
    threads = [threading.Thread(target=send, args=(i, m)) for i, m in enumerate(models)]
    try:
        first.start()
        wait_for(lambda: batcher.gathered == gathered + 1, "the first request's batch")
        for thread in threads:
            thread.start()
        wait_for(lambda: batcher.queue.qsize() == len(models), "the four requests queued")
    finally:
        release.set()
        for thread in [first, *threads]:
            thread.join()
    assert batcher.gathered == gathered + 1 + len(models)
    assert batcher.batches - batches == 1 + 3  # the first; then a1 (two requests), a2, base
    for index, model in enumerate(models):
        choice = results[index]["choices"][0]
        ids, got = choice["token_ids"], choice["logprobs"]["token_logprobs"]
        expected = scores(policies[model], observation, ids)
        assert max(abs(x - y) for x, y in zip(got, expected, strict=True)) < 1e-5, model
        for other, policy in policies.items():
            if other != model:
                theirs = scores(policy, observation, ids)
                assert max(abs(x - y) for x, y in zip(got, theirs, strict=True)) > 1e-3, other
    a1 = [results[i]["choices"][0]["token_ids"] for i, m in enumerate(models) if m == "a1"]
    assert a1[0] == a1[1]  # greedy, same prompt, same adapter
