"""Simulated customers for SupportSim: a deterministic rule-based user and an optional LLM user.

Both follow `SupportUser`: ``start(goal)`` returns the opening message and
``reply(message)`` answers one agent message. A reply containing `STOP` ends
the conversation.

What `RuleBasedUser` understands (lower-cased agent message, keyword and regex
rules, checked in this order):

1. Progress on the current request. After the user said "yes" to a proposal,
   the agent's next message is taken as its report and the request is done. An
   information request is done when its answer (case and commas, dollar signs
   ignored) appears in the message. A request the policy forbids is done when
   the agent refuses ("cannot", "can't", "unable", "not able", "not possible",
   "not allowed", "not permitted", "won't be able"). Then the user states
   the next request, or says it is all and stops.
2. A proposal: a confirmation question ("confirm", "proceed", "go ahead",
   "shall I", "should I", "would you like me to", "do you want me to",
   "yes/no") about an action ("exchange", "return", "cancel", "modify/change/
   update/replace/swap" with item ids, "...address", "...payment"). The user
   says "Yes" only when the action is the one it wants (a forbidden request
   counts: the user wants it) and the details match: exactly the right order
   id (#W and seven digits); the cancellation reason; the set of ten-digit
   item ids (old, plus new for an exchange or item change); the payment method
   id (such as gift_card_1234567; the user does not read card brands); the new
   street address and zip. Otherwise it says no and restates what it wants.
3. Questions, answered only when asked (the message has a "?" or "please",
   "could you", "can you", "may I", "tell me", "provide"): e-mail, name, zip
   code, user id (it never knows it), order id (or, if it does not remember
   it, a description of the order), which items (with the wished options for
   an exchange or change), reason, payment method, address, "how can I help",
   "anything else". What the goal says it does not know, it says it does not
   remember.
4. Anything else gets a restatement of the current request.

Turns that reveal nothing new count as idle; after `RuleBasedUser.max_idle`
idle turns in a row the user gives up and stops.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Protocol

from archer_agents.environments.support.tasks import (
    Intent,
    UserGoal,
    describe_options,
    format_address,
    mentions,
)

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

STOP = "###STOP###"
"""A user message containing this ends the conversation."""


class SupportUser(Protocol):
    """A simulated customer with a hidden goal."""

    def start(self, goal: UserGoal) -> str:
        """Begin a conversation; return the user's opening message."""
        ...

    def reply(self, message: str) -> str:
        """The user's answer to one agent message."""
        ...


_AFFIRMATIVE = re.compile(r"^\W*(yes|yeah|yep|sure|ok(ay)?|i confirm|confirmed|correct)\b")


def is_affirmative(text: str) -> bool:
    """Does a user message start with an explicit yes?"""
    return bool(_AFFIRMATIVE.search(text.lower()))


_REFUSAL = re.compile(
    r"\b(cannot|can't|can not|unable to|not able to|not possible|not allowed|not permitted"
    r"|won't be able)\b"
)
_CONFIRM = re.compile(
    r"\b(confirm|proceed|go ahead|shall i|should i|would you like me to|do you want me to"
    r"|yes/no|yes or no)\b"
)
_ASKING = re.compile(r"\?|\b(please|could you|can you|may i|tell me|provide)\b")
_CHANGE = re.compile(r"\b(modify|change|update|replace|swap)")
_ORDER_ID = re.compile(r"#?\bw(\d{7})\b")
_ITEM_ID = re.compile(r"\b\d{10}\b")
_PAYMENT_ID = re.compile(r"\b(?:credit_card|gift_card|paypal)_\d{7}\b")

# What a question asks for, in the order answers are given.
_QUESTIONS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("email", re.compile(r"e-?mail")),
    ("name", re.compile(r"\bname\b")),
    ("zip", re.compile(r"\bzip\b|postal code|post code|postcode")),
    ("user_id", re.compile(r"\buser ?id\b")),
    ("order_id", re.compile(r"\border (id|number|#)|\b(which|what) order\b")),
    ("items", re.compile(r"\b(which|what) (items?|products?|options?)\b")),
    ("reason", re.compile(r"\breason\b|\bwhy\b")),
    ("payment", re.compile(r"payment method|\bpay\b|\brefund|which card")),
    ("address", re.compile(r"(?<!email )(?<!e-mail )\baddress\b")),
    ("request", re.compile(r"how (can|may) i (help|assist)|what can i (do|help)|your question")),
    ("anything_else", re.compile(r"anything else")),
)


