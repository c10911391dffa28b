"""NaN and infinity in sampling settings are refused where they enter, never sampled with.

`SamplingParams` (what every policy samples with) refuses them in every field;
the local server answers a request that holds one, as a JSON number or as text
pydantic would read as a float, with a 400 naming the field (and keeps
serving). The command line's and the config loader's refusals are tested in
test_cli_fuzz.py and test_config_fuzz.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import SamplingParams
from archer_agents.serving.local_server import create_app

FAST = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
NON_FINITE_TEXT = st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "-Infinity", "1e999"])
NON_FINITE_JSON = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
FLOAT_FIELDS = ["temperature", "top_p", "presence_penalty", "frequency_penalty"]
BODIES = {
    "/v1/completions": '{"model": "tiny", "prompt": [1, 2], "max_tokens": 1',
    "/v1/chat/completions": (
        '{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1'
    ),
}


@FAST
@given(field=st.sampled_from(["temperature", "top_p"]), value=NON_FINITE | NON_FINITE_TEXT)
def test_sampling_params_refuse_nan_and_infinity(field: str, value: float | str) -> None:
    with pytest.raises(ValidationError, match="finite number") as refused:
        SamplingParams(**{field: value})  # type: ignore[arg-type]
    assert refused.value.errors()[0]["loc"] == (field,)


@FAST
@given(
    temperature=st.floats(min_value=0, max_value=1e6),
    top_p=st.floats(min_value=1e-6, max_value=1.0),
)
def test_sampling_params_take_finite_values_as_given(temperature: float, top_p: float) -> None:
    params = SamplingParams(temperature=temperature, top_p=top_p)
    assert (params.temperature, params.top_p) == (temperature, top_p)


@pytest.fixture(scope="module")
def client(tiny_model_dir: Path):
    with TestClient(create_app(LocalPolicy.from_pretrained(tiny_model_dir), "tiny")) as c:
        yield c


@FAST
@given(
    path=st.sampled_from(sorted(BODIES)),
    field=st.sampled_from(FLOAT_FIELDS),
    value=NON_FINITE_JSON | NON_FINITE_TEXT.map(lambda text: f'"{text}"'),
)
def test_the_server_answers_nan_or_infinity_in_a_sampling_field_with_a_400(
    client: TestClient, path: str, field: str, value: str
) -> None:
    body = f'{BODIES[path]}, "{field}": {value}}}'
    response = client.post(path, content=body.encode())
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    if value.startswith('"'):  # valid JSON: the field is named
        assert f"{field}: Input should be a finite number" in message
    else:  # NaN and Infinity are not JSON; 1e999 overflows to one
        assert "strict JSON" in message or f"{field}: Input should be a finite number" in message
    ok = client.post(path, content=(BODIES[path] + "}").encode())
    assert ok.status_code == 200, ok.text
