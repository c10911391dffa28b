"""Tests written for mutants that survived `make mutation` (benchmarks/results/mutation.md).

Each test pins a behaviour no earlier test checked, and fails for the mutant
named in its docstring:

- the local server's `Batcher` waits its window for a request that arrives
  after the first one and samples both in one call (a window of zero, or a call
  counter that does not start at zero, passed every server test); takes every
  queued request that fits; runs a seeded request alone, so its seed gives the
  same completion whatever arrives beside it; and fails each request of a failed
  call with the error;
- ArCHer's actor batch from the newest rollout holds about ``actor_batch_size``
  turns (counting only the last episode drawn took the whole rollout);
- a good checkpoint loads with `load_checkpoint`'s defaults (every earlier test
  loaded through `load_latest` or refused a bad folder), and a checkpoint
  problem is shortened only when it is long;
- `critic_loss`, `iql_critic_loss` and `advantage` refuse an input whose batch differs (a one-row
  tensor would broadcast silently), naming it.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from archer_agents.data.schema import Episode, Transition
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.policies.protocol import SamplingParams
from archer_agents.serving.model_engine import Batcher, ModelEngine
from archer_agents.training.algorithms.archer import Archer, ArcherConfig
from archer_agents.training.checkpoint import _one_line, load_checkpoint, save_checkpoint
from archer_agents.training.losses import advantage, critic_loss, iql_critic_loss


def test_the_batcher_waits_its_window_and_samples_a_later_request_with_the_first(
    tiny_policy: LocalPolicy,
) -> None:
    """Kills ``deadline = loop.time() - self.wait_s`` (no window: two calls) and
    ``self.batches = 1`` (the count starts at one). No timing is asserted: the second
    request is queued while the batcher is known to be waiting (the window is 60 s, and
    two rows fill the batch, so it closes as soon as the second arrives)."""
    engine = ModelEngine(tiny_policy, seed=0)
    sampling = SamplingParams(temperature=1.0, max_new_tokens=2)
    prompt = tiny_policy.prompt_ids("Questions:\n")

    async def scenario() -> tuple[int, int, list[int]]:
        with ThreadPoolExecutor(1) as executor:
            batcher = Batcher(engine, executor, max_rows=2, wait_s=60.0)
            runner = asyncio.create_task(batcher.run())

            def submit() -> asyncio.Task:
                return asyncio.create_task(
                    batcher.submit([prompt], sampling, adapter=None, seed=None, top_logprobs=0)
                )

            first = submit()
            for _ in range(50):  # let every ready task run: the batcher takes the first job
                await asyncio.sleep(0)
            assert batcher.queue.empty() and not first.done() and batcher.gathered == 0
            second = submit()
            rows = await asyncio.gather(first, second)
            runner.cancel()
            return batcher.batches, batcher.gathered, [len(r) for r in rows]

    batches, gathered, rows = asyncio.run(scenario())
    assert (batches, gathered, rows) == (1, 2, [1, 1])


def _batch(engine: ModelEngine, jobs: list[dict], *, max_rows: int):
    """Run ``jobs`` (submit keyword arguments) through a `Batcher`, all queued before it
    starts; returns its generate calls and each job's result (or exception)."""

    async def scenario() -> tuple[int, list]:
        with ThreadPoolExecutor(1) as executor:
            batcher = Batcher(engine, executor, max_rows=max_rows, wait_s=60.0)
            tasks = [asyncio.create_task(batcher.submit(**job)) for job in jobs]
            for _ in range(50):  # every submission is in the queue before the batcher runs
                await asyncio.sleep(0)
            runner = asyncio.create_task(batcher.run())
            results = await asyncio.wait_for(
                asyncio.gather(*tasks, return_exceptions=True), timeout=120
            )  # a guard against a hang, not a timing assertion
            runner.cancel()
            return batcher.batches, results

    return asyncio.run(scenario())


def test_queued_requests_that_fit_share_one_call(tiny_policy: LocalPolicy) -> None:
    """Kills ``break`` for ``continue`` in `Batcher.run`: every request already queued
    joins the batch while it has room, not just the second one."""
    engine = ModelEngine(tiny_policy, seed=0)
    prompt = tiny_policy.prompt_ids("Questions:\n")
    job = {
        "prompts": [prompt],
        "sampling": SamplingParams(temperature=1.0, max_new_tokens=2),
        "adapter": None,
        "seed": None,
        "top_logprobs": 0,
    }
    calls, results = _batch(engine, [job, job, job], max_rows=3)
    assert calls == 1 and [len(rows) for rows in results] == [1, 1, 1]


def test_a_seeded_request_samples_the_same_beside_others(tiny_policy: LocalPolicy) -> None:
    """Kills the `_groups` mutant that batches a seeded request with unseeded ones: its
    seed must give the same completion whatever else arrives with it."""
    engine = ModelEngine(tiny_policy, seed=0)
    sampling = SamplingParams(temperature=1.0, max_new_tokens=8)
    seeded = {
        "prompts": [tiny_policy.prompt_ids("Questions:\n")],
        "sampling": sampling,
        "adapter": None,
        "seed": 7,
        "top_logprobs": 0,
    }
    other = {**seeded, "prompts": [tiny_policy.prompt_ids("Questions:\nIs it red? No.\n")]}
    _, alone = _batch(engine, [seeded], max_rows=1)
    # Three rows fill the batch at once (no window to wait out).
    calls, together = _batch(engine, [other, {**other, "seed": None}, seeded], max_rows=3)
    assert calls == 3  # each seeded job alone, the unseeded one alone
    assert together[2][0].generation.token_ids == alone[0][0].generation.token_ids


