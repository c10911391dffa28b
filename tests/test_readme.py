"""The README's Python examples run as written, and do what they say."""

from __future__ import annotations

import re
from pathlib import Path

from archer_agents.data.episode_log import latest_revisions, read_episodes
from archer_agents.policies.adapters import AdapterRegistry

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(tmp_path: Path, monkeypatch, capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 2, "the README lost its Python examples"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out

    # Train ArCHer from Python: two iterations of 8 episodes, evaluated, saved.
    assert "16 episodes; test return" in out
    run = tmp_path / "runs" / "archer"
    assert (run / "metrics.jsonl").is_file() and (run / "episodes.jsonl").is_file()
    assert len(read_episodes(run / "episodes.jsonl")[0]) == 16

    # Your own tools: the module registered its environment, and its expert wins.
    import gymnasium as gym

    env = gym.make("bank/MoveMoney-v0")
    env.reset(seed=0, options={"split": "test"})
    *_, info = env.step("transfer(50)")
    *_, reward, terminated, _, info = env.step("done()")
    assert terminated and info["success"] and reward > 0

    # Deploy, record, retrain: the agent's games trained v0002, which then served it.
    assert "active version: v0002" in out
    registry = AdapterRegistry(tmp_path / "runs" / "adapters")
    assert registry.history == ["v0001", "v0002"]
    lines, _ = read_episodes(tmp_path / "runs" / "production.jsonl")
    episodes = latest_revisions(lines)
    versions = [{t.policy_version for t in e.transitions} for e in episodes]
    assert versions == [{"archer-v0001"}] * 3 + [{"archer-v0002"}]
    assert [e.total_reward for e in episodes] == [-1.0, -1.0, -1.0, None]
