"""Can ArCHer's actor use a perfect critic? Its actor steps, with an oracle for the critic.

On Twenty Questions the cloned policy loses its turns to utterances that the
history already shows to be wasted: guesses of objects the answers rule out,
utterances it has already made, questions the game does not understand
(`question_game_diagnostics.py`). `RuleCritic` knows which these are, from
the game's oracle, and gives Q(s, a) = -1 for them and 0 otherwise (V(s) = 0),
a critic that is never wrong about what matters most here. This script runs
ArCHer's actor against it, under the same trainer and from the same cloned
policy as the main job (`ARCHER_PRESET`, any ``--set`` override), with no
critic steps, and prints per iteration the share of wasted utterances in the
rollout (the oracle's mean Q over the rollout's own turns) and the returns.

If the wasted share does not fall here, no learned critic can make this actor
close the gap in the same budget.

    python benchmarks/oracle_actor.py --policy runs/quickstart/bc_policy --minutes 5 \\
        --out runs/oracle_actor [--set algorithm.actor_lr=3e-4]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from question_game_diagnostics import ORACLES

from archer_agents.environments.questions.game import OBSERVATION_HEADER
from archer_agents.tools.question_oracle import QuestionOracle
from archer_agents.training.algorithms.archer import Archer


class RuleCritic(nn.Module):
    """Q(s, a) = -1 when the history already shows ``a`` wastes the turn, else 0; V(s) = 0.

    Wasted: a question the oracle cannot answer, an utterance already in the
    history, or a guess of an object that no longer fits the answers. It reads
    the observation as the game writes it (``"<utterance> <answer>"`` per line)
    and has the `DoubleCritic` interface ArCHer's actor uses (``q``, ``v``:
    (B, 2), both heads equal).
    """

    def __init__(self, oracle: QuestionOracle) -> None:
        super().__init__()
        self.oracle = oracle
        self.secrets = list(oracle.secrets())
        self.unused = nn.Parameter(torch.zeros(1))
        """ArCHer builds an optimiser over the critic's parameters; this critic needs none."""

    @lru_cache(maxsize=100_000)  # noqa: B019  (one critic per run; texts repeat a lot)
    def _answers(self, utterance: str) -> tuple[tuple[str, ...], np.ndarray, bool]:
        """The answer for every secret, which secrets it names (a guess), and if it is invalid."""
        verdicts = [self.oracle.judge(utterance, secret) for secret in self.secrets]
        answers = tuple(v.answer for v in verdicts)
        named = np.array([v.solved for v in verdicts])
        return answers, named, any(v.invalid for v in verdicts)

    def history(self, observation: str) -> tuple[list[str], np.ndarray]:
        """The utterances of the history and the secrets consistent with its answers."""
        consistent = np.ones(len(self.secrets), dtype=bool)
        said: list[str] = []
        for line in observation.removeprefix(OBSERVATION_HEADER).splitlines():
            words = line.split(" ")
            for k in (1, 2, 3):  # the answer is the line's last one to three words
                utterance, answer = " ".join(words[:-k]), " ".join(words[-k:])
                answers, _, _ = self._answers(utterance)
                if answer in answers:
                    said.append(utterance.strip())
                    consistent &= np.array([a == answer for a in answers])
                    break
        return said, consistent

    def wasted(self, observation: str, action: str) -> bool:
        said, consistent = self.history(observation)
        _, named, invalid = self._answers(action)
        ruled_out = bool(named.any()) and not bool((named & consistent).any())
        return invalid or action.strip() in said or ruled_out

    def q(self, observations: Sequence[str], actions: Sequence[str]) -> torch.Tensor:
        values = [-float(self.wasted(o, a)) for o, a in zip(observations, actions, strict=True)]
        return torch.tensor(values)[:, None].repeat(1, 2)  # (B, 2)

    def v(self, observations: Sequence[str]) -> torch.Tensor:
        return torch.zeros(len(observations), 2)  # (B, 2)


class ActorOnlyArcher(Archer):
    """ArCHer with a fixed critic: critic steps do nothing, the actor steps as usual."""

    def critic_step(self, batch: Any = None) -> dict[str, float]:
        return {}


def run(
    policy_dir: str,
    env_id: str,
    out: Path,
    minutes: float,
    overrides: list[str],
    seed: int = 0,
) -> list[dict[str, float]]:
    """Train with the oracle critic for ``minutes``; one row per iteration."""
    from archer_agents.cli.quickstart import ARCHER_PRESET
    from archer_agents.cli.train import load_run_config
    from archer_agents.policies.local_policy import LocalPolicy
    from archer_agents.training.algorithms.archer import ArcherConfig
    from archer_agents.training.trainer import Trainer

    trainer_config, config = load_run_config(
        "archer",
        None,
        [
            "algorithm.advantage_estimator=q",  # the critic's Q, not GAE over its V (0 here)
            "algorithm.warmup_iterations=0",  # nothing to warm up
            *overrides,
            f"trainer.seed={seed}",
            f"algorithm.seed={seed}",
        ],
        defaults={
            "trainer": {**ARCHER_PRESET["trainer"], "time_budget_s": minutes * 60},
            "algorithm": ARCHER_PRESET["algorithm"],
        },
    )
    assert isinstance(config, ArcherConfig)
    critic = RuleCritic(ORACLES[env_id]())
    policy = LocalPolicy.from_pretrained(policy_dir, seed=seed)
    archer = ActorOnlyArcher(config, policy, critic=critic, target=critic)  # type: ignore[arg-type]
    rows: list[dict[str, float]] = []

    def on_iteration(iteration: int, record: dict[str, float]) -> None:
        row = {
            "iteration": float(iteration),
            "episodes": float(record.get("episodes", float("nan"))),
            "wasted_share": -record.get("actor/raw_advantage_mean", float("nan")),
            "rollout_return": record.get("rollout/return_mean", float("nan")),
            "rollout_valid": record.get("rollout/valid_rate", float("nan")),
            "eval_return": record.get("eval/return_mean", float("nan")),
        }
        rows.append(row)
        print(
            "  ".join(
                f"{k} {v:.3f}" if k != "iteration" else f"{k} {v:.0f}" for k, v in row.items()
            )
        )

    Trainer(
        archer,
        env_id,
        out,
        trainer_config,
        run_info={"critic": "oracle"},
        on_iteration=on_iteration,
    ).train()
    (out / "oracle_actor.json").write_text(json.dumps(rows, indent=1))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", required=True, help="A cloned policy's directory.")
    parser.add_argument("--env", default="archer/TwentyQuestionsMini-v0", choices=sorted(ORACLES))
    parser.add_argument("--out", type=Path, default=Path("runs/oracle_actor"))
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (Path(args.policy) / "config.json").is_file():
        parser.error(f"--policy {args.policy} is not a policy directory (no config.json)")
    if (args.out / "checkpoints").exists():
        parser.error(f"--out {args.out} already holds a run; choose another directory")
    torch.set_num_threads(args.threads)
    run(args.policy, args.env, args.out, args.minutes, args.overrides, args.seed)


if __name__ == "__main__":
    main()
