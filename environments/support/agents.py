"""Scripted SupportSim agents: expert, weak and random.

The expert reads the hidden task at reset and plays the policy through:
ask for identity, authenticate, look the user up, then for each request ask
for the order id, look the order up, ask what is needed, propose the action
with its details, wait for the "yes", call the write tool and report; it says
every required answer in a ``respond`` and refuses what the policy forbids.

The weak agent plays the same script with per-request mistakes drawn from its
seed: it skips the confirmation, picks a wrong item or variant, a wrong
payment method or cancellation reason, forgets to say the answer, or
complies with a forbidden request. The random agent calls random tools with
ids it has seen in the conversation, or says random support phrases.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from archer_agents.environments.support.tasks import (
    GoldAction,
    Intent,
    SupportTask,
    describe_options,
    format_address,
)
from archer_agents.formats.prompts import render_tool_call
from archer_agents.tools.support.models import CANCEL_REASONS, Address, Database
from archer_agents.tools.support.tools import RESPOND, TOOL_SPECS

if TYPE_CHECKING:
    from archer_agents.environments.support.env import SupportSimEnv

ANYTHING_ELSE = "Is there anything else I can help you with?"
GOODBYE = "Thank you for contacting us. Have a great day!"

_SWAP_FLAWS = ("skip_confirmation", "wrong_payment", "wrong_item")
WRITE_FLAWS: dict[str, tuple[str, ...]] = {
    "cancel": ("skip_confirmation", "wrong_reason"),
    "return": _SWAP_FLAWS,
    "exchange": _SWAP_FLAWS,
    "modify_items": _SWAP_FLAWS,
    "modify_address": ("skip_confirmation",),
    "modify_payment": ("skip_confirmation", "wrong_payment"),
}
"""The weak agent's possible mistakes on a write request, by request kind."""


def _call(name: str, **arguments: Any) -> str:
    return render_tool_call(name, arguments)


def _say(message: str) -> str:
    return _call(RESPOND, message=message)


