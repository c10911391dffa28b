"""Token-exact multi-turn prompts from a model's own chat template.

An episode is a conversation (system, user, assistant turns, tool results or
the customer's replies). Its first prompt is the model's chat template applied
to the opening messages with the generation prompt, tokenised once. Every later
prompt is built by appending, never by tokenising the history again:

    prompt[t + 1] = prompt[t] + sampled_ids[t] + suffix_ids(what came back)

The sampled ids are the policy's own, stop token included, so the ids a
trainer scores are exactly the ids that were sampled, and the ids the next turn
conditions on are exactly those too. Re-tokenising sampled text can give other
ids (a BPE merge across the boundary, whitespace after the end-of-turn token);
appending cannot.

The suffix is tokenised on its own: the conversation is rendered with and
without the new messages and the difference is taken, after the part of the
assistant turn's closing (``<|im_end|>\\n`` in ChatML) that the sampled stop
token did not already say. A reply cut off before its stop token gets the
whole closing.

A template that rewrites an assistant's content (Llama 3's trims it) renders
the history slightly otherwise than the ids say; the ids win, because they are
what the model said and what it will be trained on.

This is only right for a template that is *prefix-preserving*: rendering more
messages only appends text. `ChatTemplate` checks that once, on a probe
conversation, when it is built. Where it fails (Qwen3's template drops the
thinking of earlier turns, for instance, and the project's text format closes
a reply with a newline, not the stop token the model sampled), `Conversation`
falls back to rendering and tokenising the whole conversation each turn and
logs it: the sampled ids of each turn are still the ones scored, only the
history is re-tokenised.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

Message = Mapping[str, Any]
"""A chat message as chat templates take it: ``{"role": ..., "content": ...}`` and more."""

_PLACEHOLDER = "\x00archer-turn\x00"

_PROBE: tuple[dict[str, Any], ...] = (
    {"role": "system", "content": "You are a careful agent."},
    {"role": "user", "content": "Find the order of Jo."},
    {"role": "assistant", "content": "<think>The email first.</think>Which email?"},
    {"role": "user", "content": "jo@example.com"},
    {"role": "assistant", "content": "Done: order #W1."},
    {"role": "user", "content": "Thanks!"},
)
"""A conversation every template can render, for the prefix-preservation check; its
thinking part catches templates that drop earlier turns' reasoning (as Qwen3's does)."""


class ChatTemplateError(ValueError):
    """The tokenizer cannot render a conversation (no chat template, or it raised)."""


class ChatTemplate:
    """A tokenizer's chat template, with the tools of an environment, rendered for a policy.

    Args:
        tokenizer: the policy's tokenizer; its ``chat_template`` is used unless
            ``chat_template`` is given.
        tools: OpenAI-style tool specs (``{"name", "description", "parameters"}``
            or ``{"type": "function", "function": {...}}``), rendered by the
            template where it supports tools.
        chat_template: a Jinja template to use instead of the tokenizer's.
        template_kwargs: more variables for the template (as vLLM's
            ``chat_template_kwargs``): an environment's `TextEnv.chat_template_kwargs`.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        chat_template: str | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.tools = [_as_function(tool) for tool in tools] if tools else None
        self.template_kwargs = dict(template_kwargs or {})
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        if not self.chat_template:
            raise ChatTemplateError(
                "the tokenizer has no chat template; give it one (tokenizer.chat_template = ...) "
                "or pass chat_template="
            )
        self._specials = sorted(
            {str(t) for t in tokenizer.all_special_tokens}
            | {str(t) for t in getattr(tokenizer, "added_tokens_encoder", {})},
            key=len,
            reverse=True,
        )
        self.turn_closing = self._turn_closing()
        """What the template writes after an assistant message's content, e.g. ``<|im_end|>\\n``."""
        self.prefix_preserving = self._check_prefix_preserving()
        """Whether rendering more messages only ever appends text (checked on a probe)."""

    # -- rendering ------------------------------------------------------------------
    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool) -> str:
        """The template's text for ``messages`` (and the tools)."""
        try:
            text = self.tokenizer.apply_chat_template(
                [dict(m) for m in messages],
                tools=cast(Any, self.tools),
                chat_template=self.chat_template,
                add_generation_prompt=add_generation_prompt,
                tokenize=False,
                **self.template_kwargs,
            )
        except Exception as error:  # Jinja raises whatever the template author chose
            raise ChatTemplateError(f"the chat template could not render: {error}") from error
        if not isinstance(text, str):
            raise ChatTemplateError("the chat template rendered no text")
        return text

    def encode(self, text: str) -> list[int]:
        """Ids of rendered text; the template writes its own special tokens (bos included)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """The generation prompt's ids for ``messages``, rendered whole."""
        return self.encode(self.render(messages, add_generation_prompt=True))

    def reply_ids(self, text: str) -> list[int]:
        """The ids a model would sample to say ``text`` and end its turn.

        For replies that were not sampled (a scripted expert's, for behaviour
        cloning): the text's tokens, then the stop token that opens the turn's
        closing (``<|im_end|>`` in ChatML, ``<|eot_id|>`` in Llama 3), else eos.
        """
        ids = self.encode(text)
        for special in self._specials:
            if self.turn_closing.startswith(special):
                return [*ids, int(cast(int, self.tokenizer.convert_tokens_to_ids(special)))]
        if self.tokenizer.eos_token_id is None:
            raise ChatTemplateError("the tokenizer has no eos token to end a reply with")
        return [*ids, int(self.tokenizer.eos_token_id)]

    def suffix_ids(
        self,
        history: Sequence[Message],
        reply: Message,
        new_messages: Sequence[Message],
        *,
        stopped: bool,
    ) -> list[int]:
        """The ids that follow a sampled reply: the rest of its turn's closing, then
        ``new_messages`` and the next generation prompt.

        ``history`` ends where the reply was sampled; ``stopped`` says whether the
        sampled ids ended with a stop token (which then said the closing's first
        special token).
        """
        before = self.render([*history, reply], add_generation_prompt=False)
        after = self.render([*history, reply, *new_messages], add_generation_prompt=True)
        if not after.startswith(before):
            raise ChatTemplateError(
                "the chat template is not prefix-preserving for this conversation; "
                "use Conversation, which falls back to rendering each turn whole"
            )
        return self.encode(self._closing_rest(stopped) + after[len(before) :])

    # -- start-up checks --------------------------------------------------------------
    def _turn_closing(self) -> str:
        """The text between an assistant message's content and the next message.

        Empty for a template that does not show the assistant's content at all (the
        text format's page layout shows only the latest page): it renders whole.
        """
        opening = [{"role": "user", "content": "Hello."}]
        text = self.render(
            [*opening, {"role": "assistant", "content": _PLACEHOLDER}], add_generation_prompt=False
        )
        at = text.rfind(_PLACEHOLDER)
        return "" if at < 0 else text[at + len(_PLACEHOLDER) :]

    def _closing_rest(self, stopped: bool) -> str:
        """The closing, less the special token a sampled stop token already said."""
        if not stopped:
            return self.turn_closing
        for special in self._specials:
            if special and self.turn_closing.startswith(special):
                return self.turn_closing[len(special) :]
        return self.turn_closing

    def _check_prefix_preserving(self) -> bool:
        """Whether each longer render of the probe starts with the shorter one, and an
        assistant turn closes with a special token (the one a sampled reply ends with).

        A template whose history never shows the stop token (the project's text format
        puts a newline after a reply, where the model sampled eos) would see that token
        appended mid-history, which it never renders: such a template renders whole.
        """
        if not any(special and self.turn_closing.startswith(special) for special in self._specials):
            return False
        # With and without a system message; a conversation opens with a user message at
        # the latest (some templates put the tools there and cannot render without one).
        for probe in (_PROBE, _PROBE[1:]):
            opening = 2 if probe[0]["role"] == "system" else 1
            try:
                for end in range(opening + 1, len(probe) + 1):
                    shorter = self.render(probe[: end - 1], add_generation_prompt=False)
                    longer = self.render(probe[:end], add_generation_prompt=False)
                    if not longer.startswith(shorter):
                        return False
                    if probe[end - 1]["role"] == "assistant":
                        # The reply's ids are appended right after the generation prompt,
                        # so the template must write the content right there (the
                        # project's text format puts "Action: " first: rendered whole).
                        prompt = self.render(probe[: end - 1], add_generation_prompt=True)
                        if not longer.startswith(prompt + probe[end - 1]["content"]):
                            return False
            except ChatTemplateError:
                return False
        return True


