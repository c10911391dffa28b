"""Where a Twenty Questions policy loses turns, and what an ArCHer critic knows about it.

Plays ``--episodes`` test episodes (every object in turn) with a policy, or a
scripted agent, and reports how its turns are spent: property questions,
wrong guesses, guesses that contradict an answer already given, repeated
utterances. With ``--checkpoint`` (an ArCHer run's checkpoint directory) it
also measures the critic on those episodes:

- V: the share of the variance of the discounted return-to-go that min V(s)
  explains, and their correlation;
- Q on guesses: at every state where the policy guessed, min Q(s, a) of the
  guess of each of the game's objects; the rank of the hidden object among
  them (0 is best) and the AUC of Q(s, a) of the policy's own guesses, right
  against wrong. A critic that could steer the actor by Q ranks the hidden
  object near the top.

    python benchmarks/question_game_diagnostics.py --policy runs/quickstart/bc_policy \\
        --checkpoint runs/quickstart/checkpoints
    python benchmarks/question_game_diagnostics.py --policy expert
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import archer_agents.environments  # noqa: F401  (registers the ids)
from archer_agents.data.schema import Episode
from archer_agents.tools.twenty_questions import TwentyQuestionsOracle

ORACLES = {
    "archer/TwentyQuestionsMini-v0": TwentyQuestionsOracle.mini,
    "archer/TwentyQuestions-v0": TwentyQuestionsOracle.default,
}


def play(env_id: str, policy: str, episodes: int, temperature: float, seed: int) -> list[Episode]:
    from archer_agents.policies.local_policy import LocalPolicy
    from archer_agents.policies.protocol import SamplingParams
    from archer_agents.training.cached_rollout import CachedPolicyActor
    from archer_agents.training.rollout import (
        Actor,
        ScriptedActor,
        collect,
        make_env_factory,
        split_task_ids,
    )

    factory = make_env_factory(env_id)
    task_ids = split_task_ids(factory, "test")
    actor: Actor
    if policy in ("expert", "weak", "random"):
        actor = ScriptedActor(policy, seed=seed)
    else:
        sampling = SamplingParams(max_new_tokens=12, temperature=temperature)
        actor = CachedPolicyActor(LocalPolicy.from_pretrained(policy, seed=seed), sampling)
    result = collect(
        factory, actor, episodes, num_envs=64, split="test", task_ids=task_ids, seed=seed
    )
    return result.episodes


def turn_report(episodes: list[Episode], oracle: TwentyQuestionsOracle) -> dict[str, float]:
    """Per-episode means of how the turns were spent."""
    counts: dict[str, list[float]] = {
        k: []
        for k in (
            "return",
            "success",
            "turns",
            "questions",
            "wrong_guesses",
            "contradicting_guesses",
            "invalid",
            "repeats",
        )
    }
    for episode in episodes:
        asked: list[tuple[str, str]] = []  # (property question, answer) so far
        wrong = contradicting = questions = invalid = 0
        for t in episode.transitions:
            verdict = oracle.judge(t.action, episode.task_id)
            if verdict.invalid:
                invalid += 1
            elif verdict.guesses:
                wrong += not verdict.solved
                guessed = verdict.guesses[0]
                contradicting += any(oracle.answer(q, guessed) != a for q, a in asked)
            else:
                questions += 1
                asked.append((t.action, verdict.answer))
        actions = [t.action.strip() for t in episode.transitions]
        counts["return"].append(sum(t.reward for t in episode.transitions))
        counts["success"].append(float(bool(episode.success)))
        counts["turns"].append(len(actions))
        counts["questions"].append(questions)
        counts["wrong_guesses"].append(wrong)
        counts["contradicting_guesses"].append(contradicting)
        counts["invalid"].append(invalid)
        counts["repeats"].append(float(len(actions) != len(set(actions))))
    return {k: float(np.mean(v)) for k, v in counts.items()}


def critic_report(
    episodes: list[Episode], checkpoint: str, oracle: TwentyQuestionsOracle
) -> dict[str, float]:
    from archer_agents.critic.model import DoubleCritic
    from archer_agents.training.checkpoint import load_latest
    from archer_agents.training.critic_config import CriticSettings, build_critic

    loaded = load_latest(checkpoint)
    if loaded is None:
        raise SystemExit(f"no readable checkpoint in {checkpoint}")
    run = json.loads((loaded.path.parent.parent / "run.json").read_text())
    fields = set(CriticSettings.model_fields)
    settings = CriticSettings(**{k: v for k, v in run["algorithm_config"].items() if k in fields})
    critic: DoubleCritic = build_critic(settings)[0]
    critic.load_state_dict(loaded.state["algorithm"]["critic"])
    critic.eval()
    gamma = settings.gamma
    observations, returns = [], []
    for episode in episodes:
        to_go = 0.0
        backwards = []
        for t in reversed(episode.transitions):
            to_go = t.reward + gamma * to_go
            backwards.append(to_go)
        observations += [t.observation for t in episode.transitions]
        returns += backwards[::-1]
    with torch.no_grad():
        v = critic.v(observations).min(dim=-1).values.numpy()
    g = np.array(returns)
    objects = list(oracle.secrets())
    guesses = [oracle.guess_question(name) for name in objects]
    guessed = [  # (the turn with the policy's guess, the hidden object, whether it won)
        (t, episode.task_id, verdict.solved)
        for episode in episodes
        for t in episode.transitions
        if (verdict := oracle.judge(t.action, episode.task_id)).guesses
    ]
    ranks = []
    with torch.no_grad():
        for t, hidden, _ in guessed:
            q = critic.q([t.observation] * len(guesses), guesses).min(dim=-1).values
            ranks.append(q.argsort(descending=True).tolist().index(objects.index(hidden)))
        own = critic.q([t.observation for t, _, _ in guessed], [t.action for t, _, _ in guessed])
    q_arr = own.min(dim=-1).values.numpy()
    right = np.array([won for _, _, won in guessed])
    auc = float((q_arr[right][:, None] > q_arr[~right][None, :]).mean())
    rank = np.array(ranks)
    return {
        "v_explained_variance": float(1 - np.var(g - v) / np.var(g)),
        "v_return_correlation": float(np.corrcoef(g, v)[0, 1]),
        "guess_states": float(len(rank)),
        "hidden_object_rank_median": float(np.median(rank)),
        "hidden_object_top1": float(np.mean(rank == 0)),
        "hidden_object_top3": float(np.mean(rank < 3)),
        "objects": float(len(objects)),
        "own_guess_auc": auc,
        "checkpoint_step": float(loaded.step),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="archer/TwentyQuestionsMini-v0", choices=sorted(ORACLES))
    parser.add_argument("--policy", required=True, help="Policy directory, or expert/weak/random.")
    parser.add_argument("--checkpoint", help="An ArCHer run's checkpoint directory.")
    parser.add_argument("--episodes", type=int, default=312)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=10_000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    oracle = ORACLES[args.env]()
    episodes = play(args.env, args.policy, args.episodes, args.temperature, args.seed)
    report = turn_report(episodes, oracle)
    print(f"{args.policy} on {args.env}, {len(episodes)} test episodes (per-episode means):")
    for key, value in report.items():
        print(f"  {key}: {value:.3f}")
    if args.checkpoint:
        print(f"critic of {args.checkpoint}:")
        for key, value in critic_report(episodes, args.checkpoint, oracle).items():
            print(f"  {key}: {value:.3f}")


if __name__ == "__main__":
    main()