class _Script:
    """Builds the utterances of one episode from the task, with optional flaws."""

    def __init__(
        self, task: SupportTask, db: Database, rng: random.Random, flaw_rate: float
    ) -> None:
        self.task = task
        self.db = db
        self.rng = rng
        self.flaw_rate = flaw_rate

    def _flaw(self, *candidates: str) -> str | None:
        if self.flaw_rate <= 0.0 or self.rng.random() >= self.flaw_rate:
            return None
        return self.rng.choice(candidates)

    def build(self) -> list[str]:
        goal = self.task.goal
        steps = [
            _say(
                "Hello! I can help with that. First, I need to verify your identity. "
                "Could you please tell me your email address?"
            )
        ]
        if goal.knows_email:
            steps.append(_call("find_user_id_by_email", email=goal.email))
        else:
            steps.append(
                _say(
                    "No problem. Could you please tell me your first name, last name and zip code?"
                )
            )
            steps.append(
                _call(
                    "find_user_id_by_name_zip",
                    first_name=goal.first_name,
                    last_name=goal.last_name,
                    zip=goal.zip,
                )
            )
        steps.append(_call("get_user_details", user_id=goal.user_id))
        gold = iter(self.task.gold_actions)
        for index, intent in enumerate(goal.intents):
            intro = "Thank you, you are verified." if index == 0 else "Sure."
            steps.extend(self._intent(intent, intro, gold))
        return steps

    def _intent(self, intent: Intent, intro: str, gold: Iterator[GoldAction]) -> list[str]:
        if intent.kind == "info" and intent.order_id is None:
            return self._product_question(intent, intro)
        assert intent.order_id is not None
        steps = [
            _say(f"{intro} What is the order id of the order you are asking about?"),
            _call("get_order_details", order_id=intent.order_id),
        ]
        if intent.kind == "info":
            return [*steps, self._order_answer(intent)]
        if intent.kind == "refuse":
            return steps + self._refusal(intent)
        action = next(gold)
        flaw = self._flaw(*WRITE_FLAWS[intent.kind])
        steps.append(_say(self._question(intent.kind)))
        if intent.kind in ("exchange", "modify_items"):
            for product_id in self._products(intent):
                steps.append(_call("get_product_details", product_id=product_id))
        arguments = self._spoil(intent, action.arguments, flaw)
        if flaw != "skip_confirmation":
            steps.append(_say(self._proposal(intent.kind, arguments)))
        steps.append(_call(action.name, **arguments))
        steps.append(_say(f"Done: {self._summary(intent.kind, intent.order_id)}. {ANYTHING_ELSE}"))
        return steps

    # -- questions and answers ------------------------------------------------------
    def _product_question(self, intent: Intent, intro: str) -> list[str]:
        found = self.db.find_variant(intent.items[0].item_id)
        assert found is not None
        product, variant = found
        answer = f"${variant.price:.2f}"
        if self._flaw("forget_output"):
            answer = "listed on its product page"
        stock = "available" if variant.available else "currently out of stock"
        return [
            _call("list_all_product_types"),
            _call("get_product_details", product_id=product.product_id),
            _say(
                f"{intro} The {product.name} with {describe_options(variant.options)} "
                f"(item {variant.item_id}) costs {answer} and is {stock}. {ANYTHING_ELSE}"
            ),
        ]

    def _order_answer(self, intent: Intent) -> str:
        assert intent.answer is not None and intent.question is not None
        forget = self._flaw("forget_output") is not None
        if "tracking" in intent.question:
            answer = "in the shipping e-mail" if forget else intent.answer
            return _say(
                f"The tracking number of order {intent.order_id} is {answer}. {ANYTHING_ELSE}"
            )
        total = "what the receipt says" if forget else f"${intent.answer}"
        return _say(f"You paid {total} in total for order {intent.order_id}. {ANYTHING_ELSE}")

    def _refusal(self, intent: Intent) -> list[str]:
        assert intent.order_id is not None
        order = self.db.orders[intent.order_id]
        verb = "cancel" if intent.forbidden == "cancel" else "return items of"
        if order.user_id != self.task.goal.user_id:
            why = "it is not an order of your account"
        elif intent.forbidden == "cancel":
            why = "it has already been processed and shipped"
        else:
            why = "it has not been delivered yet"
        if self._flaw("comply") is None:
            return [
                _say(
                    f"I'm sorry, but I cannot {verb} order {intent.order_id} because {why}. "
                    + ANYTHING_ELSE
                )
            ]
        if intent.forbidden == "cancel":
            name = "cancel_pending_order"
            arguments: dict[str, Any] = {"order_id": intent.order_id, "reason": intent.reason}
        else:
            name = "return_delivered_order_items"
            arguments = {
                "order_id": intent.order_id,
                "item_ids": [w.item_id for w in intent.items],
                "payment_method_id": intent.payment_method_id,
            }
        kind = intent.forbidden or "cancel"
        return [
            _say(self._question(kind)),
            _say(self._proposal(kind, arguments)),
            _call(name, **arguments),
            _say(f"Done. {ANYTHING_ELSE}"),
        ]

    @staticmethod
    def _question(kind: str) -> str:
        if kind == "cancel":
            return (
                "What is the reason for the cancellation: 'no longer needed' or "
                "'ordered by mistake'?"
            )
        if kind == "return":
            return (
                "Which items would you like to return, and to which payment method should the "
                "refund go?"
            )
        if kind in ("exchange", "modify_items"):
            verb = "exchange" if kind == "exchange" else "change"
            return (
                f"Which items would you like to {verb}, which options would you like instead, "
                "and which payment method should cover any price difference?"
            )
        if kind == "modify_address":
            return "What is the new shipping address?"
        return "Which payment method would you like to use instead?"

    def _products(self, intent: Intent) -> list[str]:
        assert intent.order_id is not None
        order = self.db.orders[intent.order_id]
        wanted = {w.item_id for w in intent.items}
        return sorted({item.product_id for item in order.items if item.item_id in wanted})

    @staticmethod
    def _proposal(kind: str, arguments: dict[str, Any]) -> str:
        order = arguments["order_id"]
        ask = "Do you confirm (yes/no)?"
        if kind == "cancel":
            return (
                f"To confirm: I will cancel order {order} with the reason "
                f"'{arguments['reason']}'; the payment goes back to how you paid. {ask}"
            )
        if kind == "return":
            items = ", ".join(arguments["item_ids"])
            return (
                f"To confirm: I will request a return of items {items} from order {order}, "
                f"with the refund going to {arguments['payment_method_id']}. {ask}"
            )
        if kind in ("exchange", "modify_items"):
            pairs = ", ".join(
                f"item {old} for item {new}"
                for old, new in zip(arguments["item_ids"], arguments["new_item_ids"], strict=True)
            )
            verb = "exchange" if kind == "exchange" else "modify the pending order by swapping"
            return (
                f"To confirm: I will {verb} {pairs} in order {order}; any price difference is "
                f"settled with {arguments['payment_method_id']}. {ask}"
            )
        if kind == "modify_address":
            address = format_address(Address(**{k: arguments[k] for k in Address.model_fields}))
            return (
                f"To confirm: I will change the shipping address of order {order} to "
                f"{address}. {ask}"
            )
        return (
            f"To confirm: I will change the payment method of order {order} to "
            f"{arguments['payment_method_id']}; the current payment is refunded. {ask}"
        )

    @staticmethod
    def _summary(kind: str, order: str | None) -> str:
        return {
            "cancel": f"order {order} is cancelled",
            "return": f"the return for order {order} is requested",
            "exchange": f"the exchange for order {order} is requested",
            "modify_items": f"the items of order {order} are updated",
            "modify_address": f"the address of order {order} is updated",
            "modify_payment": f"the payment method of order {order} is updated",
        }[kind]

    # -- mistakes ----------------------------------------------------------------------
    def _spoil(self, intent: Intent, arguments: dict[str, Any], flaw: str | None) -> dict[str, Any]:
        """The gold arguments with the weak agent's mistake, if any."""
        arguments = dict(arguments)
        assert intent.order_id is not None
        order = self.db.orders[intent.order_id]
        if flaw == "wrong_reason":
            arguments["reason"] = next(r for r in CANCEL_REASONS if r != arguments["reason"])
        elif flaw == "wrong_payment":
            user = self.db.users[order.user_id]
            others = [m for m in user.payment_methods if m != arguments["payment_method_id"]]
            if others:
                arguments["payment_method_id"] = self.rng.choice(others)
        elif flaw == "wrong_item" and intent.kind == "return":
            others = [i.item_id for i in order.items if i.item_id not in arguments["item_ids"]]
            if others:
                arguments["item_ids"] = [*arguments["item_ids"][:-1], self.rng.choice(others)]
            elif len(arguments["item_ids"]) > 1:
                arguments["item_ids"] = arguments["item_ids"][:-1]
        elif flaw == "wrong_item":
            old = arguments["item_ids"][0]
            product = self.db.products[next(i.product_id for i in order.items if i.item_id == old)]
            others = [
                v.item_id
                for v in product.variants.values()
                if v.available and v.item_id not in (old, arguments["new_item_ids"][0])
            ]
            if others:
                arguments["new_item_ids"] = [self.rng.choice(others)]
        return arguments


