"""Reliability benchmark: hostile inputs and faults at every boundary, counted.

For each boundary it tries generated inputs and reports, in one table:

- **inputs**: inputs tried;
- **accepted**: inputs taken as valid (an action that is a tool call, a 200, a config);
- **named errors**: inputs refused with a named error (an observation saying what is wrong,
  a 4xx with a message, a `ConfigError`, one ``error:`` line, a `CheckpointError`, a
  reported log line, a kept-and-retried episode);
- **crashes**: anything else (an exception escaping, a 500, a traceback): should be 0;
- **lost**: valid data that did not come back (episodes written but not read, episodes
  the recorder's host produced but not in the log, a good checkpoint not fallen back to):
  should be 0.

The inputs come from the same hypothesis strategies the property tests use
(tests/test_env_fuzz.py, tests/test_server_robustness.py, tests/test_config_fuzz.py,
tests/test_cli_fuzz.py, tests/test_recorder_faults.py), drawn here with a fixed seed
and no shrinking, so a run is repeatable. Each crash is listed below the table.

    python benchmarks/reliability.py                     # a few minutes on 2 cores
    python benchmarks/reliability.py --examples 5        # a quick look
    python benchmarks/reliability.py --out benchmarks/results/reliability.md
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # the strategies live with the property tests

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ACCEPTED, NAMED, CRASH = "accepted", "named", "crash"


@dataclass
class Row:
    """One boundary's counts."""

    boundary: str
    inputs: int = 0
    accepted: int = 0
    named: int = 0
    crashes: int = 0
    lost: int = 0
    seconds: float = 0.0
    crash_examples: list[str] = field(default_factory=list)

    def add(self, outcome: str, detail: str = "") -> None:
        self.inputs += 1
        if outcome == ACCEPTED:
            self.accepted += 1
        elif outcome == NAMED:
            self.named += 1
        else:
            self.crashes += 1
            if len(self.crash_examples) < 3:
                self.crash_examples.append(detail[:300])


def draw(row: Row, strategy: st.SearchStrategy[Any], check: Callable[[Any], str], n: int) -> None:
    """Feed ``n`` values of ``strategy`` to ``check`` (returns ACCEPTED or NAMED); whatever
    it raises is a crash, counted, never re-raised (so hypothesis does not shrink)."""

    @seed(20260)
    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(value: Any) -> None:
        try:
            row.add(check(value))
        except Exception as exc:
            row.add(CRASH, f"{type(exc).__name__}: {exc} <- {repr(value)[:120]}")

    run()


# -- boundaries ----------------------------------------------------------------------------------


def environments(n: int) -> Row:
    """Environment reset and step: any string up to the action limit, in every environment."""
    import test_env_fuzz as fuzz

    row = Row("environment step/reset")
    ids = [i for i in fuzz.ENV_IDS if "Browser" not in i]

    def check(pair: tuple[str, str]) -> str:
        env_id, action = pair
        env = fuzz.env_for(env_id)
        observation, _ = env.reset(seed=len(action))
        assert env.observation_space.contains(observation)
        _, _, _, _, info = env.step(action)
        if info.get("invalid_action") or info.get("tool_error"):
            if not (isinstance(info.get("error"), str) and info["error"]):
                raise AssertionError("an invalid action without an error message")
            return NAMED
        return ACCEPTED

    def pairs(env_id: str) -> st.SearchStrategy[tuple[str, str]]:
        limit = fuzz.env_for(env_id).unwrapped.max_action_chars
        return st.tuples(st.just(env_id), fuzz.actions(limit))

    try:
        draw(row, st.sampled_from(ids).flatmap(pairs), check, n * len(ids))
    finally:
        fuzz.teardown_module()
    return row


def tool_calls(n: int) -> Row:
    """Tool-call parsing and argument binding: any text, in every tool-call format."""
    import test_env_fuzz as fuzz

    from archer_agents.formats.tool_calls import ActionParseError, parse_tool_call

    row = Row("tool-call parsing")

    def check(text: str) -> str:
        try:
            parse_tool_call(text)
        except ActionParseError as error:
            if not str(error):
                raise AssertionError("an ActionParseError without a message") from None
            return NAMED
        return ACCEPTED

    draw(row, fuzz.actions(4000), check, n * 10)
    return row