class Conversation:
    """One episode's messages and its current prompt ids, extended turn by turn.

    ``prompt_ids`` is the prompt for the next reply. `add_turn` takes the
    sampled ids and the reply's text, and what came back, and returns the next
    prompt: appended token-exactly where the template is prefix-preserving,
    rendered whole otherwise.
    """

    def __init__(
        self,
        template: ChatTemplate,
        messages: Sequence[Message],
        *,
        stop_ids: Sequence[int] = (),
    ) -> None:
        self.template = template
        self.messages: list[Message] = list(messages)
        self.stop_ids = frozenset(stop_ids) or _stop_ids(template.tokenizer)
        self.prompt_ids: list[int] = template.prompt_ids(self.messages)
        self.exact = template.prefix_preserving
        if not self.exact:
            logger.info(
                "the chat template is not prefix-preserving; each turn's prompt is rendered "
                "whole (the sampled ids are still the ones scored)"
            )

    def add_turn(
        self, sampled_ids: Sequence[int], reply_text: str, new_messages: Sequence[Message]
    ) -> list[int]:
        """Record a sampled reply and what came back; return the next prompt's ids."""
        reply = {"role": "assistant", "content": reply_text}
        history = self.messages
        self.messages = [*history, reply, *new_messages]
        if self.exact:
            stopped = bool(sampled_ids) and sampled_ids[-1] in self.stop_ids
            suffix = self.template.suffix_ids(history, reply, new_messages, stopped=stopped)
            self.prompt_ids = [*self.prompt_ids, *sampled_ids, *suffix]
        else:
            self.prompt_ids = self.template.prompt_ids(self.messages)
        return list(self.prompt_ids)


def _stop_ids(tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """The ids that end a reply: eos, and the end-of-turn tokens templates close turns with."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    for name in ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>"):
        if name in vocab:
            ids.add(vocab[name])
    return frozenset(int(i) for i in ids)


def _as_function(tool: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI tool entry ``{"type": "function", "function": {...}}`` for a spec."""
    if tool.get("type") == "function" and "function" in tool:
        return dict(tool)
    return {"type": "function", "function": dict(tool)}