class SupportScriptedAgent:
    """The expert (``flaw_rate=0``) or the weak agent (``flaw_rate>0``)."""

    def __init__(self, env: SupportSimEnv, *, flaw_rate: float = 0.0, seed: int | None = None):
        self.env = env
        self.flaw_rate = flaw_rate
        self.rng = random.Random(seed)
        self._steps: list[str] = []

    def reset(self, observation: str, info: dict[str, Any]) -> None:
        task = self.env.current_task
        self._steps = _Script(task, self.env.db, self.rng, self.flaw_rate).build()
        self._steps.reverse()

    def act(self, observation: str) -> str:
        return self._steps.pop() if self._steps else _say(GOODBYE)


_SEEN = {
    "order_id": re.compile(r"#W\d{7}"),
    "item_id": re.compile(r"\b\d{10}\b"),
    "payment_method_id": re.compile(r"\b(?:credit_card|gift_card|paypal)_\d{7}\b"),
    "user_id": re.compile(r"\b[a-z]+_[a-z]+_\d{4}\b"),
    "email": re.compile(r"\b[\w.]+@example\.com\b"),
    "zip": re.compile(r"\b\d{5}\b"),
}
_PHRASES = (
    "Hello! How can I help you today?",
    "Could you please tell me your email address?",
    "Could you please tell me your name and zip code?",
    "What is the order id?",
    "Which items would you like to return?",
    "Do you confirm (yes/no)?",
    "I'm sorry, I cannot help with that.",
    ANYTHING_ELSE,
    GOODBYE,
)


class SupportRandomAgent:
    """Random tools with random arguments drawn from ids seen so far, or a random phrase."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)

    def reset(self, observation: str, info: dict[str, Any]) -> None:
        return None

    def act(self, observation: str) -> str:
        roll = self.rng.random()
        if roll < 0.05:
            return self.rng.choice(("hello?", "cancel_pending_order(", '{"name": 3}'))
        if roll < 0.4:
            return _say(self.rng.choice(_PHRASES))
        name, schema, _ = self.rng.choice(TOOL_SPECS)
        arguments = {field: self._value(field, observation) for field in schema.model_fields}
        return json.dumps({"name": name, "arguments": arguments})

    def _value(self, field: str, observation: str) -> Any:
        key = "item_id" if field in ("item_ids", "new_item_ids") else field
        pattern = _SEEN.get(key)
        seen = pattern.findall(observation) if pattern is not None else []
        if key == "reason":
            value: Any = self.rng.choice((*CANCEL_REASONS, "changed my mind"))
        elif seen and self.rng.random() < 0.9:
            value = self.rng.choice(seen)
        else:
            value = self.rng.choice(("John", "Doe", "12345", "#W0000000", "1234567890", "x"))
        return [value] if field in ("item_ids", "new_item_ids") else value