def proposal_kind(message: str) -> str | None:
    """The action a confirmation question proposes, or None if it is not one."""
    text = message.lower()
    if not _CONFIRM.search(text):
        return None
    if "exchang" in text:
        return "exchange"
    if re.search(r"\breturn", text):
        return "return"
    if re.search(r"\bcancel", text):
        return "cancel"
    if _CHANGE.search(text):
        if _ITEM_ID.search(text):
            return "modify_items"
        if "address" in text:
            return "modify_address"
        if "payment" in text:
            return "modify_payment"
    return None


def proposal_matches(intent: Intent, message: str) -> bool:
    """Does a proposal carry exactly the details of ``intent``?"""
    text = message.lower()
    kind = proposal_kind(message)
    wanted_kind = intent.forbidden if intent.kind == "refuse" else intent.kind
    accepted = {wanted_kind, "exchange"} if wanted_kind == "modify_items" else {wanted_kind}
    if kind not in accepted:
        return False
    orders = {f"#W{digits}" for digits in _ORDER_ID.findall(text)}
    if orders != {intent.order_id}:
        return False
    if intent.kind == "refuse":
        return True
    items = set(_ITEM_ID.findall(text))
    payments = set(_PAYMENT_ID.findall(text))
    if intent.kind == "cancel":
        return intent.reason is not None and intent.reason in text
    if intent.kind == "return":
        return items == {w.item_id for w in intent.items} and payments == {intent.payment_method_id}
    if intent.kind in ("exchange", "modify_items"):
        wanted = {w.item_id for w in intent.items} | {w.new_item_id for w in intent.items}
        return items == wanted and payments == {intent.payment_method_id}
    if intent.kind == "modify_address":
        address = intent.new_address
        return address is not None and (address.address1.lower() in text and address.zip in text)
    if intent.kind == "modify_payment":
        return intent.payment_method_id in payments
    return False


