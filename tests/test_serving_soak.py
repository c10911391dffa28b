"""A 60 s soak of the local server on loopback (`benchmarks/serving_soak.py`): no errors, flat memory."""

from __future__ import annotations

import pytest
from benchmark_scripts import load_benchmark


@pytest.mark.slow
def test_a_minute_of_mixed_requests_leaves_the_server_healthy_and_its_memory_flat() -> None:
    soak = load_benchmark("serving_soak")
    result = soak.soak(duration=60.0, clients=3)
    print(soak.table(result))
    assert result["requests"]["valid"] > 50 and result["requests"]["invalid"] > 50
    assert result["errors"] == {"valid": 0, "invalid": 0}, result["error_samples"]
    assert result["rss_end_mib"] - result["rss_warm_mib"] < soak.RSS_TOLERANCE_MIB
    assert result["healthy_after"]
