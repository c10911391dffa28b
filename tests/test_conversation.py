"""Token-exact multi-turn prompts (`archer_agents.formats.conversation`).

The tokenizers are small byte-level BPEs trained here, carrying the special
tokens and the chat templates of the model families (ChatML as in Qwen and
SmolLM2, Llama 3's headers, and a template that drops earlier turns' thinking
as Qwen3's does). The central property: each prompt starts with the previous
prompt plus exactly the sampled ids, and still decodes to the template's
rendering of the whole conversation.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from tokenizers import decoders as tk_decoders
from transformers import PreTrainedTokenizerFast

from archer_agents.formats.conversation import ChatTemplate, ChatTemplateError, Conversation

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
    "<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# Like Qwen3's: an earlier assistant turn loses its <think>...</think> part once a user speaks.
DROPS_THINKING = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['role'] == 'assistant' and not loop.last %}"
    "{{ m['content'].split('</think>')[-1] }}{% else %}{{ m['content'] }}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    'Find the order of Jo. {"name": "get_order", "arguments": {"order_id": "#W1"}}',
    "Which email? jo@example.com Thanks! Done: order #W1 shipped.",
    'Is it "red"? Yes. No. The secret object is a penguin. <think>hmm</think>',
] * 20


def build_tokenizer(specials: list[str], template: str, bos: str | None = None):
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk_decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer)
    fast.add_special_tokens(
        {"eos_token": specials[1], "pad_token": specials[0], **({"bos_token": bos} if bos else {})}
    )
    fast.chat_template = template
    return fast


@pytest.fixture(scope="module")
def chatml():
    return build_tokenizer(["<|endoftext|>", "<|im_end|>", "<|im_start|>"], CHATML)


@pytest.fixture(scope="module")
def llama3():
    specials = ["<|finetune_right_pad_id|>", "<|eot_id|>", "<|begin_of_text|>",
                "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>"]  # fmt: skip
    return build_tokenizer(specials, LLAMA3, bos="<|begin_of_text|>")


def sample(tokenizer, text: str, stop: str | None) -> list[int]:
    """Ids a policy could have sampled for ``text``: encoded piece by piece, as a sampler
    emits them (not as the text re-encodes), then the stop token."""
    ids = [i for ch in text for i in tokenizer.encode(ch, add_special_tokens=False)]
    return ids + ([tokenizer.convert_tokens_to_ids(stop)] if stop else [])


def play(tokenizer, turns, *, stop: str | None, template: ChatTemplate | None = None):
    """Run a conversation; check every turn's prompt against the last and the rendering."""
    template = template or ChatTemplate(tokenizer)
    opening = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."}]
    conversation = Conversation(template, opening)
    for reply, came_back in turns:
        before = list(conversation.prompt_ids)
        sampled = sample(tokenizer, reply, stop)
        after = conversation.add_turn(sampled, reply, came_back)
        if conversation.exact:
            assert after[: len(before) + len(sampled)] == before + sampled
        rendered = template.render(conversation.messages, add_generation_prompt=True)
        assert tokenizer.decode(after, skip_special_tokens=False) == rendered
    return conversation


ADVERSARIAL = [
    # a sampled ' "' and '"}' that re-encode as merged tokens
    ('{"name": "get_order", "arguments": {"order_id": "#W1"}}', [{"role": "tool", "content": '{"status": "shipped"}'}]),
    ("Is it \"red\"? ", [{"role": "user", "content": ", no: it's blue."}]),  # punctuation first
    ("Ünïcödé ✓ 中文", [{"role": "user", "content": "émoji 🐧 and\ttabs\n\nnewlines"}]),
    ("trailing space ", [{"role": "tool", "content": ""}]),
    ("", [{"role": "user", "content": "(empty reply)"}]),
]  # fmt: skip


@pytest.mark.parametrize("family", ["chatml", "llama3"])
@pytest.mark.parametrize("stopped", [True, False])
def test_turns_append_the_exact_sampled_ids_and_decode_to_the_rendering(
    family: str, stopped: bool, request: pytest.FixtureRequest
) -> None:
    tokenizer = request.getfixturevalue(family)
    stop = tokenizer.eos_token if stopped else None
    turns = ADVERSARIAL
    if family == "llama3":  # its template trims contents: the prompt keeps what was said
        turns = [(r.strip(), [{**m, "content": m["content"].strip()} for m in b]) for r, b in turns]
    conversation = play(tokenizer, turns, stop=stop)
    assert conversation.exact
    # The same text re-encoded is a different sequence: appending is what keeps the ids.
    reply = ADVERSARIAL[0][0]
    assert sample(tokenizer, reply, None) != tokenizer.encode(reply, add_special_tokens=False)


def test_the_closing_after_the_stop_token_is_the_templates(chatml) -> None:
    template = ChatTemplate(chatml)
    assert template.turn_closing == "<|im_end|>\n"
    history = [{"role": "user", "content": "Hi."}]
    reply = {"role": "assistant", "content": "Hello."}
    after_stop = template.suffix_ids(
        history, reply, [{"role": "user", "content": "x"}], stopped=True
    )
    cut_off = template.suffix_ids(history, reply, [{"role": "user", "content": "x"}], stopped=False)
    assert chatml.decode(after_stop).startswith("\n<|im_start|>user")
    assert chatml.decode(cut_off).startswith("<|im_end|>\n<|im_start|>user")


def test_a_template_that_rewrites_history_falls_back_and_says_so(
    chatml, caplog: pytest.LogCaptureFixture
) -> None:
    template = ChatTemplate(chatml, chat_template=DROPS_THINKING)
    assert not template.prefix_preserving
    with caplog.at_level(logging.INFO, logger="archer_agents.formats.conversation"):
        conversation = play(
            chatml,
            [("<think>hmm</think>Which email?", [{"role": "user", "content": "jo@x.com"}])],
            stop="<|im_end|>",
            template=template,
        )
    assert not conversation.exact
    assert "not prefix-preserving" in caplog.text
    with pytest.raises(ChatTemplateError, match="not prefix-preserving"):
        template.suffix_ids(
            [{"role": "user", "content": "a"}],
            {"role": "assistant", "content": "<think>x</think>y"},
            [{"role": "user", "content": "b"}],
            stopped=True,
        )


def test_a_tokenizer_without_a_template_is_a_clear_error(chatml) -> None:
    bare = PreTrainedTokenizerFast(tokenizer_object=chatml.backend_tokenizer)
    with pytest.raises(ChatTemplateError, match="no chat template"):
        ChatTemplate(bare)


def test_tools_reach_a_template_that_renders_them(chatml) -> None:
    with_tools = (
        "{% if tools %}<|im_start|>system\n{% for t in tools %}{{ t['function']['name'] }};"
        "{% endfor %}<|im_end|>\n{% endif %}" + CHATML
    )
    spec = {"name": "get_order", "description": "An order.", "parameters": {"type": "object"}}
    template = ChatTemplate(chatml, [spec], chat_template=with_tools)
    text = template.render([{"role": "user", "content": "Hi."}], add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nget_order;<|im_end|>")
    assert template.prefix_preserving


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    turns=st.lists(
        st.tuples(
            st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
            st.sampled_from(["user", "tool"]),
            st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
        ),
        min_size=1,
        max_size=4,
    ),
    stopped=st.booleans(),
)
def test_any_text_stays_token_exact(chatml, turns, stopped: bool) -> None:
    play(
        chatml,
        [(reply, [{"role": role, "content": back}]) for reply, role, back in turns],
        stop="<|im_end|>" if stopped else None,
    )