class RuleBasedUser:
    """A deterministic customer driven by keyword and regex rules (see the module docstring)."""

    max_idle: int = 6
    """Idle turns in a row after which the user gives up."""

    def __init__(self) -> None:
        self._goal: UserGoal | None = None
        self._index = 0
        self._confirmed = False
        self._idle = 0
        self._revealed: set[tuple[int, str]] = set()
        self.done = False

    @property
    def goal(self) -> UserGoal:
        if self._goal is None:
            raise RuntimeError("call start(goal) before reply()")
        return self._goal

    @property
    def intent(self) -> Intent:
        return self.goal.intents[self._index]

    def start(self, goal: UserGoal) -> str:
        self._goal = goal
        self._index = 0
        self._confirmed = False
        self._idle = 0
        self._revealed = set()
        self.done = False
        return f"Hi! {goal.intents[0].request}"

    def reply(self, message: str) -> str:
        if self.done:
            return f"I already said goodbye. {STOP}"
        text = message.lower()
        intent = self.intent
        if self._confirmed:
            return self._advance("Great, thank you.")
        if intent.answer is not None and mentions(message, intent.answer):
            return self._advance("Thank you, that's what I wanted to know.")
        if intent.kind == "refuse" and _REFUSAL.search(text):
            return self._advance("I see, that's a pity.")
        if proposal_kind(message) is not None:
            if proposal_matches(intent, message):
                self._confirmed = True
                self._idle = 0
                return "Yes, please go ahead."
            return self._idle_reply(f"No, that's not what I want. {self._details(intent)}")
        asked = [name for name, pattern in _QUESTIONS if pattern.search(text)]
        if asked and _ASKING.search(text):
            new = [name for name in asked if (self._index, name) not in self._revealed]
            self._revealed.update((self._index, name) for name in asked)
            answer = " ".join(self._answer(name, intent) for name in asked)
            if new:
                self._idle = 0
                return answer
            return self._idle_reply(answer)
        if _REFUSAL.search(text):
            return self._idle_reply(f"But I really need this. {intent.request}")
        return self._idle_reply(f"Sorry, I don't follow. {intent.request}")

    # -- helpers ----------------------------------------------------------------
    def _idle_reply(self, text: str) -> str:
        self._idle += 1
        if self._idle >= self.max_idle:
            self.done = True
            return f"This is going nowhere; I'll try again later. {STOP}"
        return text

    def _advance(self, prefix: str) -> str:
        self._index += 1
        self._confirmed = False
        self._idle = 0
        if self._index >= len(self.goal.intents):
            self.done = True
            return f"{prefix} That's all I needed. {STOP}"
        return f"{prefix} I also have another request: {self.intent.request}"

    def _answer(self, name: str, intent: Intent) -> str:
        goal = self.goal
        if name == "email":
            if goal.knows_email:
                return f"My email is {goal.email}."
            return "Sorry, I don't remember my email address."
        if name == "name":
            return f"My name is {goal.first_name} {goal.last_name}."
        if name == "zip":
            return f"My zip code is {goal.zip}."
        if name == "user_id":
            return "I don't know my user id."
        if name == "order_id":
            if intent.order_id is None:
                return "It's not about one of my orders."
            if goal.knows_order_ids or not intent.order_hint:
                return f"The order id is {intent.order_id}."
            return f"I don't remember the order id, but it's {intent.order_hint}."
        if name == "items":
            return self._items(intent)
        if name == "reason":
            if intent.reason is not None:
                return f"The reason is: {intent.reason}."
            return "I'd rather not say; I just want this done."
        if name == "payment":
            if intent.payment_phrase is not None:
                return f"Please use {intent.payment_phrase}."
            return "The payment is fine as it is."
        if name == "address":
            if intent.new_address is not None:
                return f"The new address is {format_address(intent.new_address)}."
            return "The address is fine as it is."
        return intent.request  # "request" and "anything_else": restate what is wanted

    @staticmethod
    def _items(intent: Intent) -> str:
        if not intent.items:
            return "It's about the whole order." if intent.order_id else "No particular item."
        if intent.kind in ("exchange", "modify_items"):
            parts = []
            for wish in intent.items:
                part = f"I want {wish.description} to become the one with "
                part += describe_options(wish.wanted[0]) + "."
                if len(wish.wanted) > 1:
                    part += (
                        " If that is not available, the one with "
                        f"{describe_options(wish.wanted[1])} is fine."
                    )
                parts.append(part)
            return " ".join(parts)
        return "The items are " + " and ".join(w.description for w in intent.items) + "."

    def _details(self, intent: Intent) -> str:
        """Everything about the current request, said when a proposal was wrong."""
        parts = [intent.request]
        if intent.order_id is not None:
            parts.append(self._answer("order_id", intent))
        if intent.items:
            parts.append(self._items(intent))
        if intent.reason is not None:
            parts.append(f"The reason is: {intent.reason}.")
        if intent.payment_phrase is not None:
            parts.append(f"Please use {intent.payment_phrase}.")
        if intent.new_address is not None:
            parts.append(f"The new address is {format_address(intent.new_address)}.")
        return " ".join(parts)


_LLM_USER_PROMPT = """\
You are a customer talking to an online store's support agent. Your goal:
{instruction}

Rules:
- Start with your first request in one short sentence, without ids or details.
- Give a detail (email, name, zip code, order id, items, payment method,
  address) only when the agent asks for it. Never invent facts outside your
  goal; if you do not know something, say you do not remember it.
- Say "yes" only to a proposal that matches your goal exactly; otherwise say
  what is wrong.
- When every request is handled, or the conversation goes nowhere, end your
  message with {stop}.
- Write one short message per turn, as the customer only."""


class LLMUser:
    """A simulated customer played by any LangChain chat model (optional; not deterministic).

    The chat model sees the goal in its system prompt; the agent's messages
    come as human messages and its own replies as AI messages.
    """

    def __init__(self, model: BaseChatModel, *, prompt: str = _LLM_USER_PROMPT) -> None:
        self.model = model
        self.prompt = prompt
        self._messages: list[Any] = []

    def start(self, goal: UserGoal) -> str:
        from langchain_core.messages import HumanMessage, SystemMessage

        system = self.prompt.format(instruction=goal.instruction(), stop=STOP)
        self._messages = [SystemMessage(system), HumanMessage("Hi! How can I help you today?")]
        return self._generate()

    def reply(self, message: str) -> str:
        from langchain_core.messages import HumanMessage

        if not self._messages:
            raise RuntimeError("call start(goal) before reply()")
        self._messages.append(HumanMessage(message))
        return self._generate()

    def _generate(self) -> str:
        from langchain_core.messages import AIMessage

        result = self.model.invoke(self._messages)
        content = result.content if isinstance(result.content, str) else str(result.content)
        self._messages.append(AIMessage(content))
        return content.strip()
