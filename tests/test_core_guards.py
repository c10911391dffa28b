"""Guards on ArCHer's core that a one-function-at-a-time rewrite must not slip past.

Each test here was checked by injecting the bug it names and seeing it fail:

- the critic's TD and V targets must come from the target critic, not the online one;
- the actor's advantage must come from the online critic, not the target;
- a run resumed from a checkpoint must end exactly where an uninterrupted run ends;
- one update split over two processes must equal the one-process update on the whole batch.

The online and target critics start equal, so the first two tests pull them apart
on purpose: each head's last layer is zeroed and given a known bias, so every
value is a constant the test can write down.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from archer_agents.critic.model import DoubleCritic
from archer_agents.data.schema import Transition
from archer_agents.policies.local_policy import LocalPolicy
from archer_agents.training.algorithms.archer import Archer, ArcherConfig

START = "Questions:\n"

SMALL = {
    "critic_steps": 1,
    "critic_batch_size": 4,
    "actor_steps": 1,
    "actor_batch_size": 8,
    "warmup_iterations": 0,
    "max_new_tokens": 5,
    "critic_lr": 1e-3,
    "actor_lr": 1e-3,
}


def small_archer(policy: LocalPolicy, **changes: object) -> Archer:
    return Archer(ArcherConfig(**{**SMALL, **changes}), policy)


def set_heads(critic: DoubleCritic, q: tuple[float, float], v: tuple[float, float]) -> None:
    """Make Q_k(s, a) = q[k] and V_k(s) = v[k] everywhere (last layer: zero weight, bias)."""
    with torch.no_grad():
        for heads, values in ((critic.q_heads, q), (critic.v_heads, v)):
            for head, value in zip(heads, values, strict=True):
                head[-1].weight.zero_()
                head[-1].bias.fill_(value)


def turn(action: str, reward: float, *, done: bool = False) -> Transition:
    return Transition(
        observation=START,
        action=action,
        reward=reward,
        next_observation=f"{START}{action} No.\n",
        terminated=done,
    )


# --------------------------------------------------------- 1. critic targets ---


def test_td_and_v_targets_come_from_the_target_critic(tiny_policy: LocalPolicy) -> None:
    gamma = 0.5
    archer = small_archer(tiny_policy, gamma=gamma)
    # The target says Qbar = (2, 3) and Vbar = (5, 7) everywhere; the online critic is left
    # as built, so its values are anything but these.
    set_heads(archer.target, q=(2.0, 3.0), v=(5.0, 7.0))
    batch = [
        turn("Is it alive?", -1.0),
        turn("Is it red?", 0.5),
        turn("Is it big?", -2.0, done=True),
        turn("Is it a cat?", 1.0),
    ]
    with torch.no_grad():
        q_pred, v_pred = archer.critic([t.observation for t in batch], [t.action for t in batch])
        online_v_next = archer.critic.v([t.next_observation for t in batch])
    assert not torch.allclose(online_v_next, torch.tensor([[5.0, 7.0]]).expand(4, 2))

    rewards = torch.tensor([t.reward for t in batch])
    bootstrap = torch.tensor([0.0 if t.done else gamma for t in batch])
    y_q = rewards[:, None] + bootstrap[:, None] * torch.tensor([[5.0, 7.0]])  # (B, 2)
    y_v = torch.tensor([[2.0, 3.0]]).expand(4, 2)  # Qbar at any fresh a_pi

    metrics = archer.critic_step(batch)
    assert metrics["q_target_mean"] == pytest.approx(float(y_q.mean()), abs=1e-5)
    assert metrics["v_target_mean"] == pytest.approx(2.5, abs=1e-5)
    q_mse = ((q_pred - y_q) ** 2).mean(dim=0)
    v_mse = ((v_pred - y_v) ** 2).mean(dim=0)
    assert metrics["q1_loss"] == pytest.approx(float(q_mse[0]), rel=1e-5)
    assert metrics["q2_loss"] == pytest.approx(float(q_mse[1]), rel=1e-5)
    assert metrics["v1_loss"] == pytest.approx(float(v_mse[0]), rel=1e-5)
    assert metrics["v2_loss"] == pytest.approx(float(v_mse[1]), rel=1e-5)
    assert metrics["critic_loss"] == pytest.approx(float(q_mse.sum() + v_mse.sum()), rel=1e-5)


# --------------------------------------------------------- 2. actor advantage ---


def test_actor_advantage_comes_from_the_online_critic(tiny_policy: LocalPolicy) -> None:
    archer = small_archer(tiny_policy)
    # Online: min Q - min V = 1 - (-1) = +2 for every utterance, so raise what was sampled.
    # Target: min Q - min V = -4 - 3 = -7, so lower it. They disagree in sign.
    set_heads(archer.critic, q=(1.0, 5.0), v=(-1.0, 4.0))
    set_heads(archer.target, q=(-4.0, -3.0), v=(3.0, 6.0))

    sampled = []
    generate = tiny_policy.generate

    def recording_generate(observations, sampling):  # type: ignore[no-untyped-def]
        generations = generate(observations, sampling)
        sampled.extend(generations)
        return generations

    tiny_policy.generate = recording_generate  # type: ignore[method-assign]
    observations = [START] * 8

    def total_logprob() -> float:
        with torch.no_grad():
            scored = tiny_policy.log_probs(observations, [g.token_ids for g in sampled])
        return float(sum(lp.sum() for lp in scored))

    untouched = {k: v.clone() for k, v in tiny_policy.model.state_dict().items()}
    metrics = archer.actor_step(observations)
    assert len(sampled) == 8
    assert metrics["raw_advantage_mean"] == pytest.approx(2.0, abs=1e-5)
    assert metrics["q_pi_mean"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["v_mean"] == pytest.approx(-1.0, abs=1e-5)

    # The direction of the step: the utterances the policy sampled became more likely.
    after = total_logprob()
    tiny_policy.model.load_state_dict(untouched)  # back to the weights before the step
    before = total_logprob()
    assert after > before


# ------------------------------------------------------------------ 3. resume ---

ENV_ID = "archer/TwentyQuestions-v0"
RESUME_ARCHER = {
    "critic_steps": 1,
    "critic_batch_size": 8,
    "actor_steps": 1,
    "actor_batch_size": 8,
    "warmup_iterations": 1,
    "max_new_tokens": 4,
    "critic_lr": 1e-3,
    "actor_lr": 1e-3,
}
RESUME_TRAINER = {
    "episodes_per_iteration": 3,
    "num_envs": 3,
    "eval_every": 1,
    "eval_episodes": 2,
    "checkpoint_every": 1,
    "tensorboard": False,
}


def run_trainer(
    model_dir: Path,
    run_dir: Path,
    iterations: int,
    archer_changes: dict[str, object],
    trainer_changes: dict[str, object],
    *,
    resume: bool = False,
) -> Archer:
    from archer_agents.training.trainer import Trainer, TrainerConfig

    archer = Archer(
        ArcherConfig(**{**RESUME_ARCHER, **archer_changes}),
        LocalPolicy.from_pretrained(model_dir, seed=0),
    )
    config = TrainerConfig(iterations=iterations, **{**RESUME_TRAINER, **trainer_changes})
    Trainer(archer, ENV_ID, run_dir, config).train(resume=resume)
    return archer


def episode_log(run_dir: Path) -> list[tuple[object, ...]]:
    from archer_agents.data.episode_log import read_episodes

    episodes, report = read_episodes(run_dir / "episodes.jsonl")
    assert report.lines_skipped == 0
    return [
        (e.seed, [(t.action, t.action_token_ids, t.reward, t.done) for t in e.transitions])
        for e in episodes
    ]


def training_records(run_dir: Path) -> list[dict[str, object]]:
    from archer_agents.training.run_log import read_metrics

    # Times differ; a run stopped early logs its final evaluation as a record of its own.
    return [
        {k: v for k, v in record.items() if not k.startswith("time/") and "per_s" not in k}
        for record in read_metrics(run_dir / "metrics.jsonl")
        if "final_eval" not in record
    ]


@pytest.mark.parametrize(
    ("archer_changes", "trainer_changes"),
    [
        pytest.param({}, {}, id="uniform-batches", marks=pytest.mark.slow),
        pytest.param(
            {"critic_batches": "episodes", "actor_states": "latest"},
            {},
            id="episode-batches",
            marks=pytest.mark.slow,
        ),
        pytest.param({}, {"eval_every": 3}, id="eval-off-the-stop"),
    ],
)
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(
    tiny_model_dir: Path,
    tmp_path: Path,
    archer_changes: dict[str, object],
    trainer_changes: dict[str, object],
) -> None:
    straight = run_trainer(
        tiny_model_dir, tmp_path / "straight", 4, archer_changes, trainer_changes
    )
    run_trainer(tiny_model_dir, tmp_path / "halves", 2, archer_changes, trainer_changes)
    resumed = run_trainer(
        tiny_model_dir, tmp_path / "halves", 4, archer_changes, trainer_changes, resume=True
    )

    assert episode_log(tmp_path / "halves") == episode_log(tmp_path / "straight")
    assert (resumed.critic_updates, resumed.actor_updates) == (4, 3)
    for part in ("critic", "target"):
        a, b = getattr(straight, part).state_dict(), getattr(resumed, part).state_dict()
        for name, tensor in a.items():
            assert torch.equal(tensor, b[name]), (part, name)
    b = resumed.policy.model.state_dict()
    for name, tensor in straight.policy.model.state_dict().items():
        assert torch.equal(tensor, b[name]), ("policy", name)
    assert training_records(tmp_path / "halves") == training_records(tmp_path / "straight")


# ------------------------------------------------------- 4. two processes ---

SPLIT_ARCHER = {
    "critic_steps": 2,
    "critic_batch_size": 8,
    "actor_steps": 1,
    "actor_batch_size": 8,
    "warmup_iterations": 0,
    "max_new_tokens": 4,
    "critic_lr": 1e-3,
    "actor_lr": 1e-3,
}

SPLIT = textwrap.dedent(
    """
    import os, sys
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[3])
    from archer_agents.training.distributed import Distributed
    from test_core_guards import one_update

    rank = int(os.environ["RANK"])
    Distributed.from_environment(cpu=True)
    torch.save(one_update(sys.argv[1]), os.path.join(sys.argv[2], f"rank{rank}.pt"))
    """
)


def one_update(model_dir: str) -> dict[str, dict[str, torch.Tensor]]:
    """One ArCHer update (two critic steps, one actor step) on a fixed buffer; the weights.

    The policy says only end-of-utterance at the start state, so a_pi is the same in any
    process whatever its sampler; every other draw is the buffer's, equal everywhere.
    """
    from test_archer import make_eos_likely

    policy = LocalPolicy.from_pretrained(model_dir, seed=0)
    make_eos_likely(policy, START)
    archer = Archer(ArcherConfig(**SPLIT_ARCHER), policy)
    for k in range(12):
        archer.buffer.add(
            turn(f"Is it a {['cat', 'dog', 'fox', 'owl'][k % 4]}?", -k / 4, done=k % 3 == 0)
        )
    archer.update(1)
    assert (archer.critic_updates, archer.actor_updates) == (2, 1)
    return {
        "policy": {k: v.clone() for k, v in policy.model.state_dict().items()},
        "critic": {k: v.clone() for k, v in archer.critic.state_dict().items()},
        "target": {k: v.clone() for k, v in archer.target.state_dict().items()},
    }


@pytest.mark.slow
def test_an_update_split_over_two_processes_is_the_one_process_update(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from test_distributed import launch

    script = tmp_path / "split.py"
    script.write_text(SPLIT)
    launch(script, str(tiny_model_dir), str(tmp_path), str(Path(__file__).parent), timeout=120)
    zero, one = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    alone = one_update(str(tiny_model_dir))
    initial = Archer(ArcherConfig(**SPLIT_ARCHER), LocalPolicy.from_pretrained(tiny_model_dir))
    assert any(
        not torch.equal(tensor, alone["critic"][name])
        for name, tensor in initial.critic.state_dict().items()
    ), "the critic never moved"
    for part in ("policy", "critic", "target"):
        for name, tensor in alone[part].items():
            assert torch.equal(zero[part][name], one[part][name]), (part, name)
            torch.testing.assert_close(
                zero[part][name], tensor, rtol=1e-5, atol=1e-6, msg=f"{part} {name}"
            )
