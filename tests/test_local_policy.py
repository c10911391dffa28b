"""LocalPolicy: faithful log-probabilities, padding invariance, LoRA, saving and learning."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from archer_agents.policies.decoding import warped_log_probs
from archer_agents.policies.local_policy import LocalPolicy, LoraSettings
from archer_agents.policies.protocol import Policy, SamplingParams

SHORT = "Questions:\n"
LONG = (
    "Questions:\nIs it an animal? No.\nIs it made of metal? Yes.\nIs it bigger than a car? No.\n"
    "Is it used in the kitchen? Yes.\nIs it a spoon? No.\nIs it a fork? No.\n" * 3
)
MEDIUM = "Questions:\nIs it an animal? Yes.\n"
OBSERVATIONS = [SHORT, LONG, MEDIUM]


def utterance(policy: LocalPolicy, text: str) -> list[int]:
    """The ids of ``text`` followed by the end-of-utterance token."""
    return [*policy.tokenizer.encode(text, add_special_tokens=False), policy.eos_id]


def make_eos_likely(policy: LocalPolicy, observation: str) -> None:
    """Point the (tied) eos embedding along the last hidden state so eos wins at once."""
    ids = torch.tensor([policy.prompt_ids(observation)])
    with torch.no_grad():
        hidden = policy.model.model(ids).last_hidden_state[0, -1]  # (H,)
        weight = policy.model.get_output_embeddings().weight
        weight[policy.eos_id] = 50.0 * hidden / hidden.norm()


def test_is_a_policy(tiny_policy: LocalPolicy) -> None:
    assert isinstance(tiny_policy, Policy)
    assert tiny_policy.generate([]) == []
    assert tiny_policy.log_probs([], []) == []


def test_prompt_is_bos_then_the_rendered_observation(tiny_policy: LocalPolicy) -> None:
    ids = tiny_policy.prompt_ids(MEDIUM)
    assert ids[0] == tiny_policy.bos_id
    assert tiny_policy.tokenizer.decode(ids[1:]) == MEDIUM
    assert tiny_policy.tokenizer.encode(tiny_policy.tokenizer.bos_token + MEDIUM) == ids
    generation = tiny_policy.generate([MEDIUM], SamplingParams(max_new_tokens=3))[0]
    assert generation.prompt_token_ids == ids


def test_generated_logprobs_equal_rescored_logprobs(tiny_policy: LocalPolicy) -> None:
    generations = tiny_policy.generate(OBSERVATIONS, SamplingParams(max_new_tokens=12))
    scores = tiny_policy.log_probs(OBSERVATIONS, [g.token_ids for g in generations])
    for generation, score in zip(generations, scores, strict=True):
        assert len(generation.token_ids) == len(generation.logprobs) == score.shape[0] > 0
        torch.testing.assert_close(
            torch.tensor(generation.logprobs), score.detach(), atol=1e-5, rtol=0
        )
        assert all(lp < 0 for lp in generation.logprobs)


def test_padding_changes_no_generated_logprob_and_no_score(tiny_policy: LocalPolicy) -> None:
    greedy = SamplingParams(max_new_tokens=10, temperature=0.0)
    batched = tiny_policy.generate(OBSERVATIONS, greedy)
    actions = [utterance(tiny_policy, " Is it a fork?"), [5, 9, 3], utterance(tiny_policy, " No")]
    scored_together = tiny_policy.log_probs(OBSERVATIONS, actions)
    for i, observation in enumerate(OBSERVATIONS):
        alone = tiny_policy.generate([observation], greedy)[0]
        assert alone.token_ids == batched[i].token_ids
        torch.testing.assert_close(
            torch.tensor(alone.logprobs), torch.tensor(batched[i].logprobs), atol=1e-5, rtol=0
        )
        scored_alone = tiny_policy.log_probs([observation], [actions[i]])[0]
        torch.testing.assert_close(scored_together[i], scored_alone, atol=1e-5, rtol=0)


def test_greedy_is_deterministic_and_scores_the_model_distribution(
    tiny_policy: LocalPolicy,
) -> None:
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    first = tiny_policy.generate(OBSERVATIONS, greedy)
    second = tiny_policy.generate(OBSERVATIONS, greedy)
    assert [g.token_ids for g in first] == [g.token_ids for g in second]
    scores = tiny_policy.log_probs(OBSERVATIONS, [g.token_ids for g in first])
    for generation, score in zip(first, scores, strict=True):
        torch.testing.assert_close(
            torch.tensor(generation.logprobs), score.detach(), atol=1e-5, rtol=0
        )


def test_seeded_sampling_is_reproducible(tiny_model_dir: Path) -> None:
    runs = [
        LocalPolicy.from_pretrained(tiny_model_dir, seed=7).generate(OBSERVATIONS) for _ in range(2)
    ]
    assert [g.token_ids for g in runs[0]] == [g.token_ids for g in runs[1]]
    other = LocalPolicy.from_pretrained(tiny_model_dir, seed=8).generate(OBSERVATIONS)
    assert [g.token_ids for g in other] != [g.token_ids for g in runs[0]]


def test_rows_stop_at_eos_with_its_logprob_or_at_the_token_limit(
    tiny_policy: LocalPolicy,
) -> None:
    make_eos_likely(tiny_policy, SHORT)
    stopped = tiny_policy.generate([SHORT], SamplingParams(max_new_tokens=6))[0]
    assert stopped.finished
    assert stopped.token_ids[-1] == tiny_policy.eos_id
    assert len(stopped.logprobs) == len(stopped.token_ids)
    assert stopped.text == tiny_policy.tokenizer.decode(stopped.token_ids[:-1])
    rescored = tiny_policy.log_probs([SHORT], [stopped.token_ids])[0]
    assert math.isclose(stopped.logprobs[-1], float(rescored[-1].detach()), abs_tol=1e-5)
    assert stopped.logprobs[-1] > -1.0

    # Without eos available to the sampler, every row runs to the limit.
    top_one = SamplingParams(max_new_tokens=5, top_k=1)
    tiny_policy.model.get_output_embeddings().weight.data[tiny_policy.eos_id] *= -1
    capped = tiny_policy.generate(OBSERVATIONS, top_one)
    assert all(not g.finished and len(g.token_ids) == 5 for g in capped)


def test_warped_distribution_is_temperature_then_top_k_then_top_p() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    default = warped_log_probs(logits, SamplingParams())
    torch.testing.assert_close(default, torch.log_softmax(logits, -1))
    hot = warped_log_probs(logits, SamplingParams(temperature=2.0))
    torch.testing.assert_close(hot, torch.log_softmax(logits / 2.0, -1))
    top_two = warped_log_probs(logits, SamplingParams(top_k=2)).exp()
    expected = torch.tensor([[math.e / (math.e + 1), 1 / (math.e + 1), 0.0, 0.0]])
    torch.testing.assert_close(top_two, expected)
    # softmax = [0.64, 0.24, 0.09, 0.03]: a 0.7 nucleus needs the first two tokens.
    nucleus = warped_log_probs(logits, SamplingParams(top_p=0.7)).exp()
    torch.testing.assert_close(nucleus, expected)


def test_warped_sampling_returns_warped_logprobs(tiny_policy: LocalPolicy) -> None:
    top_one = tiny_policy.generate(OBSERVATIONS, SamplingParams(max_new_tokens=6, top_k=1))
    greedy = tiny_policy.generate(OBSERVATIONS, SamplingParams(max_new_tokens=6, temperature=0))
    assert [g.token_ids for g in top_one] == [g.token_ids for g in greedy]
    assert all(lp == 0.0 for g in top_one for lp in g.logprobs)


def test_long_prompts_keep_their_most_recent_tokens(
    tiny_policy: LocalPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    tiny_policy.model.config.max_position_embeddings = 40
    full = tiny_policy.prompt_ids(LONG)
    sampling = SamplingParams(max_new_tokens=8)
    with caplog.at_level(logging.WARNING, logger="archer_agents.policies.local_policy"):
        first = tiny_policy.generate([LONG, SHORT], sampling)
        tiny_policy.generate([LONG], sampling)
    assert first[0].prompt_token_ids == [tiny_policy.bos_id, *full[-31:]]
    assert first[1].prompt_token_ids == tiny_policy.prompt_ids(SHORT)
    assert len([r for r in caplog.records if "most recent" in r.message]) == 1
    action = first[0].token_ids
    score = tiny_policy.log_probs([LONG], [action])[0]
    torch.testing.assert_close(torch.tensor(first[0].logprobs), score.detach(), atol=1e-5, rtol=0)


def test_log_probs_carry_gradients_and_ignore_dropout(tiny_model_dir: Path) -> None:
    policy = LocalPolicy.from_pretrained(tiny_model_dir, lora=LoraSettings(r=4, dropout=0.5))
    action = utterance(policy, " Is it a bird?")
    policy.model.train()
    first = policy.log_probs([MEDIUM], [action])[0]
    second = policy.log_probs([MEDIUM], [action])[0]
    assert first.requires_grad and first.shape == (len(action),)
    torch.testing.assert_close(first, second)
    assert policy.model.training
    assert policy.log_probs([MEDIUM], [[]])[0].shape == (0,)


def test_lora_trains_only_the_adapter(tiny_model_dir: Path) -> None:
    policy = LocalPolicy.from_pretrained(tiny_model_dir, lora=LoraSettings(r=4))
    assert isinstance(policy.model, PeftModel)
    trainable = {n: p for n, p in policy.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert len(policy.trainable_parameters()) == len(trainable)
    assert all(
        any(f"{module}.lora_A" in name for name in trainable)
        for module in ("q_proj", "k_proj", "v_proj", "o_proj")
    )
    frozen = {n: p.detach().clone() for n, p in policy.model.named_parameters() if "lora_" not in n}
    before = {n: p.detach().clone() for n, p in trainable.items()}

    optimizer = torch.optim.SGD(policy.trainable_parameters(), lr=0.5)
    loss = -policy.log_probs([MEDIUM], [utterance(policy, " Is it a bird?")])[0].sum()
    loss.backward()
    optimizer.step()

    assert any(not torch.equal(before[n], p) for n, p in trainable.items())
    assert all(torch.equal(frozen[n], p) for n, p in policy.model.named_parameters() if n in frozen)


@pytest.mark.parametrize("lora", [None, LoraSettings(r=4)], ids=["full", "lora"])
def test_a_gradient_step_raises_the_utterance_logprob(
    tiny_model_dir: Path, lora: LoraSettings | None
) -> None:
    policy = LocalPolicy.from_pretrained(tiny_model_dir, lora=lora)
    action = utterance(policy, " Is it a bird?")
    before = policy.log_probs([MEDIUM], [action])[0].sum()
    optimizer = torch.optim.Adam(policy.trainable_parameters(), lr=1e-2)
    (-before).backward()
    optimizer.step()
    after = policy.log_probs([MEDIUM], [action])[0].sum()
    assert float(after) > float(before) + 0.1


def test_full_model_save_and_reload_gives_identical_logprobs(
    tiny_policy: LocalPolicy, tmp_path: Path
) -> None:
    action = utterance(tiny_policy, " Is it a bird?")
    with torch.no_grad():
        tiny_policy.model.get_input_embeddings().weight.mul_(1.5)
    expected = tiny_policy.log_probs([MEDIUM], [action])[0].detach()
    tiny_policy.save(tmp_path / "saved")
    reloaded = LocalPolicy.from_pretrained(tmp_path / "saved")
    torch.testing.assert_close(reloaded.log_probs([MEDIUM], [action])[0].detach(), expected)


def test_adapter_save_writes_only_the_adapter_and_reloads(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    policy = LocalPolicy.from_pretrained(tiny_model_dir, lora=LoraSettings(r=4))
    action = utterance(policy, " Is it a bird?")
    base_score = policy.log_probs([MEDIUM], [action])[0].detach()
    optimizer = torch.optim.Adam(policy.trainable_parameters(), lr=1e-2)
    (-policy.log_probs([MEDIUM], [action])[0].sum()).backward()
    optimizer.step()
    expected = policy.log_probs([MEDIUM], [action])[0].detach()
    assert not torch.allclose(expected, base_score)

    saved = policy.save(tmp_path / "adapter")
    assert (saved / "adapter_model.safetensors").is_file()
    assert not (saved / "model.safetensors").exists()
    for reloaded in (
        LocalPolicy.from_pretrained(tiny_model_dir, adapter_path=saved),
        LocalPolicy.from_pretrained(saved),
    ):
        assert isinstance(reloaded.model, PeftModel)
        assert reloaded.trainable_parameters()
        score = reloaded.log_probs([MEDIUM], [action])[0].detach()
        torch.testing.assert_close(score, expected)


def test_developer_errors_say_what_and_how(tiny_policy: LocalPolicy, tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="2 observations but 1 actions"):
        tiny_policy.log_probs([SHORT, MEDIUM], [[1]])
    with pytest.raises(ValueError, match="lower max_new_tokens"):
        tiny_policy.generate([SHORT], SamplingParams(max_new_tokens=5000))
    with pytest.raises(ValueError, match="pass only one"):
        LocalPolicy.from_pretrained(tiny_model_dir, lora=LoraSettings(), adapter_path="x")
    tokenizer = tiny_policy.tokenizer
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="no eos token"):
        LocalPolicy(tiny_policy.model, tokenizer)
    with pytest.raises(ValueError):
        LoraSettings(rank=4)  # type: ignore[call-arg]