def test_a_failed_generate_call_fails_each_of_its_requests(tiny_policy: LocalPolicy) -> None:
    """Kills the `_run_group` mutants that leave a request waiting forever (``if
    job.future.done()``) or fail it without the error (``set_exception(None)``)."""

    class Broken(ModelEngine):
        def generate(self, *args, **kwargs):
            raise RuntimeError("the model is gone")

    job = {
        "prompts": [tiny_policy.prompt_ids("Questions:\n")],
        "sampling": SamplingParams(max_new_tokens=2),
        "adapter": None,
        "seed": None,
        "top_logprobs": 0,
    }
    calls, results = _batch(Broken(tiny_policy, seed=0), [job, job], max_rows=2)
    assert calls == 0 and len(results) == 2
    for result in results:
        assert isinstance(result, RuntimeError) and str(result) == "the model is gone"


def test_an_actor_batch_from_the_newest_rollout_holds_about_actor_batch_size_turns(
    tiny_policy: LocalPolicy,
) -> None:
    """Kills ``count = len(drawn[-1])`` in `Archer._latest_batch` (every batch the whole
    rollout): with 2-turn episodes and actor_batch_size=4, a batch is two episodes."""
    config = ArcherConfig(actor_states="latest", actor_batch_size=4, max_new_tokens=3)
    archer = Archer(config, tiny_policy)

    def turn(k: int, last: bool) -> Transition:
        return Transition(
            observation=f"Questions:\nQ{k}",
            action=" Is it?",
            reward=0.0,
            next_observation=f"Questions:\nQ{k} Is it?",
            terminated=last,
        )

    episodes = [
        Episode(episode_id=str(k), env_id="x", transitions=[turn(k, False), turn(k, True)])
        for k in range(10)
    ]
    archer.observe(episodes)
    sizes = [len(archer._latest_batch()[0]) for _ in range(5)]
    assert sizes == [4] * 5  # 5 batches of 2 episodes: one pass over the 10


def test_a_good_checkpoint_loads_with_the_defaults_and_long_problems_are_shortened(
    tmp_path: Path,
) -> None:
    """Kills the `load_checkpoint` mutants (another default ``map_location``, the folder
    not passed on) and the `_one_line` ones (short text shortened too)."""
    state = {"w": torch.arange(4.0), "step": 3}
    folder = save_checkpoint(tmp_path / "ckpt", state, step=3)
    loaded = load_checkpoint(folder)
    assert loaded.step == 3 and loaded.path == folder
    assert torch.equal(loaded.state["w"], state["w"]) and loaded.state["step"] == 3
    assert _one_line("a\n  short   problem") == "a short problem"
    long = "x" * 300
    assert _one_line(long) == "x" * 197 + "..." and len(_one_line(long)) == 200
    assert _one_line("y" * 200) == "y" * 200


CRITIC_INPUTS = ["q_pred", "v_pred", "rewards", "dones", "target_v_next", "target_q_pi"]


def critic_inputs(last: str) -> dict[str, torch.Tensor]:
    """A batch of 3 for a critic loss; ``last`` names its target Q (ArCHer's at the
    policy's sample, ``target_q_pi``, or IQL's at the data action, ``target_q_data``)."""
    return {
        "q_pred": torch.zeros(3, 2),
        "v_pred": torch.zeros(3, 2),
        "rewards": torch.zeros(3),
        "dones": torch.zeros(3),
        "target_v_next": torch.zeros(3, 2),
        last: torch.zeros(3, 2),
    }


@pytest.mark.parametrize("wrong", CRITIC_INPUTS)
def test_critic_loss_names_an_input_whose_batch_is_one_row(wrong: str) -> None:
    """Kills the shape-check mutants of `critic_loss` (a check skipped, or its name lost).
    A one-row tensor is the dangerous case: torch would broadcast it over the batch."""
    inputs = critic_inputs("target_q_pi")
    inputs[wrong] = inputs[wrong][:1]
    named = "v_pred" if wrong == "q_pred" else wrong  # q_pred sets the batch: v_pred differs
    with pytest.raises(ValueError, match=rf"^{named} "):
        critic_loss(**inputs, gamma=0.9)


@pytest.mark.parametrize("wrong", ["v_pred", "target_v_next", "target_q_data"])
def test_iql_critic_loss_names_an_input_whose_batch_is_one_row(wrong: str) -> None:
    """The same for offline ArCHer's critic (`iql_critic_loss`)."""
    inputs = critic_inputs("target_q_data")
    inputs[wrong] = inputs[wrong][:1]
    with pytest.raises(ValueError, match=rf"^{wrong} "):
        iql_critic_loss(**inputs, gamma=0.9)


@pytest.mark.parametrize("wrong", ["q_pi", "v"])
def test_advantage_names_an_input_whose_batch_is_one_row(wrong: str) -> None:
    """Kills the shape-check mutants of `advantage` (``check_pair("v", v, None)`` and the
    like). ``min(dim=+1)`` for ``min(dim=-1)`` is equivalent: both tensors are (B, 2)."""
    inputs = {"q_pi": torch.zeros(3, 2), "v": torch.zeros(3, 2)}
    inputs[wrong] = inputs[wrong][:1]
    if wrong == "q_pi":  # the first input sets the batch: the other is then the mismatch
        inputs["v"], inputs["q_pi"] = inputs["q_pi"], inputs["v"]
        wrong = "v"
    with pytest.raises(ValueError, match=rf"^{wrong} "):
        advantage(**inputs)
    assert torch.equal(advantage(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 3.0]])),
                       torch.tensor([0.5]))  # fmt: skip