def server(n: int, model_dir: Path) -> tuple[Row, Row]:
    """Server request bodies (any JSON, raw NaN, huge integers, deep nesting) and tool schemas."""
    import httpx
    import test_server_robustness as fuzz
    from serving_helpers import start_local_server

    from archer_agents.serving.local_server import ServerSettings

    bodies, schemas = Row("server requests"), Row("tool schemas")
    running = start_local_server(model_dir, ServerSettings(batch_wait_ms=0, seed=0))
    try:
        with httpx.Client(base_url=running.url, timeout=120) as client:

            def post(path: str, body: bytes) -> str:
                response = client.post(
                    path, content=body, headers={"content-type": "application/json"}
                )
                if response.status_code >= 500:
                    raise AssertionError(f"{response.status_code}: {response.text[:200]}")
                if client.post("/v1/completions", json=fuzz.VALID).status_code != 200:
                    raise AssertionError("the server stopped answering valid requests")
                if response.status_code >= 400:
                    error = response.json()["error"]
                    assert error["message"] and error["code"] == response.status_code
                    return NAMED
                return ACCEPTED

            known = st.tuples(
                fuzz.ROUTES,
                st.fixed_dictionaries({}, optional=fuzz.FIELDS).map(fuzz.bounded),
            )
            anything = st.tuples(fuzz.ROUTES, fuzz.JSON | fuzz.PATHOLOGICAL)

            def body_check(pair: tuple[str, Any]) -> str:
                path, value = pair
                data = value if isinstance(value, bytes) else fuzz.raw(value)
                return post(path, data)

            draw(bodies, st.one_of(known, anything), body_check, n * 4)

            def tools_check(pair: tuple[Any, Any]) -> str:
                tools, choice = pair
                body = {
                    "model": "tiny",
                    "messages": [{"role": "user", "content": "Is it"}],
                    "max_tokens": 2,
                    "tools": tools,
                }
                if choice is not None:
                    body["tool_choice"] = choice
                return post("/v1/chat/completions", fuzz.raw(body))

            tools = st.lists(fuzz.TOOL | fuzz.JSON, max_size=3)
            choice = st.none() | st.sampled_from(["auto", "none", "required"]) | fuzz.JSON
            draw(schemas, st.tuples(tools, choice), tools_check, n * 2)
    finally:
        running.stop()
    return bodies, schemas


def episode_logs(n: int, work: Path) -> Row:
    """Episode-log lines: valid episodes among any bytes; every valid one must come back."""
    from archer_agents.data.episode_log import read_episodes
    from archer_agents.data.schema import Episode, Transition

    row = Row("episode-log lines")
    path = work / "fuzz.jsonl"

    def episode(k: int) -> bytes:
        step = Transition(
            observation=f"o{k}", action=f"a{k}", reward=1.0, next_observation="", terminated=True
        )
        return (
            Episode(episode_id=f"e{k}", env_id="x", transitions=[step]).model_dump_json().encode()
        )

    lines = st.lists(
        st.one_of(st.integers(0, 10**6).map(episode), st.binary(max_size=60)), max_size=6
    )

    def check(items: list[bytes]) -> str:
        path.write_bytes(b"\n".join(items))
        valid = sum(1 for line in items if line.startswith(b'{"episode_id"'))
        episodes, report = read_episodes(path, strict=False)
        row.lost += max(0, valid - len(episodes))
        return NAMED if report.lines_skipped else ACCEPTED

    draw(row, lines, check, n * 10)
    return row


def recorder(n: int) -> Row:
    """The recorder on a full disk (a real tmpfs where it can be mounted, else RLIMIT_FSIZE in a
    subprocess), n rounds: episodes produced during the outage are kept, named (a logged,
    retried write) and all in the log after recovery."""
    import test_recorder_faults as faults

    from archer_agents.data.episode_log import read_episodes

    row = Row("recorder on a full disk")
    for _ in range(max(1, n // 10)):
        folder = Path(tempfile.mkdtemp(prefix="archer-disk-"))
        mounted = faults._tmpfs(folder)
        try:
            if mounted is not None:
                result = faults.run_scenario("full_disk", mounted)
            else:
                result = faults.run_in_fallback("full_disk", folder)
            episodes, report = read_episodes(Path(result["dir"]) / "log.jsonl", strict=True)
            in_log = Counter(e.episode_id for e in episodes)
            for episode_id in result["produced"]:
                row.inputs += 1
                if in_log[episode_id] != 1:
                    row.lost += 1
            row.crashes += len(result["raised"])
            row.crash_examples += result["raised"][:3]
            row.named += result["unwritten_while_full"]
            row.accepted += len(result["produced"]) - result["unwritten_while_full"]
        finally:
            if mounted is not None:
                faults.subprocess.run(["umount", "-l", str(folder)], capture_output=True)
            shutil.rmtree(folder, ignore_errors=True)
    return row


def configs(n: int) -> Row:
    """Config values and --set overrides."""
    import test_config_fuzz as fuzz

    from archer_agents.training.config import ConfigError, load_config

    row = Row("config / --set")

    def check(items: list[str]) -> str:
        try:
            load_config(fuzz.RUN, None, items, defaults=fuzz.SECTIONS)
        except ConfigError as error:
            assert str(error) and "\n" not in str(error)
            return NAMED
        return ACCEPTED

    draw(row, fuzz.overrides, check, n * 10)
    return row


def cli(n: int, work: Path) -> Row:
    """CLI arguments: --set overrides and --env-arg values on real command lines."""
    import test_cli_fuzz as fuzz
    from typer.testing import CliRunner

    from archer_agents.cli.app import app

    row = Row("CLI arguments")
    runner = CliRunner()

    def outcome(argv: list[str]) -> str:
        result = runner.invoke(app, argv)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"uncaught {type(result.exception).__name__}")
        if result.exit_code not in (0, 1, 2) or "Traceback" in result.output:
            raise AssertionError(f"exit {result.exit_code}: {result.output[-200:]}")
        return ACCEPTED if result.exit_code == 0 else NAMED

    def train(overrides: list[str]) -> str:
        argv = ["train", "--env", fuzz.ENV, "--out", str(work / "run")]
        for override in overrides:
            argv += ["--set", override]
        return outcome(argv)

    def rollout(pair: tuple[str, str]) -> str:
        key, value = pair
        return outcome([
            "rollout", fuzz.ENV, "--policy", "expert", "--episodes", "1",
            "--out", str(work / "cli.jsonl"), "--env-arg", f"{key}={value}",
        ])  # fmt: skip

    draw(row, st.lists(fuzz.override_keys.map(lambda k: k + "=1") | st.text(max_size=12),
                       min_size=1, max_size=3), train, n)  # fmt: skip
    draw(row, st.tuples(st.sampled_from(["max_turns", "bogus", "kb"]), fuzz.env_arg_values),
         rollout, n)  # fmt: skip
    return row


def checkpoints(n: int, work: Path) -> Row:
    """Checkpoints torn or corrupted at a random byte: the newest good one is loaded (nothing
    lost) or, when none is good, a `CheckpointError` names the problem."""
    import torch

    from archer_agents.training.checkpoint import (
        CheckpointError,
        list_checkpoints,
        load_latest,
        save_checkpoint,
    )

    row = Row("checkpoints")
    rng = random.Random(20260)
    for trial in range(n * 2):
        root = work / f"ckpt-{trial}"
        shutil.rmtree(root, ignore_errors=True)
        steps = rng.randint(1, 3)
        for step in range(1, steps + 1):
            save_checkpoint(root, {"w": torch.full((4,), float(step)), "step": step}, step=step)
        damaged = rng.sample(range(1, steps + 1), rng.randint(1, steps))
        for step in damaged:
            folder = dict(list_checkpoints(root))[step]
            files = sorted(p for p in folder.iterdir() if p.is_file())
            target = rng.choice(files)
            data = target.read_bytes()
            cut = rng.randrange(len(data)) if data else 0
            if rng.random() < 0.5:
                target.write_bytes(data[:cut])  # torn
            else:
                flipped = bytes([data[cut] ^ 0xFF]) if data else b"x"
                target.write_bytes(data[:cut] + flipped + data[cut + 1 :])
        good = [s for s in range(1, steps + 1) if s not in damaged]
        try:
            loaded = load_latest(root)
        except CheckpointError as error:
            if good:
                row.lost += 1  # a good checkpoint was there to fall back to
            assert str(error) and "\n" not in str(error)
            row.add(NAMED)
            continue
        except Exception as exc:
            row.add(CRASH, f"{type(exc).__name__}: {exc}")
            continue
        if loaded is None or not good or loaded.step != max(good):
            row.lost += 1
        ok = loaded is not None and torch.equal(
            loaded.state["w"], torch.full((4,), float(loaded.step))
        )
        row.add(NAMED if ok else CRASH, "loaded a checkpoint whose weights differ")
    return row


# -- the run -----------------------------------------------------------------------------------


def run(examples: int, work: Path, model_dir: Path | None = None) -> list[Row]:
    """Every boundary with ``examples`` as the scale of its input count."""
    from conftest import TINY_CORPUS

    from archer_agents.policies.tiny_model import init_model

    logging.disable(logging.WARNING)  # the refusals are counted; their log lines would flood
    try:
        if model_dir is None:
            model_dir = init_model(work / "tiny", TINY_CORPUS, size="test", vocab_size=512, seed=0)
        rows: list[Row] = []
        jobs: list[tuple[str, Callable[[], Any]]] = [
            ("environments", lambda: environments(examples)),
            ("tool calls", lambda: tool_calls(examples)),
            ("server", lambda: server(examples, model_dir)),
            ("logs", lambda: episode_logs(examples, work)),
            ("recorder", lambda: recorder(examples)),
            ("configs", lambda: configs(examples)),
            ("cli", lambda: cli(examples, work)),
            ("checkpoints", lambda: checkpoints(examples, work)),
        ]
        for name, job in jobs:
            start = time.perf_counter()
            try:
                produced = job()
            except Exception:  # the harness itself broke: one crash row, with the trace
                produced = Row(name, crashes=1, crash_examples=[traceback.format_exc()[-300:]])
            for row in produced if isinstance(produced, tuple) else (produced,):
                row.seconds = time.perf_counter() - start
                rows.append(row)
    finally:
        logging.disable(logging.NOTSET)
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| boundary | inputs | accepted | named errors | crashes | lost | s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.boundary} | {r.inputs} | {r.accepted} | {r.named} | {r.crashes} | {r.lost} "
            f"| {r.seconds:.0f} |"
        )
    total = Row("total", *(sum(getattr(r, k) for r in rows) for k in
                           ("inputs", "accepted", "named", "crashes", "lost")))  # fmt: skip
    lines.append(
        f"| **total** | {total.inputs} | {total.accepted} | {total.named} | "
        f"**{total.crashes}** | **{total.lost}** | |"
    )
    crashes = [f"- {r.boundary}: {example}" for r in rows for example in r.crash_examples]
    if crashes:
        lines += ["", "Crashes:", *crashes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--examples", type=int, default=20, help="scale of each input count")
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="archer-reliability-"))
    try:
        start = time.perf_counter()
        rows = run(args.examples, work)
        text = table(rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(text)
    if args.out is not None:
        command = "python benchmarks/reliability.py " + " ".join(argv or sys.argv[1:])
        args.out.write_text(
            f"# Reliability benchmark\n\n`{command.strip()}` ({time.perf_counter() - start:.0f} s"
            f" on {os.cpu_count()} CPU cores)\n\n{text}"
        )
    bad = sum(r.crashes + r.lost for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
